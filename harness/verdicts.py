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
from typing import Any

import numpy as np
import pandas as pd

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
from harness.results import RunData, RunFolder, load_run
from harness.workloads.base import RecordMetric

DEFAULT_MARGIN = 0.03  # differences under 3% are inside a shared machine's noise floor
# (steps.csv metric, bootstrap key, higher is better): every run has these; a workload family
# adds its own (`Workload.record_metrics`, e.g. time to first token for generations)
METRICS = (("p50_ms", "p50", False), ("p99_ms", "p99", False), ("throughput_rps", "rate", True))
WINDOW_COLUMNS = ["intended_ns", "end_ns", "error", "in_window"]


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


def _record_metrics() -> tuple[RecordMetric, ...]:
    from harness import registry

    return tuple(m for w in registry.workloads().values() for m in w.record_metrics)


def _blocks(
    run: RunData, target: str, step: Any, repeat: Any, metrics: tuple[RecordMetric, ...]
) -> tuple[Blocks, dict[str, Blocks]] | None:
    """A step's latencies in time blocks, and each record metric it has in the same blocks."""
    needs = sorted({n for m in metrics for n in m.needs})
    found = run.records(target, step, repeat, WINDOW_COLUMNS + needs)
    if found is None or found.warmup_ns is None or found.window_ns is None:
        return None
    frame, start, end = found.frame, found.warmup_ns, found.window_ns
    ok = frame[frame.in_window & (frame.error == 0)]
    seconds = ci_block_seconds((end - start) / 1e9)
    latency = (ok.end_ns - ok.intended_ns).to_numpy() / 1e6
    blocks = make_blocks(ok.intended_ns.to_numpy(), latency, start, end, seconds)
    extra = {}
    for metric in metrics:
        if set(metric.needs) <= set(frame.columns):
            intended, values = metric.values(ok)
            extra[metric.key] = make_blocks(intended, values, start, end, seconds)
    return blocks, extra


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


def side_of(run: RunData, target: str, runs: pd.DataFrame, seed: int) -> Side | None:
    """All repeats of one target at one level, pooled and bootstrapped once."""
    metrics = _record_metrics()
    parts = [
        _blocks(run, target, step, repeat, metrics)
        for step, repeat in zip(runs["step"], runs["repeat"], strict=True)
    ]
    usable = [p for p in parts if p is not None]
    if not usable:
        return None
    blocks = pooled([p[0] for p in usable])
    latencies = np.concatenate(blocks.latencies)
    enough = len(latencies) > 0
    side = Side(
        boot=bootstrap(blocks, [50, 99], seed=seed),
        point={
            "p50": float(np.percentile(latencies, 50)) if enough else math.nan,
            "p99": float(np.percentile(latencies, 99)) if enough else math.nan,
            "rate": float(blocks.rates.mean()),
        },
        # only steps that may be ranked (valid, errors within the limit, server alive)
        valid=bool(runs["eligible"].astype(str).eq("True").all()),
    )
    for metric in metrics:  # only where every repeat's records have it
        if len(usable) < len(parts) or not all(metric.key in p[1] for p in usable):
            continue
        joined = pooled([p[1][metric.key] for p in usable])
        if metric.statistic == "p50":
            values = np.concatenate(joined.latencies)
            side.boot[metric.key] = bootstrap(joined, [50], seed=seed)["p50"]
            side.point[metric.key] = float(np.percentile(values, 50)) if len(values) else math.nan
        else:
            side.boot[metric.key], side.point[metric.key] = _sum_rate_bootstrap(joined, seed)
    return side


def compute_verdicts(run: RunData, margin: float = DEFAULT_MARGIN) -> pd.DataFrame:
    """All pairwise verdicts of a run (empty frame if fewer than two targets). A pair is
    trusted when both steps are valid and both targets finished ok with fidelity passed."""
    trusted_targets = run.trusted()
    extra = [(m.column, m.key, m.higher_is_better) for m in _record_metrics()]
    rows: list[Verdict] = []
    for label, group in run.steps.groupby("label", sort=False):
        sides: dict[str, Side] = {}
        for seed, (target, runs) in enumerate(group.groupby("target", sort=False)):
            side = side_of(run, str(target), runs, seed)
            if side is not None:
                sides[str(target)] = side
        for a, b in itertools.combinations(sides, 2):
            trusted = sides[a].valid and sides[b].valid and {a, b} <= trusted_targets
            shared = [m for m in extra if m[1] in sides[a].boot and m[1] in sides[b].boot]
            for metric, key, higher_better in (*METRICS, *shared):
                low, high = ratio_ci(sides[a].boot[key], sides[b].boot[key])
                va, vb = sides[a].point[key], sides[b].point[key]
                ratio = va / vb if vb else math.nan
                word = verdict_word(low, high, higher_better, margin)
                rows.append(
                    Verdict(str(label), a, b, metric, va, vb, ratio, low, high, word, trusted)
                )
    return pd.DataFrame([asdict(v) for v in rows], columns=list(Verdict.__dataclass_fields__))


def write_verdicts(run_dir: Path, margin: float = DEFAULT_MARGIN) -> Path:
    run = load_run(run_dir)
    return RunFolder(run.path).write_verdicts(compute_verdicts(run, margin))
