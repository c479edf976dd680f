"""Per-target resources and per-variant accuracy for the report's charts.

- startup (time to ready, targets.json) and peak memory (the largest per-step server RSS
  and GPU memory in steps.csv), per target; the in-process baseline has no server, so it
  is left out;
- accuracy against speed, per variant: its test accuracy (variants.json) against the best
  throughput of the targets serving it. Only targets that can be trusted count: not the
  baseline, fidelity not failed, and valid steps only (a stack that is fast because it is
  wrong, or a step the load generator throttled, does not make its variant look fast).
"""

from __future__ import annotations

import pandas as pd

from harness.report import charts
from harness.report.data import RunData
from harness.report.fmt import finite

MEMORY_COLUMNS = (
    ("server_rss_mb", "peak server RSS (MB)"),
    ("gpu_mem_mb", "peak GPU memory (MB)"),
)


def resources_chart(data: RunData) -> str | None:
    return charts.startup_and_memory(*resources(data))


def resources(data: RunData) -> tuple[dict[str, float], dict[str, dict[str, float]], list[str]]:
    """(time to ready per target, {memory series title: peak per target}, the targets)."""
    baselines = data.baselines()
    targets = [t for t in data.target_names() if t not in baselines]
    startup = {
        str(t.get("name")): float(t["startup_s"])
        for t in data.targets
        if finite(t.get("startup_s")) and str(t.get("name")) not in baselines
    }
    memory = {title: _peak(data.steps, column) for column, title in MEMORY_COLUMNS}
    return startup, memory, targets


def _peak(steps: pd.DataFrame, column: str) -> dict[str, float]:
    if column not in steps or steps.empty:
        return {}
    peak = steps.groupby("target", sort=False)[column].max()
    return {str(k): float(v) for k, v in peak.items() if finite(v)}


def accuracy_points(data: RunData, agg: pd.DataFrame) -> list[tuple[str, str, float, float]]:
    """(variant, fastest trusted target serving it, its best throughput, variant accuracy)."""
    untrusted = data.baselines() | data.fidelity_failed()
    usable = agg[~agg["target"].isin(untrusted) & ~agg["invalid"].astype(bool)]
    served = {str(t.get("name")): str(t.get("variant")) for t in data.targets}
    points = []
    for variant in data.variants:
        accuracy = (variant.get("validation") or {}).get("accuracy")
        name = str(variant.get("name"))
        mine = usable[usable["target"].map(served) == name]
        mine = mine[mine["throughput_rps"].map(finite)]
        if not finite(accuracy) or mine.empty:
            continue
        best = mine.sort_values("throughput_rps", kind="stable").iloc[-1]
        points.append((name, str(best["target"]), float(best["throughput_rps"]), accuracy))
    return points


def reference_accuracy(data: RunData) -> float | None:
    for variant in data.variants:
        value = (variant.get("validation") or {}).get("reference_accuracy")
        if finite(value):
            return float(value)
    value = data.model.get("test_accuracy")
    return float(value) if finite(value) else None


def accuracy_chart(data: RunData, agg: pd.DataFrame) -> str | None:
    return charts.accuracy_vs_speed(accuracy_points(data, agg), reference_accuracy(data))
