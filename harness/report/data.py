"""Read a run folder into plain, typed data for the report. No rendering happens here.

Everything is read defensively: a run that died early has missing files, and the report
must still say what happened. Missing files are noted (not raised); malformed JSON is an
error naming the file, because a half-readable run would give wrong numbers silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.llm.metrics import LLM_COLUMNS, LLM_SERVER_COLUMNS
from harness.report.fmt import finite
from harness.results import STEP_COLUMNS

TEXT_COLUMNS = (
    "target",
    "adapter",
    "variant",
    "launcher",
    "profile",
    "label",
    "mode",
    "loadgen_note",
    "started_at",
    "invalid_reason",
    "insufficient",
)
BOOL_COLUMNS = ("loadgen_saturated",)
TRISTATE_COLUMNS = ("stable", "valid")  # True / False / None (not known)
# Read when present: older or newer writers may leave them out of steps.csv.
OPTIONAL_NUMERIC = ("slo_percentile_ms",)
# LLM steps (harness/llm/metrics.py) add token metrics, and the server's own token counts
# and phase times where its framework reports them; NaN for every other run.
LLM_STEP_COLUMNS = (*LLM_COLUMNS, *LLM_SERVER_COLUMNS)
NUMERIC_COLUMNS = (
    *(c for c in STEP_COLUMNS if c not in TEXT_COLUMNS + BOOL_COLUMNS + TRISTATE_COLUMNS),
    *(c for c in (*OPTIONAL_NUMERIC, *LLM_STEP_COLUMNS) if c not in STEP_COLUMNS),
)
SERVER_COLUMNS = ("server_queue_ms", "server_compute_ms", "server_batch_avg")
# Point estimates with a 95% interval in steps.csv: (low column, high column).
INTERVAL_COLUMNS = {
    "p50_ms": ("p50_ms_ci_low", "p50_ms_ci_high"),
    "p99_ms": ("p99_ms_ci_low", "p99_ms_ci_high"),
    "throughput_rps": ("throughput_rps_ci_low", "throughput_rps_ci_high"),
}
# Averaged over repeats of the same (label, target).
MEAN_COLUMNS = [
    "throughput_rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "requests",
    "errors",
    "error_rate",
    "goodput_rps",
    "client_cpu_pct",
    "achieved_rate_ratio",
    "requested_rate",
    "concurrency",
    "send_lag_p99_ms",
    "duration_s",
    "slo_ms",
    "slo_percentile_ms",
    *SERVER_COLUMNS,
    *LLM_STEP_COLUMNS,
]
MAX_RECORD_ROWS = 200_000
LOG_TAIL_LINES = 30
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class RunFolderError(ValueError):
    """The run folder cannot be read (no run.json, or a file that is not valid JSON)."""


@dataclass(frozen=True)
class RunData:
    path: Path
    run: dict[str, Any]
    model: dict[str, Any]
    variants: list[dict[str, Any]]
    targets: list[dict[str, Any]]
    steps: pd.DataFrame  # one row per target x step x repeat; empty when none finished
    missing: list[str] = field(default_factory=list)  # expected files that are absent

    @property
    def scenario(self) -> dict[str, Any]:
        scenario = self.run.get("scenario")
        return scenario if isinstance(scenario, dict) else {}

    @property
    def slo_ms(self) -> float | None:
        slo = self.scenario.get("slo") or {}
        value = slo.get("latency_ms") if isinstance(slo, dict) else None
        return float(value) if isinstance(value, int | float) else None

    @property
    def slo_percentile(self) -> float | None:
        slo = self.scenario.get("slo") or {}
        value = slo.get("percentile") if isinstance(slo, dict) else None
        return float(value) if isinstance(value, int | float) else None

    def target_names(self) -> list[str]:
        """Targets in scenario order, then any that only appear in steps.csv."""
        names = [str(t.get("name", "")) for t in self.targets]
        extra = [n for n in self.steps["target"].unique() if n not in names]
        return names + [str(n) for n in extra]

    def baselines(self) -> set[str]:
        """Reference targets (the in-process floor): shown, never ranked."""
        return {str(t.get("name")) for t in self.targets if t.get("baseline")}

    def fidelity_failed(self) -> set[str]:
        return {
            str(t.get("name"))
            for t in self.targets
            if isinstance(t.get("fidelity"), dict) and t["fidelity"].get("passed") is False
        }

    def fidelity_passed(self) -> set[str]:
        return {
            str(t.get("name"))
            for t in self.targets
            if isinstance(t.get("fidelity"), dict) and t["fidelity"].get("passed") is True
        }

    @property
    def stability(self) -> dict[str, Any]:
        """The scenario's stability rule (window_s, windows, tolerance, percentile, ...)."""
        load = self.scenario.get("load")
        value = load.get("stability") if isinstance(load, dict) else None
        return value if isinstance(value, dict) else {}


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise RunFolderError(f"{run_dir}: no run.json, so this is not a run folder")
    missing: list[str] = []
    run = _read_json(run_dir / "run.json", {}, missing)
    model = _read_json(run_dir / "model.json", {}, missing)
    variants = _read_json(run_dir / "variants.json", [], missing)
    targets = _read_json(run_dir / "targets.json", [], missing)
    return RunData(
        path=run_dir,
        run=run if isinstance(run, dict) else {},
        model=model if isinstance(model, dict) else {},
        variants=[v for v in variants if isinstance(v, dict)],
        targets=[t for t in targets if isinstance(t, dict)],
        steps=read_steps(run_dir / "steps.csv"),
        missing=missing,
    )


