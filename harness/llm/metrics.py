"""Token-level metrics of one step of streamed generations (pure numpy, no I/O).

Per request, over the measured window's successes: time to first token (from the
*intended* send time, so open-loop queueing counts, as for every other latency here),
inter-token latencies (gaps between content chunks), time per output token
((end - first token) / (output tokens - 1)), and tokens from the server's usage. Goodput
is the rate of generations that met both the TTFT and the TPOT limits of the SLO.
Percentiles follow the harness's minimum-sample rule: NaN when too few samples lie beyond.
The columns these figures fill are declared by the generate workload
(harness/workloads/generate.py).
"""

from __future__ import annotations

import math

import numpy as np

from harness.confidence import enough_samples
from harness.load.records import StepRecords


def _pct(values: np.ndarray, q: float) -> float:
    if not len(values) or not enough_samples(len(values), q):
        return math.nan
    return float(np.percentile(values, q))


def llm_summary(
    rec: StepRecords,
    duration_s: float,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
) -> dict[str, float]:
    s = rec.stream
    if s is None:
        return {}
    ok = rec.measured() & (rec.error == 0) & (s.first_ns >= 0)
    ttft = (s.first_ns[ok] - rec.intended_ns[ok]) / 1e6
    out = s.output_tokens[ok].astype(np.float64)
    prompt = s.prompt_tokens[ok].astype(np.float64)
    decode_ms = (rec.end_ns[ok] - s.first_ns[ok]) / 1e6
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out > 1, decode_ms / (out - 1), np.nan)
    tpot_valid = tpot[~np.isnan(tpot)]
    starts, ends = s.itl_offsets[:-1][ok], s.itl_offsets[1:][ok]
    itl = (
        np.concatenate([s.itl_ns[a:b] for a, b in zip(starts, ends, strict=True)]) / 1e6
        if len(starts)
        else np.zeros(0)
    )
    good = np.ones(len(ttft), bool)
    if slo_ttft_ms is not None:
        good &= ttft <= slo_ttft_ms
    if slo_tpot_ms is not None:
        good &= ~(tpot > slo_tpot_ms)  # a one-token output has no TPOT: it cannot miss it
    span = duration_s if duration_s > 0 else math.nan
    return {
        "ttft_p50_ms": _pct(ttft, 50),
        "ttft_p90_ms": _pct(ttft, 90),
        "ttft_p99_ms": _pct(ttft, 99),
        "ttft_mean_ms": float(ttft.mean()) if len(ttft) else math.nan,
        "itl_p50_ms": _pct(itl, 50),
        "itl_p99_ms": _pct(itl, 99),
        "tpot_mean_ms": float(tpot_valid.mean()) if len(tpot_valid) else math.nan,
        "tpot_p50_ms": _pct(tpot_valid, 50),
        "tpot_p99_ms": _pct(tpot_valid, 99),
        "output_tokens_per_s": float(out.sum()) / span,
        "prompt_tokens_per_s": float(prompt.sum()) / span,
        "output_tokens_mean": float(out.mean()) if len(out) else math.nan,
        "prompt_tokens_mean": float(prompt.mean()) if len(prompt) else math.nan,
        "llm_goodput_rps": float(good.sum()) / span,
        "llm_goodput_fraction": float(good.mean()) if len(good) else math.nan,
        "slo_ttft_ms": slo_ttft_ms if slo_ttft_ms is not None else math.nan,
        "slo_tpot_ms": slo_tpot_ms if slo_tpot_ms is not None else math.nan,
    }
