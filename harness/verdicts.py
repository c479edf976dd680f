"""Verdicts: for each pair of targets at each load level, is one faster, and how sure?

Records of all repeats of a (target, level) are pooled, cut into short blocks and
bootstrapped once; each pair's ratio of p50, p99 and throughput gets a 95% interval from
the two bootstrap distributions, and a word: "faster", "slower" or "no significant
difference" (the interval reaches into 1 +- margin, 3% by default: a smaller difference is
below what a shared machine can resolve). Point estimates alone never decide. Reads only the
run folder, so a report can always recompute them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from harness.confidence import (
    BOOTSTRAP_RESAMPLES,
    Blocks,
    bootstrap,
    ci_block_seconds,
    make_blocks,
    pooled,
    ratio_ci,
    verdict_word,
)

DEFAULT_MARGIN = 0.03  # differences under 3% are inside a shared machine's noise floor
METRICS = (("p50_ms", "p50", False), ("p99_ms", "p99", False), ("throughput_rps", "rate", True))
# streamed generations add the two numbers LLM users compare stacks by
LLM_METRICS = (("ttft_p50_ms", "ttft_p50", False), ("output_tokens_per_s", "tok_rate", True))


@dataclass
class Verdict:
    label: str
    target_a: str
    target_b: str
    metric: str
    value_a: float
    value_b: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str  # target_a is <verdict> than target_b
    trusted: bool  # both steps valid and both targets passed fidelity


def _step_blocks(path: Path) -> Blocks | None:
    table = pq.read_table(path, columns=["intended_ns", "end_ns", "error", "in_window"])
    meta = table.schema.metadata or {}
    frame = table.to_pandas()
    ok = frame[frame.in_window & (frame.error == 0)]
    if b"warmup_ns" not in meta:
        return None
    start, end = int(meta[b"warmup_ns"]), int(meta[b"window_ns"])
    latency = (ok.end_ns - ok.intended_ns).to_numpy() / 1e6
    seconds = ci_block_seconds((end - start) / 1e9)
    return make_blocks(ok.intended_ns.to_numpy(), latency, start, end, seconds)


def _token_blocks(path: Path) -> tuple[Blocks, Blocks] | None:
    """TTFT (ms) and output tokens of a streamed step, in the same blocks as its latencies."""
    columns = ["intended_ns", "first_token_ns", "output_tokens", "error", "in_window"]
    if "first_token_ns" not in pq.read_schema(path).names:
        return None
    table = pq.read_table(path, columns=columns)
    meta = table.schema.metadata or {}
    frame = table.to_pandas()
    ok = frame[frame.in_window & (frame.error == 0) & (frame.first_token_ns >= 0)]
    start, end = int(meta[b"warmup_ns"]), int(meta[b"window_ns"])
    seconds = ci_block_seconds((end - start) / 1e9)
    intended = ok.intended_ns.to_numpy()
    ttft = (ok.first_token_ns - ok.intended_ns).to_numpy() / 1e6
    tokens = ok.output_tokens.to_numpy().astype(np.float64)
    return (
        make_blocks(intended, ttft, start, end, seconds),
        make_blocks(intended, tokens, start, end, seconds),
    )


def _sum_rate_bootstrap(blocks: Blocks, seed: int) -> tuple[np.ndarray, float]:
    """Bootstrap of the mean per-block sum rate (tokens/s) and its point estimate."""
    sums = np.array([b.sum() / blocks.seconds for b in blocks.latencies])
    if len(sums) < 2:
        return np.full(BOOTSTRAP_RESAMPLES, math.nan), float(sums.mean()) if len(sums) else math.nan
    picks = np.random.default_rng(seed).integers(0, len(sums), (BOOTSTRAP_RESAMPLES, len(sums)))
    return sums[picks].mean(axis=1), float(sums.mean())


@dataclass
class Side:
    boot: dict[str, np.ndarray]
    point: dict[str, float]
    valid: bool


def side_of(run_dir: Path, target: str, runs: pd.DataFrame, seed: int) -> Side | None:
    """All repeats of one target at one level, pooled and bootstrapped once."""
    folder = run_dir / "records" / target
    parts = [
        _step_blocks(folder / f"{int(step):03d}-r{int(repeat)}.parquet")
        for step, repeat in zip(runs["step"], runs["repeat"], strict=True)
    ]
    usable = [p for p in parts if p is not None]
    if not usable:
        return None
    blocks = pooled(usable)
    latencies = np.concatenate(blocks.latencies)
    enough = len(latencies) > 0
    side = Side(
        boot=bootstrap(blocks, [50, 99], seed=seed),
        point={
            "p50": float(np.percentile(latencies, 50)) if enough else math.nan,
            "p99": float(np.percentile(latencies, 99)) if enough else math.nan,
            "rate": float(blocks.rates.mean()),
        },
        valid=bool(runs["valid"].astype(str).eq("True").all()),
    )
    tokens = [
        _token_blocks(folder / f"{int(step):03d}-r{int(repeat)}.parquet")
        for step, repeat in zip(runs["step"], runs["repeat"], strict=True)
    ]
    if tokens and all(t is not None for t in tokens):
        ttft = pooled([t[0] for t in tokens if t is not None])
        counts = pooled([t[1] for t in tokens if t is not None])
        values = np.concatenate(ttft.latencies)
        side.boot["ttft_p50"] = bootstrap(ttft, [50], seed=seed)["p50"]
        side.point["ttft_p50"] = float(np.percentile(values, 50)) if len(values) else math.nan
        side.boot["tok_rate"], side.point["tok_rate"] = _sum_rate_bootstrap(counts, seed)
    return side


def compute_verdicts(
    run_dir: Path, trusted_targets: set[str] | None = None, margin: float = DEFAULT_MARGIN
) -> pd.DataFrame:
    """All pairwise verdicts of a run folder (empty frame if fewer than two targets)."""
    steps = pd.read_csv(run_dir / "steps.csv")
    rows: list[Verdict] = []
    for label, group in steps.groupby("label", sort=False):
        sides: dict[str, Side] = {}
        for seed, (target, runs) in enumerate(group.groupby("target", sort=False)):
            side = side_of(run_dir, str(target), runs, seed)
            if side is not None:
                sides[str(target)] = side
        for a, b in itertools.combinations(sides, 2):
            trusted = (
                sides[a].valid
                and sides[b].valid
                and (trusted_targets is None or {a, b} <= trusted_targets)
            )
            both_llm = "ttft_p50" in sides[a].boot and "ttft_p50" in sides[b].boot
            for metric, key, higher_better in METRICS + (LLM_METRICS if both_llm else ()):
                low, high = ratio_ci(sides[a].boot[key], sides[b].boot[key])
                va, vb = sides[a].point[key], sides[b].point[key]
                ratio = va / vb if vb else math.nan
                word = verdict_word(low, high, higher_better, margin)
                rows.append(
                    Verdict(str(label), a, b, metric, va, vb, ratio, low, high, word, trusted)
                )
    return pd.DataFrame([asdict(v) for v in rows], columns=list(Verdict.__dataclass_fields__))


def write_verdicts(
    run_dir: Path, trusted_targets: set[str] | None = None, margin: float = DEFAULT_MARGIN
) -> Path:
    frame = compute_verdicts(run_dir, trusted_targets, margin)
    path = run_dir / "verdicts.csv"
    frame.to_csv(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").replace(path)
    return path