def _read_json(path: Path, default: Any, missing: list[str]) -> Any:
    if not path.is_file():
        missing.append(path.name)
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from exc


def read_steps(csv_path: Path) -> pd.DataFrame:
    """steps.csv as a typed frame; an empty frame with every column when there is none."""
    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return _normalise(pd.DataFrame({c: pd.Series(dtype=str) for c in STEP_COLUMNS}))
    # All text first, so a target called "NA" stays a name; numbers are converted below.
    frame = pd.read_csv(
        csv_path,
        dtype=str,
        keep_default_na=False,
        on_bad_lines="skip",
        encoding="utf-8",
    )
    return _normalise(frame)


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in (*STEP_COLUMNS, *OPTIONAL_NUMERIC, *LLM_STEP_COLUMNS):
        if col not in frame.columns:
            frame[col] = ""
    for col in TEXT_COLUMNS:
        frame[col] = frame[col].fillna("").astype(str)
    for col in NUMERIC_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    for col in BOOL_COLUMNS:
        frame[col] = frame[col].astype(str).str.strip().str.lower().isin(["true", "1", "yes"])
    for col in TRISTATE_COLUMNS:
        frame[col] = frame[col].map(_tristate).astype(object)
    frame = frame[frame["target"] != ""]
    fallback = frame["profile"].str.cat(frame["level"].astype(str), sep=" ")
    frame["label"] = frame["label"].where(frame["label"] != "", fallback)
    return frame.reset_index(drop=True)


def _tristate(value: Any) -> bool | None:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


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
    flagged = steps.assign(unstable=steps["stable"].eq(False), invalid=steps["valid"].eq(False))
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
        if not (finite(step) and finite(repeat)):
            continue
        rel = Path("records") / str(target) / f"{int(step):03d}-r{int(repeat)}.parquet"
        path = data.path / rel
        if not _inside(path, data.path) or not path.is_file():
            continue
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


def log_tail(data: RunData, target: dict[str, Any], lines: int = LOG_TAIL_LINES) -> str | None:
    """The last lines of a target's server log, or None when there is no log."""
    rel = target.get("log")
    if not isinstance(rel, str) or not rel:
        return None
    path = data.path / rel
    if not _inside(path, data.path) or not path.is_file():
        return None
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 64 * 1024))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


def _inside(path: Path, root: Path) -> bool:
    """Whether `path` stays inside `root` (names come from files we did not write)."""
    return path.resolve().is_relative_to(root.resolve())


def folder_listing(run_dir: Path, exclude: Path | None = None) -> list[tuple[str, int, int]]:
    """(relative path, file count, bytes): top-level files, one row per sub-folder."""
    rows: list[tuple[str, int, int]] = []
    skip = exclude.resolve() if exclude is not None else None
    for entry in sorted(run_dir.iterdir()):
        if skip is not None and entry.resolve() == skip:
            continue
        if entry.is_dir():
            for sub in sorted([entry, *(p for p in entry.rglob("*") if p.is_dir())]):
                files = [p for p in sub.iterdir() if p.is_file()]
                if files:
                    rel = sub.relative_to(run_dir).as_posix() + "/"
                    rows.append((rel, len(files), sum(p.stat().st_size for p in files)))
        elif entry.is_file():
            rows.append((entry.name, 1, entry.stat().st_size))
    return rows
