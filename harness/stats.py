"""Pure statistics over request records: no I/O, no printing.

Percentiles are exact (computed from the raw latencies of the measured window), never
bucketed. Durations come from perf_counter_ns; the wall clock is only for timestamps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from harness.confidence import (
    Blocks,
    bootstrap,
    ci_block_seconds,
    enough_samples,
    interval,
    make_blocks,
    rate_ci,
    stable,
)
from harness.load.records import (
    ERR_CONNECT,
    ERR_CONNECTION,
    ERR_HTTP_STATUS,
    ERR_INFERENCE,
    ERR_PROTOCOL,
    ERR_SHORT_OUTPUT,
    ERR_TIMEOUT,
    StepRecords,
)

# A step with more failed requests than this cannot be ranked, priced or be within an SLO
# (slo.max_error_rate overrides it per scenario).
MAX_ERROR_RATE = 0.001
SHED_STATUSES = (429, 503)  # the server refused work it could not take: it shed load
# error kind column -> its record error code (HTTP statuses are split by class below)
ERROR_KINDS = {
    "errors_timeout": ERR_TIMEOUT,
    "errors_connect": ERR_CONNECT,
    "errors_lost": ERR_CONNECTION,
    "errors_bad_response": ERR_PROTOCOL,
    "errors_inference": ERR_INFERENCE,
    "errors_short_output": ERR_SHORT_OUTPUT,
}
ERROR_WORDS = {
    "errors_shed": "shed (HTTP 429/503)",
    "errors_http_5xx": "HTTP 5xx",
    "errors_http_4xx": "HTTP 4xx",
    "errors_timeout": "timeouts",
    "errors_connect": "connect failures",
    "errors_lost": "connections lost",
    "errors_bad_response": "bad answers",
    "errors_inference": "inference errors",
    "errors_short_output": "short outputs",
}
LOADGEN_CPU_LIMIT = 0.90  # fraction of one core above which the client may be the bottleneck
RATE_RATIO_LIMIT = 0.98  # achieved/requested open-loop send rate below this: falling behind
SEND_LAG_P99_LIMIT_MS = 5.0  # p99 lateness of sends beyond which the schedule was not held


@dataclass(frozen=True)
class StatsRules:
    """How a step is judged: its stability windows, the percentile that matters and the
    error rate beyond which it cannot be ranked."""

    window_s: float = 1.0
    windows: int = 3
    tolerance: float = 0.10
    percentile: float = 99.0
    max_error_rate: float = MAX_ERROR_RATE


@dataclass
class StepSummary:
    duration_s: float
    requests: int
    errors: int
    error_rate: float
    throughput_rps: float
    goodput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    client_cpu_pct: float
    achieved_rate_ratio: float
    send_lag_p99_ms: float
    loadgen_saturated: bool
    loadgen_note: str
    p50_ms_ci_low: float = math.nan
    p50_ms_ci_high: float = math.nan
    p99_ms_ci_low: float = math.nan
    p99_ms_ci_high: float = math.nan
    throughput_rps_ci_low: float = math.nan
    throughput_rps_ci_high: float = math.nan
    cv: float = math.nan
    stable: bool | None = None
    valid: bool = True
    invalid_reason: str = ""
    insufficient: str = ""  # percentiles left out for lack of samples
    slo_percentile_ms: float = math.nan  # the SLO's percentile (e.g. p99) of this step
    # what failed, by kind (measured window)
    errors_shed: int = 0
    errors_http_5xx: int = 0
    errors_http_4xx: int = 0
    errors_timeout: int = 0
    errors_connect: int = 0
    errors_lost: int = 0
    errors_bad_response: int = 0
    errors_inference: int = 0
    errors_short_output: int = 0
    # may this step be ranked, priced, or be within an SLO? (valid, few errors, server up)
    eligible: bool = True
    ineligible_reason: str = ""

    def to_dict(self) -> dict[str, float | int | bool | str | None]:
        return asdict(self)


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def achieved_rate_ratio(intended_ns: np.ndarray, sent_ns: np.ndarray) -> float:
    """Send rate achieved over the same requests divided by the rate the schedule asked for.

    Comparing spans (not counts) keeps Poisson noise out: 1.0 means every request left on
    schedule; a generator that falls behind stretches the sent span and drops below 1.
    """
    if len(intended_ns) < 2:
        return math.nan
    intended_span = float(intended_ns.max() - intended_ns.min())
    sent_span = float(sent_ns.max() - sent_ns.min())
    return intended_span / sent_span if sent_span > 0 else math.nan


def step_blocks(rec: StepRecords, window_s: float) -> Blocks:
    """The measured window of a step cut into stability windows (successes only)."""
    mask = rec.measured() & (rec.error == 0)
    return make_blocks(
        rec.intended_ns[mask], rec.latency_ns[mask] / 1e6, rec.warmup_ns, rec.window_ns, window_s
    )


def summarize(
    rec: StepRecords,
    slo_ms: float | None = None,
    in_process: bool = False,
    rules: StatsRules | None = None,
    slo_percentile: float = 99.0,
) -> StepSummary:
    rules = rules or StatsRules()
    summary = _point_summary(rec, slo_ms, in_process)
    blocks = step_blocks(rec, ci_block_seconds(summary.duration_s))
    windows = step_blocks(rec, rules.window_s)
    _add_confidence(summary, blocks, windows, rules, open_loop=bool(rec.requested_rate))
    if enough_samples(blocks.count, slo_percentile):
        summary.slo_percentile_ms = percentile(np.concatenate(blocks.latencies), slo_percentile)
    _judge_errors(summary, rec, rules.max_error_rate)
    return summary


def error_counts(rec: StepRecords) -> dict[str, int]:
    """Failed requests of the measured window by kind (the `errors_*` columns)."""
    mask = rec.measured()
    error, status = rec.error[mask], rec.status[mask]
    http = error == ERR_HTTP_STATUS
    shed = http & np.isin(status, SHED_STATUSES)
    counts = {name: int((error == code).sum()) for name, code in ERROR_KINDS.items()}
    counts["errors_shed"] = int(shed.sum())
    counts["errors_http_5xx"] = int((http & ~shed & (status >= 500)).sum())
    counts["errors_http_4xx"] = int((http & ~shed & (status < 500)).sum())
    return counts


def describe_errors(counts: dict[str, int]) -> str:
    """`1,234 shed (HTTP 429/503), 12 timeouts`: the kinds present, largest first."""
    present = sorted(((n, k) for k, n in counts.items() if n), reverse=True)
    return ", ".join(f"{n:,} {ERROR_WORDS.get(k, k)}" for n, k in present)


def _judge_errors(summary: StepSummary, rec: StepRecords, max_error_rate: float) -> None:
    counts = error_counts(rec)
    for name, count in counts.items():
        setattr(summary, name, count)
    reasons = []
    if not summary.valid:
        reasons.append(f"invalid: {summary.invalid_reason or 'see the step'}")
    if summary.requests == 0:
        reasons.append("no request was measured")
    elif summary.error_rate > max_error_rate:
        reasons.append(
            f"{summary.error_rate:.1%} of requests failed ({describe_errors(counts)}), over "
            f"the {max_error_rate:.1%} allowed"
        )
    summary.eligible = not reasons
    summary.ineligible_reason = "; ".join(reasons)


def _add_confidence(
    summary: StepSummary,
    blocks: Blocks,
    windows: Blocks,
    rules: StatsRules | None,
    open_loop: bool = False,
) -> None:
    rules = rules or StatsRules()
    boot = bootstrap(blocks, [50, 99])
    summary.p50_ms_ci_low, summary.p50_ms_ci_high = interval(boot["p50"])
    summary.p99_ms_ci_low, summary.p99_ms_ci_high = interval(boot["p99"])
    low, high, _ = rate_ci(blocks)
    summary.cv = rate_ci(windows)[2]  # over the stability windows, not the short CI blocks
    summary.throughput_rps_ci_low, summary.throughput_rps_ci_high = low, high
    summary.stable = stable(
        windows, rules.percentile, rules.windows, rules.tolerance, check_rate=not open_loop
    )
    short = [f"p{q:g}" for q in (50, 90, 99) if not enough_samples(blocks.count, q)]
    for name in short:  # a percentile of too few samples is noise, not a number
        setattr(summary, f"{name}_ms", math.nan)
    summary.insufficient = ", ".join(short)
    summary.valid = not summary.loadgen_saturated
    summary.invalid_reason = summary.loadgen_note


def _point_summary(rec: StepRecords, slo_ms: float | None, in_process: bool) -> StepSummary:
    mask = rec.measured()
    duration_s = (rec.window_ns - rec.warmup_ns) / 1e9
    ok = mask & (rec.error == 0)
    latency_ms = rec.latency_ns[ok] / 1e6
    requests = int(mask.sum())
    errors = int((mask & (rec.error != 0)).sum())
    lag_ms = rec.send_lag_ns[mask] / 1e6
    cpu_frac = rec.client_cpu_s / rec.client_wall_s if rec.client_wall_s > 0 else math.nan
    # A backend without a schedule (locust) reports its own sent/asked ratio: its intended
    # times are its send times, so the span comparison would always say 1.0.
    ratio = float(rec.extra.get("achieved_rate_ratio", math.nan))
    if math.isnan(ratio) and rec.requested_rate:
        ratio = achieved_rate_ratio(rec.intended_ns[mask], rec.sent_ns[mask])
    lag_p99 = percentile(lag_ms, 99)
    # The floor runs the model inside the load process: its CPU and lateness are the
    # model's own queueing, not a load-generator limit.
    notes = [] if in_process else _loadgen_notes(rec, cpu_frac, ratio, lag_p99)
    good = int((latency_ms <= slo_ms).sum()) if slo_ms is not None else len(latency_ms)
    return StepSummary(
        duration_s=duration_s,
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else math.nan,
        throughput_rps=len(latency_ms) / duration_s,
        goodput_rps=good / duration_s,
        p50_ms=percentile(latency_ms, 50),
        p90_ms=percentile(latency_ms, 90),
        p99_ms=percentile(latency_ms, 99),
        max_ms=float(latency_ms.max()) if len(latency_ms) else math.nan,
        mean_ms=float(latency_ms.mean()) if len(latency_ms) else math.nan,
        client_cpu_pct=cpu_frac * 100,
        achieved_rate_ratio=ratio,
        send_lag_p99_ms=lag_p99,
        loadgen_saturated=bool(notes),
        loadgen_note="; ".join(notes),
    )


def _loadgen_notes(rec: StepRecords, cpu_frac: float, ratio: float, lag_p99: float) -> list[str]:
    """Why this step's numbers may describe the load generator rather than the server."""
    notes = []
    if cpu_frac > LOADGEN_CPU_LIMIT:
        notes.append(f"load generator used {cpu_frac:.0%} of a core")
    if rec.requested_rate and not math.isnan(ratio) and ratio < RATE_RATIO_LIMIT:
        notes.append(f"sent {ratio:.1%} of the requested rate")
    if rec.requested_rate and lag_p99 > SEND_LAG_P99_LIMIT_MS:
        notes.append(f"send lag p99 {lag_p99:.1f} ms")
    late = rec.extra.get("late_start_ms", 0.0)
    if late > 5.0:
        notes.append(f"a load process started {late:.0f} ms late")
    if rec.connection_cap_hit:
        notes.append("connection cap reached (open loop turned partly closed)")
    return notes
