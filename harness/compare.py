"""`servingbench compare RUN_A RUN_B`: did anything get significantly worse?

For every (target, level) present in both runs, the ratio B/A of p50, p99 and throughput
with a 95% interval (the same block bootstrap as the verdicts). A regression is a change
that is both significant and larger than the threshold: latency whose interval lies
entirely above 1 + threshold, or throughput whose interval lies entirely below
1 - threshold. Two runs of the same build therefore do not flag; a usable CI gate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from harness.confidence import ratio_ci
from harness.verdicts import METRICS, side_of


@dataclass
class Change:
    target: str
    label: str
    metric: str
    value_a: float
    value_b: float
    ratio: float  # B / A
    ci_low: float
    ci_high: float
    regression: bool
    improvement: bool


def compare_runs(run_a: Path, run_b: Path, threshold: float = 0.10) -> pd.DataFrame:
    steps_a = pd.read_csv(run_a / "steps.csv")
    steps_b = pd.read_csv(run_b / "steps.csv")
    rows: list[Change] = []
    for (target, label), group_b in steps_b.groupby(["target", "label"], sort=False):
        group_a = steps_a[(steps_a.target == target) & (steps_a.label == label)]
        if group_a.empty:
            continue
        a = side_of(run_a, str(target), group_a, seed=1)
        b = side_of(run_b, str(target), group_b, seed=2)
        if a is None or b is None:
            continue
        for metric, key, higher_better in METRICS:
            low, high = ratio_ci(b.boot[key], a.boot[key])
            va, vb = a.point[key], b.point[key]
            worse_if_up = not higher_better
            regression = _beyond(low, high, threshold, worse_if_up)
            improvement = _beyond(low, high, threshold, not worse_if_up)
            rows.append(Change(str(target), str(label), metric, va, vb,
                               vb / va if va else math.nan, low, high, regression,
                               improvement))  # fmt: skip
    return pd.DataFrame([asdict(r) for r in rows], columns=list(Change.__dataclass_fields__))


def _beyond(low: float, high: float, threshold: float, upward: bool) -> bool:
    if not (math.isfinite(low) and math.isfinite(high)):
        return False
    return low > 1 + threshold if upward else high < 1 - threshold
