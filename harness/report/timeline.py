"""Latency and server load over time within one step: does a stack hold up as the step runs?

The step shown is the run's heaviest steady load: the highest closed-loop concurrency. Per
target, the first repeat with a records file: completed, error-free requests are put in
100 ms windows by completion time, and each window gives a p50 and a p99. The telemetry
samplers' series of the same step (server CPU %; GPU utilisation and power when sampled)
share the time axis. Both clocks start with the step: the samplers are started just before
the load, so the two are aligned to within the load process's start (milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.report import charts
from harness.results import RunData

WINDOW_S = 0.1


@dataclass(frozen=True)
class Timeline:
    label: str  # the step label shown, e.g. "closed c=16"
    chart: str | None  # the PNG (--static only)
    notes: list[str] = field(default_factory=list)  # per target: what could not be drawn
    latency: dict[str, pd.DataFrame] = field(default_factory=dict)  # per target, per window
    process: dict[str, pd.DataFrame] = field(default_factory=dict)  # server CPU (t_s, cpu_pct)
    gpu: dict[str, pd.DataFrame] = field(default_factory=dict)  # (t_s, util_pct, power_w)
    warmup_s: float | None = None  # sent but not measured, from the step's start


def heaviest_closed_label(steps: pd.DataFrame) -> str | None:
    """The label of the closed-loop step with the highest concurrency (first seen on ties)."""
    closed = steps[(steps["mode"] == "closed") & np.isfinite(steps["concurrency"])]
    if closed.empty:
        return None
    top = closed[closed["concurrency"] == closed["concurrency"].max()]
    return str(top["label"].iloc[0])


def timeline(
    data: RunData, marks: dict[str, str] | None = None, static: bool = False
) -> Timeline | None:
    """The series of the heaviest closed-loop step (and, `static`, their PNG), or None when
    the run has no such step."""
    label = heaviest_closed_label(data.steps)
    if label is None:
        return None
    rows = data.steps[data.steps["label"] == label].sort_values("repeat", kind="stable")
    latency: dict[str, pd.DataFrame] = {}
    process: dict[str, pd.DataFrame] = {}
    gpu: dict[str, pd.DataFrame] = {}
    warmups: list[float] = []
    notes: list[str] = []
    for name in data.target_names():
        mine = rows[rows["target"] == name]
        found = _first_records(data, name, mine)
        if found is None:
            if not mine.empty:
                notes.append(f"{name}: no readable records file for this step")
            continue
        path, step, repeat = found
        try:
            latency[name], warmup_s = window_percentiles(path)
        except Exception as exc:  # a corrupt file is noted, not fatal to the report
            notes.append(f"{name}: records unreadable ({type(exc).__name__}: {exc})")
            continue
        if warmup_s is not None:
            warmups.append(warmup_s)
        for into, sampler, column in ((process, "process", "cpu_pct"), (gpu, "gpu", "util_pct")):
            frame, note = _series(data.telemetry_path(name, step, repeat, sampler), column)
            if frame is not None:
                into[name] = frame
            if note:
                notes.append(f"{name}: {sampler} telemetry {note}")
    warmup = max(warmups) if warmups else None
    uri = (
        charts.latency_over_time(latency, process, gpu, warmup, data.slo_ms, marks)
        if static
        else None
    )
    return Timeline(label, uri, notes, latency, process, gpu, warmup)


def _first_records(data: RunData, target: str, rows: pd.DataFrame) -> tuple[Path, int, int] | None:
    for step, repeat in zip(rows["step"].tolist(), rows["repeat"].tolist(), strict=True):
        path = data.records_path(target, step, repeat)
        if path is not None:
            return path, int(step), int(repeat)
    return None


def window_percentiles(path: Path, window_s: float = WINDOW_S) -> tuple[pd.DataFrame, float | None]:
    """(t_s, p50_ms, p99_ms, requests) per window of completion time, and the warm-up (s)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        names = set(parquet.schema_arrow.names)
        wanted = [c for c in ("intended_ns", "end_ns", "error") if c in names]
        table = parquet.read(columns=wanted)
        meta = parquet.schema_arrow.metadata or {}
    if not {"intended_ns", "end_ns"} <= names:
        return pd.DataFrame(columns=["t_s", "p50_ms", "p99_ms", "requests"]), None
    end = table.column("end_ns").to_numpy().astype(np.int64)
    latency_ms = (end - table.column("intended_ns").to_numpy().astype(np.int64)) / 1e6
    ok = np.isfinite(latency_ms) & (latency_ms > 0)
    if "error" in names:
        ok &= table.column("error").to_numpy() == 0
    frame = pd.DataFrame(
        {"window": np.floor(end[ok] / 1e9 / window_s).astype(np.int64), "ms": latency_ms[ok]}
    )
    groups = frame.groupby("window", sort=True)["ms"]
    result = pd.DataFrame(
        {
            "p50_ms": groups.quantile(0.5),
            "p99_ms": groups.quantile(0.99),
            "requests": groups.size(),
        }
    )
    result.insert(0, "t_s", (result.index.to_numpy(dtype=float) + 0.5) * window_s)
    return result.reset_index(drop=True), _seconds(meta.get(b"warmup_ns"))


def _seconds(raw: Any) -> float | None:
    try:
        value = int(raw) / 1e9
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _series(path: Path | None, column: str) -> tuple[pd.DataFrame | None, str | None]:
    """A sampler's time series with `t_s` and `column`; None and why when it cannot be used
    (no note when the sampler did not run: no file is the normal case without a GPU)."""
    if path is None:
        return None, None
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # a bad file drops its line and is noted
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if not {"t_s", column} <= set(frame.columns):
        return None, f"has no t_s/{column} columns"
    if frame.empty:
        return None, None
    return frame.sort_values("t_s", kind="stable").reset_index(drop=True), None
