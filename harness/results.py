"""The run folder: the single source of truth, written step by step.

    results/<run-id>/
      run.json          scenario, provenance (versions, hardware, command, seed, git), status
      model.json        the reference model's build info
      variants.json     each variant's build and validation
      targets.json      each target: settings, status, error, fidelity, startup time, log
      steps.csv         one row per target x step x repeat (appended as steps finish)
      records/<target>/<step>-r<repeat>.parquet   raw per-request records
      telemetry/<target>/<step>-r<repeat>-<sampler>.parquet   process / GPU time series
      verdicts.csv      pairwise verdicts with confidence intervals
      logs/<target>.log server output

Files are rewritten atomically (write to a temp name, then rename) and steps.csv is only
ever appended to, so a run interrupted at any point leaves every finished step readable.
The report and any later comparison read only this folder.
"""

from __future__ import annotations

import csv
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness.llm.metrics import LLM_COLUMNS, LLM_SERVER_COLUMNS
from harness.load.records import ERROR_NAMES, StepRecords

STEP_COLUMNS = [
    "target",
    "adapter",
    "variant",
    "launcher",
    "profile",
    "level",
    "duration_s",
    "requests",
    "errors",
    "throughput_rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "client_cpu_pct",
    "achieved_rate_ratio",
    # beyond the minimum: what a reader needs to trust or question a row
    "step",
    "repeat",
    "label",
    "mode",
    "requested_rate",
    "concurrency",
    "error_rate",
    "goodput_rps",
    "slo_ms",
    "send_lag_p99_ms",
    "loadgen_saturated",
    "loadgen_note",
    "connections",
    "started_at",
    # how sure we are (harness/confidence.py) and whether the step counts
    "p50_ms_ci_low",
    "p50_ms_ci_high",
    "p99_ms_ci_low",
    "p99_ms_ci_high",
    "throughput_rps_ci_low",
    "throughput_rps_ci_high",
    "cv",
    "stable",
    "valid",
    "invalid_reason",
    "insufficient",
    "slo_percentile_ms",
    # the server's own view of the same step, where its framework reports one
    "server_queue_ms",
    "server_compute_ms",
    "server_batch_avg",
    # LLM servers: their own token counters and phase times (llama.cpp, vLLM)
    *LLM_SERVER_COLUMNS,
    # streamed generations (harness/llm/metrics.py; empty for other models)
    *LLM_COLUMNS,
    # telemetry sampled beside the step (harness/telemetry)
    "server_cpu_pct",
    "server_rss_mb",
    "gpu_util_pct",
    "gpu_mem_mb",
    "gpu_power_w",
    "gpu_energy_j",
    "energy_per_inference_mj",
    "energy_per_output_token_mj",
]


def new_run_id(scenario_name: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{scenario_name}"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunFolder:
        # absolute: servers run with their own working directory and get paths from here
        path = (Path(root) / run_id).resolve()
        path.mkdir(parents=True, exist_ok=False)
        (path / "logs").mkdir()
        (path / "records").mkdir()
        return cls(path)

    def log_path(self, target: str) -> Path:
        return self.path / "logs" / f"{target}.log"

    def write(self, name: str, data: Any) -> None:
        write_json(self.path / name, data)

    def read(self, name: str) -> Any:
        return read_json(self.path / name)

    def update_target(self, name: str, fields: dict[str, Any]) -> None:
        """Merge `fields` into this target's entry in targets.json."""
        path = self.path / "targets.json"
        targets: list[dict[str, Any]] = read_json(path) if path.exists() else []
        for entry in targets:
            if entry["name"] == name:
                entry.update(fields)
                break
        else:
            targets.append({"name": name, **fields})
        write_json(path, targets)

    def append_step(self, row: dict[str, Any]) -> None:
        path = self.path / "steps.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=STEP_COLUMNS, extrasaction="raise")
            if new:
                writer.writeheader()
            writer.writerow({k: _csv_value(row.get(k)) for k in STEP_COLUMNS})
            fh.flush()
            os.fsync(fh.fileno())

    def write_telemetry(self, target: str, step: int, repeat: int, frames: dict[str, Any]) -> None:
        """Time series of each sampler over one step: telemetry/<target>/<step>-r<n>-<name>."""
        folder = self.path / "telemetry" / target
        for name, frame in frames.items():
            if frame is None or frame.empty:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{step:03d}-r{repeat}-{name}.parquet"
            frame.to_parquet(path.with_suffix(".tmp"), index=False)
            os.replace(path.with_suffix(".tmp"), path)

    def write_records(self, target: str, step: int, repeat: int, rec: StepRecords) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = self.path / "records" / target
        folder.mkdir(parents=True, exist_ok=True)
        cols = rec.to_columns()
        n = len(rec)
        table = pa.table(
            {
                # who and where, on every row, so merged records stay self-describing
                "target": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [target]),
                "step": pa.array(np.full(n, step, np.int16)),
                "repeat": pa.array(np.full(n, repeat, np.int16)),
                **cols,
                "in_window": rec.measured(),
                "error_name": pa.DictionaryArray.from_arrays(
                    pa.array(rec.error.astype(np.int32)),
                    [ERROR_NAMES[i] for i in range(len(ERROR_NAMES))],
                ),
            }
        )
        # the measured window's bounds travel with the records (verdicts re-cut blocks)
        table = table.replace_schema_metadata(
            {"warmup_ns": str(rec.warmup_ns), "window_ns": str(rec.window_ns)}
        )
        path = folder / f"{step:03d}-r{repeat}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        return path


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 6)
    return "" if value is None else value
