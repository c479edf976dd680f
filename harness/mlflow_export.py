"""Log a run folder to MLflow as one MLflow run: `servingbench report RUN_DIR --mlflow URI`.

Like the report, this reads only the run folder, so any finished (or interrupted) run can be
logged later. In the experiment named after the scenario, the MLflow run gets:

- params: scenario name and file, run id, target and variant names, and the scenario
  (slo, load, resources, ...) and each target's settings (adapter, variant, launcher)
  flattened to dotted keys, e.g. `target/fastapi-onnx-batch/adapter.batching.max_batch_size`;
- metrics, per target and step, with the step index as MLflow's step: throughput, p50, p90,
  p99, error rate, goodput, telemetry, ... as `<target>/<metric>`, the mean over repeats;
  `<metric>_ci_low` / `_ci_high` are the step's 95% interval (one repeat) or the range of the
  per-repeat values (several), as in the report. From summary.json, per target:
  `<target>/summary/<figure>` (throughput under the SLO, $ per million, peak RSS, startup);
- tags: the servingbench run id, status, git revision, and each target's step labels;
- artifacts: report.html and the run folder's tables and JSON files (steps, verdicts,
  summary, run, targets, variants: those present).

MLflow is an optional extra (`servingbench[mlflow]`: the skinny client, which leaves the
harness's numpy/pandas/pyarrow alone). MLflow 3 refuses its filesystem store unless
MLFLOW_ALLOW_FILE_STORE is set; a `file:` URI (or a plain path) given here explicitly is
taken as that consent. Other stores (http(s)://, databricks, sqlite with full mlflow) are
passed through as they are.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness import columns
from harness.errors import ServingBenchError, UnavailableError
from harness.results import RunData, load_run

# the catalogue's exported columns (NaN ones, e.g. token figures of a tensor run, are left out)
STEP_METRICS = columns.mlflow_columns()
INTERVALS = columns.interval_columns()
FLAGS = ("valid", "stable")  # logged as the fraction of repeats where true
SUMMARY_FIGURES = (
    "throughput_under_slo_rps",
    "max_throughput_rps",
    "lowest_p99_ms",
    "usd_per_million",
    "rps_per_usd_hour",
    "peak_rss_mb",
    "startup_s",
)
SCENARIO_SECTIONS = (
    "slo",
    "load",
    "resources",
    "telemetry",
    "cost",
    "dataset",
    "fidelity",
    "variants",
    "verdicts",
    "model",
)
MAX_PARAM = 6000  # MLflow's limit on a param value
MAX_TAG = 8000
MAX_KEY = 250
BATCH = 100  # MLflow's limit on params (and tags) per log_batch call; metrics: 1000
_BAD_KEY = re.compile(r"[^\w.\- ]")


class ExportError(ServingBenchError):
    """MLflow refused the run (a bad tracking URI, an unreachable server, ...)."""


def export_run(run_dir: Path, tracking_uri: str, report: Path | None = None) -> str:
    """Log `run_dir` (and its HTML report, default `<run_dir>/report.html`) to MLflow at
    `tracking_uri`; return the MLflow run id."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise UnavailableError(
            f"MLflow is not installed ({exc}): pip install 'servingbench[mlflow]'"
        ) from exc
    run_dir = Path(run_dir)
    content = collect(run_dir)
    uri = _tracking_uri(tracking_uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = content["experiment"]
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(experiment_id, run_name=content["run_name"])
        run_id: str = run.info.run_id
        timestamp = run.info.start_time
        params = [Param(k, v) for k, v in content["params"].items()]
        tags = [RunTag(k, v) for k, v in content["tags"].items()]
        metrics = [Metric(k, v, timestamp, step) for k, v, step in content["metrics"]]
        for chunk in _chunks(params, BATCH):
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tags, BATCH):
            client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(metrics, 1000):
            client.log_batch(run_id, metrics=chunk)
        report = Path(report) if report is not None else content["report"]
        if report.is_file():
            _log_as(client, run_id, report, "report.html")
        for path in content["artifacts"]:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
    except MlflowException as exc:
        raise ExportError(f"MLflow ({uri}): {exc.message}") from exc
    return run_id


def _log_as(client: Any, run_id: str, path: Path, name: str) -> None:
    """Log `path` as the artifact `name` (the report may have been written elsewhere)."""
    if path.name == name:
        client.log_artifact(run_id, str(path))
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / name)
        client.log_artifact(run_id, str(Path(tmp) / name))


def _tracking_uri(uri: str) -> str:
    """A plain path becomes a `file:` URI; a file store is allowed (see the module doc)."""
    if "://" not in uri and not uri.startswith(("file:", "databricks", "sqlite:")):
        uri = Path(uri).resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def collect(run_dir: Path) -> dict[str, Any]:
    """Everything that is logged, as plain data: experiment, run name, params, tags and
    (key, value, step) metrics. No MLflow needed."""
    data = load_run(run_dir)
    scenario = data.scenario
    name = str(data.run.get("scenario_name") or scenario.get("name") or run_dir.name)
    run_id = str(data.run.get("run_id") or run_dir.name)
    keys = _safe_names(data.target_names())
    return {
        "experiment": name,
        "run_name": run_id,
        "params": _params(data, name, run_id, keys),
        "tags": _tags(data, run_id, keys),
        "metrics": [*_step_metrics(data.steps, keys), *_summary_metrics(data, keys)],
        "artifacts": data.artifacts(),
        "report": data.report_path,
    }


