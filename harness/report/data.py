"""The report's view of a run folder (read by `harness.results.load_run`): steps averaged
over repeats, labels in the order they ran, latency samples from the records. No rendering
happens here.

Everything is read defensively: a run that died early has missing files, and the report
must still say what happened. Missing files are noted (not raised); malformed JSON is an
error naming the file, because a half-readable run would give wrong numbers silently.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness import columns
from harness.results import RunData, RunFolderError, load_run

__all__ = ["RunData", "RunFolderError", "aggregate_steps", "label_order", "latency_samples",
           "load_run"]  # fmt: skip

# the server's own view of a step, where its framework reports one
SERVER_COLUMNS = columns.of_family("server")
# Point estimates with a 95% interval in steps.csv: (low column, high column).
INTERVAL_COLUMNS = columns.interval_columns()
# Averaged over repeats of the same (label, target).
MEAN_COLUMNS = columns.mean_columns()
MAX_RECORD_ROWS = 200_000


AGG_COLUMNS = [
    "label",
    "target",
    *MEAN_COLUMNS,
    *(f"{c}_{end}" for c in INTERVAL_COLUMNS for end in ("lo", "hi")),
    "cv",
    "repeats",
    "loadgen_saturated",
    "loadgen_note",
    "unstable",
    "invalid",
    "invalid_reason",
    "ineligible",
    "ineligible_reason",
    "insufficient",
    "mode",
    "order",
]


def aggregate_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, target): the mean of repeats, with `repeats` the count.

    `<metric>_lo` / `<metric>_hi` are the step's 95% interval when there is one repeat, and
    the range of the per-repeat point estimates when there are more (pooled intervals over
    repeats are the verdicts' job). `cv` is the largest over repeats.
    """
    if steps.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in AGG_COLUMNS})
    flagged = steps.assign(
        unstable=steps["stable"].eq(False),
        invalid=steps["valid"].eq(False),
        ineligible=steps["eligible"].eq(False),
    )
    groups = flagged.groupby(["label", "target"], sort=False)
    agg = groups[MEAN_COLUMNS].mean()
    agg["repeats"] = groups.size()
    single = agg["repeats"] == 1
    for column, (low, high) in INTERVAL_COLUMNS.items():
        agg[f"{column}_lo"] = groups[low].first().where(single, groups[column].min())
        agg[f"{column}_hi"] = groups[high].first().where(single, groups[column].max())
    agg["cv"] = groups["cv"].max()
    agg["loadgen_saturated"] = groups["loadgen_saturated"].any()
    agg["loadgen_note"] = groups["loadgen_note"].agg(_join_unique)
    agg["unstable"] = groups["unstable"].any()
    agg["invalid"] = groups["invalid"].any()
    agg["invalid_reason"] = groups["invalid_reason"].agg(_join_unique)
    agg["ineligible"] = groups["ineligible"].any()
    agg["ineligible_reason"] = groups["ineligible_reason"].agg(_join_unique)
    agg["insufficient"] = groups["insufficient"].agg(_join_names)
    agg["mode"] = groups["mode"].first()
    agg["order"] = groups["step"].min()
    return agg.reset_index()[AGG_COLUMNS]


def _join_unique(values: pd.Series) -> str:
    return "; ".join(dict.fromkeys(str(v) for v in values if str(v)))


def _join_names(values: pd.Series) -> str:
    """Union of comma-separated lists, in first-seen order ("p90, p99")."""
    names = (n.strip() for v in values for n in str(v).split(","))
    return ", ".join(dict.fromkeys(n for n in names if n))


def step_rows(steps: pd.DataFrame, target: str, label: str) -> list[int]:
    """The steps.csv rows (1-based, header not counted) of a target at a level: where a
    figure in the report comes from."""
    index = steps.index[(steps["target"] == target) & (steps["label"] == label)]
    return [int(i) + 1 for i in index]


def label_order(steps: pd.DataFrame) -> list[str]:
    """Step labels in the order they ran (lowest step index first, then first seen)."""
    if steps.empty:
        return []
    first = steps.reset_index(drop=True).reset_index().groupby("label", sort=False)
    keys = first.agg(step=("step", "min"), seen=("index", "min"))
    keys["step"] = keys["step"].fillna(math.inf)
    return [str(label) for label in keys.sort_values(["step", "seen"]).index]


def latency_samples(
    data: RunData,
    limit: int = MAX_RECORD_ROWS,
    seed: int = 0,
) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Measured, error-free latencies (ms) per label and target from the records files.

    Each file contributes at most `limit` rows (a seeded random sample when larger).
    Returns the samples and a note for each records file that could not be read.
    """
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    samples: dict[str, dict[str, list[np.ndarray]]] = {}
    notes: list[str] = []
    steps = data.steps
    for label, target, step, repeat in zip(
        steps["label"].tolist(),
        steps["target"].tolist(),
        steps["step"].tolist(),
        steps["repeat"].tolist(),
        strict=True,
    ):
        path = data.records_path(str(target), step, repeat)
        if path is None:
            continue
        rel = path.relative_to(data.path)
        try:
            with pq.ParquetFile(path) as parquet:
                values = _measured_ms(parquet)
        except Exception as exc:  # a corrupt file is reported, not fatal to the report
            notes.append(f"{rel}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if len(values) > limit:
            values = rng.choice(values, size=limit, replace=False)
        samples.setdefault(str(label), {}).setdefault(str(target), []).append(values)
    merged = {
        label: {t: np.concatenate(parts) for t, parts in per_target.items()}
        for label, per_target in samples.items()
    }
    return merged, notes


def _measured_ms(parquet: Any) -> np.ndarray:
    """Latency (end - intended) of in-window, error-free requests, in ms."""
    names = set(parquet.schema_arrow.names)
    if not {"end_ns", "intended_ns"} <= names:
        return np.empty(0)
    wanted = [c for c in ("intended_ns", "end_ns", "error", "in_window") if c in names]
    table = parquet.read(columns=wanted)
    cols = {c: table.column(c).to_numpy() for c in wanted}
    mask = np.ones(table.num_rows, dtype=bool)
    if "in_window" in cols:
        mask &= cols["in_window"].astype(bool)
    if "error" in cols:
        mask &= cols["error"] == 0
    latency = cols["end_ns"][mask].astype(np.int64) - cols["intended_ns"][mask].astype(np.int64)
    return np.asarray(latency / 1e6, dtype=float)