def _params(data: RunData, name: str, run_id: str, keys: Mapping[str, str]) -> dict[str, str]:
    scenario = data.scenario
    params: dict[str, Any] = {
        "scenario": name,
        "scenario_file": data.run.get("scenario_file"),
        "run_id": run_id,
        "repeats": scenario.get("repeats"),
        "seed": scenario.get("seed"),
        "targets": ",".join(keys),
        "variants": ",".join(str(v.get("name")) for v in data.variants),
    }
    for section in SCENARIO_SECTIONS:
        params.update(flatten(scenario.get(section), section))
    configs = {str(t.get("name")): t for t in scenario.get("targets") or [] if isinstance(t, dict)}
    for target in data.targets:
        target_name = str(target.get("name"))
        prefix = f"target/{keys.get(target_name, _key(target_name))}"
        settings = target.get("settings")
        recorded = {
            "adapter": settings if isinstance(settings, dict) else {"kind": target.get("adapter")},
            "variant": target.get("variant"),
            "launcher": {"kind": target.get("launcher")},
        }
        params.update(flatten(recorded, prefix))  # targets.json, then the scenario's full config
        config = configs.get(target_name) or {}
        params.update(flatten({k: v for k, v in config.items() if k != "name"}, prefix))
    return {_key(k): _text(v, MAX_PARAM) for k, v in params.items() if v is not None}


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts to dotted keys; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {} if value is None else {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}"))
    return flat


def _tags(data: RunData, run_id: str, keys: Mapping[str, str]) -> dict[str, str]:
    git = (data.run.get("provenance") or {}).get("git") or {}
    tags: dict[str, Any] = {
        "servingbench.run_id": run_id,
        "servingbench.status": data.run.get("status"),
        "servingbench.run_dir": str(data.path.resolve()),
        "mlflow.source.git.commit": git.get("revision"),
    }
    steps = data.steps
    for name, key in keys.items():
        mine = steps[(steps["target"] == name) & steps["step"].map(_finite)]
        labels = {
            str(int(s)): str(label) for s, label in zip(mine["step"], mine["label"], strict=True)
        }
        if labels:
            tags[f"servingbench.steps.{key}"] = json.dumps(labels, sort_keys=True)
    return {k: _text(v, MAX_TAG) for k, v in tags.items() if v is not None}


def _step_metrics(steps: pd.DataFrame, keys: Mapping[str, str]) -> list[tuple[str, float, int]]:
    """(key, value, step) per target x step."""
    rows = steps[steps["step"].map(_finite)]
    return [
        (_key(f"{keys[str(target)]}/{name}"), value, int(group["step"].iloc[0]))
        for (target, _), group in rows.groupby(["target", "step"], sort=False)
        for name, value in step_figures(group).items()
    ]


def step_figures(group: pd.DataFrame) -> dict[str, float]:
    """One target's step over its repeats: means, intervals (or ranges), flag fractions."""
    one = len(group) == 1
    figures: dict[str, Any] = {column: group[column].mean() for column in STEP_METRICS}
    for column, (low, high) in INTERVALS.items():
        figures[f"{column}_ci_low"] = group[low].iloc[0] if one else group[column].min()
        figures[f"{column}_ci_high"] = group[high].iloc[0] if one else group[column].max()
    for column in FLAGS:
        known = [bool(v) for v in group[column] if v is not None]
        figures[column] = sum(known) / len(known) if known else None
    figures["repeats"] = len(group)
    return {name: float(value) for name, value in figures.items() if _finite(value)}


def _summary_metrics(data: RunData, keys: Mapping[str, str]) -> list[tuple[str, float, int]]:
    targets = (data.summary() or {}).get("targets") or {}
    return [
        (_key(f"{keys.get(name, _key(name))}/summary/{figure}"), float(info[figure]), 0)
        for name, info in targets.items()
        if isinstance(info, dict)
        for figure in SUMMARY_FIGURES
        if _finite(info.get(figure))
    ]


def _safe_names(names: Iterable[str]) -> dict[str, str]:
    """Target name -> a key part MLflow accepts; distinct names stay distinct."""
    safe: dict[str, str] = {}
    for name in names:
        key = _key(name).replace("/", "_")
        candidate, n = key, 1
        while candidate in safe.values():
            n += 1
            candidate = f"{key}-{n}"
        safe[name] = candidate
    return safe


def _key(text: str) -> str:
    """MLflow keys: alphanumerics, _ - . space and /; no empty, '.' or '..' path parts."""
    parts = [_BAD_KEY.sub("_", part) for part in str(text).split("/")]
    parts = [p if p.strip(". ") else "_" for p in parts]
    return "/".join(parts)[:MAX_KEY]


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
