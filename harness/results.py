"""The run folder: the single source of truth, written step by step and read in one place.

    results/<run-id>/
      run.json          scenario, provenance (versions, hardware, command, seed, git), status
      model.json        the reference model's build info
      variants.json     each variant's build and validation
      workload.json     the requests a generative workload made (lengths, count)
      targets.json      each target: settings, status, error, fidelity, startup time, log
      steps.csv         one row per target x step x repeat (appended as steps finish)
      records/<target>/<step>-r<repeat>.parquet   raw per-request records
      telemetry/<target>/<step>-r<repeat>-<sampler>.parquet   process / GPU time series
      verdicts.csv      pairwise verdicts with confidence intervals
      summary.json, summary_targets.csv   the answers, per run and per target
      report.html       the report
      logs/<target>.log server output
      tune/             a tuning run (`servingbench tune`): tune.json (objective, search,
                        spaces, the best of each stack), trials.csv (one row per trial,
                        appended as each ends) and tune/<stack>/, a run folder of that
                        stack's trials (each a target `trial-NNN` with its steps)

`RunFolder` writes it: files are rewritten atomically (a temp name, then a rename) and
steps.csv is only ever appended to, so a run interrupted at any point leaves every
finished step readable. `load_run` reads it back into `RunData`, for the report, the
verdicts, the summary, `compare` and the MLflow export alike: this module is the only one
that knows the files' names. A folder written by an older servingbench reads the same way
(missing columns are empty, missing files are noted).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import columns
from harness.errors import RunFolderError
from harness.load.records import ERROR_NAMES, StepRecords

_RUN, _MODEL, _VARIANTS, _WORKLOAD = "run.json", "model.json", "variants.json", "workload.json"
_TARGETS, _STEPS, _VERDICTS = "targets.json", "steps.csv", "verdicts.csv"
_SUMMARY, _SUMMARY_TARGETS, _REPORT = "summary.json", "summary_targets.csv", "report.html"
_TUNE, _TUNE_JSON, _TRIALS = "tune", "tune.json", "trials.csv"
# trials.csv: params and config are JSON text (a trial's values, and the whole config it ran)
TRIAL_FIELDS = ("stack", "trial", "state", "value", "probe_value", "seconds", "started_at",
                "params", "config", "reason", "target")  # fmt: skip
LOG_TAIL_LINES = 30
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def settings_without_address(settings: Any) -> Any:
    """A target's settings without where an external server listens (url, port): a port
    is picked per run and is no setting that changed."""
    if not isinstance(settings, dict):
        return settings
    return {k: v for k, v in settings.items() if k not in ("url", "port")}


def new_run_id(scenario_name: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{scenario_name}"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def write_json(path: Path, data: Any) -> None:
    """Atomically: a temp file, then a rename. On failure (a full disk) nothing is left
    half-written: the old file stays, the temp file goes. NaN and infinities are written as
    `null`: the file is JSON that any reader accepts."""
    text = json.dumps(_json_safe(data), indent=2, default=_json_default, allow_nan=False)
    write_atomically(path, text.encode())


def _json_safe(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_atomically(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temp path to write `path` through: renamed over it when the block succeeds, removed
    when it fails (a full disk, Ctrl-C), so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- writing


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunFolder:
        """A new, empty run folder. Two runs started in the same second get distinct ones
        (`-2`, `-3`, ...): making a folder is atomic, so no two runs ever share one."""
        # absolute: servers run with their own working directory and get paths from here
        base = Path(root).resolve()
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = base / (run_id if n == 1 else f"{run_id}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            (path / "logs").mkdir()
            (path / "records").mkdir()
            return cls(path)
        raise FileExistsError(f"{base}: 999 run folders named {run_id}* already")

    def log_path(self, target: str) -> Path:
        return self.path / "logs" / f"{target}.log"

    def work_dir(self, target: str) -> Path:
        """Scratch files a target's server needs (model repository, archive, config)."""
        return self.path / "work" / target

    @property
    def report_path(self) -> Path:
        return self.path / _REPORT

    # run.json
    def write_run(self, info: dict[str, Any]) -> None:
        write_json(self.path / _RUN, info)

    def read_run(self) -> dict[str, Any]:
        info: dict[str, Any] = read_json(self.path / _RUN)
        return info

    def update_run(self, **fields: Any) -> None:
        write_json(self.path / _RUN, {**self.read_run(), **fields})

    def write_model(self, info: dict[str, Any]) -> None:
        write_json(self.path / _MODEL, info)

    def write_variants(self, variants: list[dict[str, Any]]) -> None:
        write_json(self.path / _VARIANTS, variants)

    def write_workload(self, info: dict[str, Any]) -> None:
        write_json(self.path / _WORKLOAD, info)

    def read_targets(self) -> list[dict[str, Any]]:
        path = self.path / _TARGETS
        return read_json(path) if path.exists() else []

    def update_target(self, name: str, fields: dict[str, Any]) -> None:
        """Merge `fields` into this target's entry in targets.json."""
        targets = self.read_targets()
        for entry in targets:
            if entry["name"] == name:
                entry.update(fields)
                break
        else:
            targets.append({"name": name, **fields})
        write_json(self.path / _TARGETS, targets)

    @property
    def has_steps(self) -> bool:
        return (self.path / _STEPS).exists()

    def append_step(self, row: dict[str, Any]) -> None:
        """One row, whole or not at all: a write cut short (a full disk) is taken back."""
        path = self.path / _STEPS
        names = columns.names()
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=names, extrasaction="raise")
        if not path.exists():
            writer.writeheader()
        writer.writerow({k: _csv_value(row.get(k)) for k in names})
        data = memoryview(text.getvalue().encode())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                while data:  # unbuffered: a short write is seen, not hidden in a buffer
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def write_telemetry(self, target: str, step: int, repeat: int, frames: dict[str, Any]) -> None:
        """Time series of each sampler over one step: telemetry/<target>/<step>-r<n>-<name>."""
        for name, frame in frames.items():
            if frame is None or frame.empty:
                continue
            path = _telemetry_path(self.path, target, step, repeat, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(path) as tmp:
                frame.to_parquet(tmp, index=False)

    def write_records(self, target: str, step: int, repeat: int, rec: StepRecords) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = _records_path(self.path, target, step, repeat)
        path.parent.mkdir(parents=True, exist_ok=True)
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
        with replacing(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return path

    def write_verdicts(self, frame: pd.DataFrame) -> Path:
        path = self.path / _VERDICTS
        with replacing(path) as tmp:
            frame.to_csv(tmp, index=False)
        return path

    def write_summary(self, summary: dict[str, Any], per_target: pd.DataFrame) -> Path:
        with replacing(self.path / _SUMMARY_TARGETS) as tmp:
            per_target.to_csv(tmp)
        write_json(self.path / _SUMMARY, summary)
        return self.path / _SUMMARY

    # a tuning run: tune/tune.json, tune/trials.csv, tune/<stack>/ (a run folder each)
    def tune_stack(self, stack: str) -> RunFolder:
        """The run folder of one stack's trials, inside this one (made on first use)."""
        path = self.path / _TUNE / stack
        (path / "logs").mkdir(parents=True, exist_ok=True)
        (path / "records").mkdir(exist_ok=True)
        return RunFolder(path)

    def write_tune(self, info: dict[str, Any]) -> None:
        (self.path / _TUNE).mkdir(exist_ok=True)
        write_json(self.path / _TUNE / _TUNE_JSON, info)

    def read_tune(self) -> dict[str, Any]:
        path = self.path / _TUNE / _TUNE_JSON
        return read_json(path) if path.is_file() else {}

    def append_trial(self, row: dict[str, Any]) -> None:
        """One trial's row of tune/trials.csv, appended as it ends (flushed to disk)."""
        (self.path / _TUNE).mkdir(exist_ok=True)
        path = self.path / _TUNE / _TRIALS
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=TRIAL_FIELDS, extrasaction="raise")
        if not path.exists():
            writer.writeheader()
        writer.writerow({k: json.dumps(row.get(k), default=_json_default)
                         if k in ("params", "config") else _csv_value(row.get(k))
                         for k in TRIAL_FIELDS})  # fmt: skip
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text.getvalue())
            fh.flush()
            os.fsync(fh.fileno())


def owner() -> dict[str, Any]:
    """Who writes a run: this process (with its start time, so a reused PID is not it)."""
    import socket

    import psutil

    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": psutil.Process().create_time()}  # fmt: skip


def owner_alive(info: dict[str, Any]) -> bool | None:
    """Is the process that wrote this run still there? None: cannot tell (another host, or
    a folder written before owners were recorded)."""
    import socket

    import psutil

    who = info.get("owner")
    if not isinstance(who, dict) or who.get("host") != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(who["pid"]))
        return abs(proc.create_time() - float(who["started"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def mark_aborted(root: Path) -> list[Path]:
    """Runs under `root` still marked running whose servingbench process is gone (killed,
    or the machine went down): marked `aborted`, with their running targets. Returns them."""
    found = []
    for run_json in sorted(Path(root).glob(f"*/{_RUN}")):
        folder = RunFolder(run_json.parent)
        try:
            info = folder.read_run()
        except (OSError, ValueError):
            continue
        if info.get("status") != "running" or owner_alive(info) is not False:
            continue
        pid = (info.get("owner") or {}).get("pid")
        failures = [*info.get("failures", []), f"aborted: its servingbench process {pid} is gone"]
        folder.update_run(status="aborted", failures=failures)
        for target in folder.read_targets():
            if target.get("status") == "running":
                folder.update_target(target["name"], {"status": "aborted"})
        found.append(folder.path)
    return found


def _records_path(root: Path, target: str, step: int, repeat: int) -> Path:
    return root / "records" / target / f"{int(step):03d}-r{int(repeat)}.parquet"


def _telemetry_path(root: Path, target: str, step: int, repeat: int, sampler: str) -> Path:
    return root / "telemetry" / target / f"{int(step):03d}-r{int(repeat)}-{sampler}.parquet"


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 6)
    return "" if value is None else value


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class RecordsFile:
    """One step's records as read back: the frame and its measured window's bounds."""

    frame: pd.DataFrame
    warmup_ns: int | None
    window_ns: int | None


@dataclass(frozen=True)
class RunData:
    """Everything a run folder holds, typed. Files that are absent are listed in `missing`;
    steps.csv comes back with every catalogue column, whatever wrote it."""

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

    @property
    def family(self) -> str:
        """The workload family that ran: run.json says so; a folder older than that is
        a generation run when its steps measured a time to first token."""
        named = self.run.get("workload")
        if isinstance(named, str) and named:
            return named
        ttft = self.steps["ttft_p50_ms"] if "ttft_p50_ms" in self.steps else pd.Series()
        return "generate" if bool(ttft.notna().any()) else "tensor"

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

    def trusted(self) -> set[str]:
        """Targets whose numbers may be compared: finished ok, answered correctly, and
        measured without a confound the run found (`confound`: e.g. CPUs shared with a
        target that ran beside it on the same host)."""
        return {
            str(t.get("name"))
            for t in self.targets
            if t.get("status") == "ok"
            and (t.get("fidelity") or {}).get("passed")
            and not t.get("confound")
        }

    @property
    def stability(self) -> dict[str, Any]:
        """The scenario's stability rule (window_s, windows, tolerance, percentile, ...)."""
        load = self.scenario.get("load")
        value = load.get("stability") if isinstance(load, dict) else None
        return value if isinstance(value, dict) else {}

    # the other files, read on demand

    def workload(self) -> dict[str, Any] | None:
        """workload.json (a generative run's requests), or None."""
        found = self._json_or_none(_WORKLOAD)
        return found if isinstance(found, dict) else None

    def summary(self) -> dict[str, Any] | None:
        found = self._json_or_none(_SUMMARY)
        return found if isinstance(found, dict) else None

    def verdicts_csv(self) -> pd.DataFrame | None:
        """verdicts.csv as text (a target called "NA" stays a name), or None if absent."""
        path = self.path / _VERDICTS
        if not path.is_file():
            return None
        if path.stat().st_size == 0:
            return pd.DataFrame()
        return pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")

    def records_path(self, target: str, step: Any, repeat: Any) -> Path | None:
        """The records file of one step, if it is there (names come from files we did not
        write: a path outside the folder is refused)."""
        if not (_finite(step) and _finite(repeat)):
            return None
        path = _records_path(self.path, str(target), int(step), int(repeat))
        return path if _inside(path, self.path) and path.is_file() else None

    def records(
        self, target: str, step: Any, repeat: Any, names: list[str] | None = None
    ) -> RecordsFile | None:
        """One step's records (only `names`, those that exist), or None without a file."""
        import pyarrow.parquet as pq

        path = self.records_path(target, step, repeat)
        if path is None:
            return None
        with pq.ParquetFile(path) as parquet:
            present = parquet.schema_arrow.names
            wanted = None if names is None else [n for n in names if n in present]
            table = parquet.read(columns=wanted)
            meta = parquet.schema_arrow.metadata or {}
        return RecordsFile(table.to_pandas(), _int(meta.get(b"warmup_ns")),
                           _int(meta.get(b"window_ns")))  # fmt: skip

    def telemetry_path(self, target: str, step: int, repeat: int, sampler: str) -> Path | None:
        path = _telemetry_path(self.path, target, step, repeat, sampler)
        return path if _inside(path, self.path) and path.is_file() else None

    def log_tail(self, target: dict[str, Any], lines: int = LOG_TAIL_LINES) -> str | None:
        """The last lines of a target's server log, or None when there is no log."""
        rel = target.get("log")
        if not isinstance(rel, str) or not rel:
            return None
        path = self.path / rel
        if not _inside(path, self.path) or not path.is_file():
            return None
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])

    def listing(self, exclude: Path | None = None) -> list[tuple[str, int, int]]:
        """(relative path, file count, bytes): top-level files, one row per sub-folder."""
        rows: list[tuple[str, int, int]] = []
        skip = exclude.resolve() if exclude is not None else None
        for entry in sorted(self.path.iterdir()):
            if skip is not None and entry.resolve() == skip:
                continue
            if entry.is_dir():
                for sub in sorted([entry, *(p for p in entry.rglob("*") if p.is_dir())]):
                    files = [p for p in sub.iterdir() if p.is_file()]
                    if files:
                        rel = sub.relative_to(self.path).as_posix() + "/"
                        rows.append((rel, len(files), sum(p.stat().st_size for p in files)))
            elif entry.is_file():
                rows.append((entry.name, 1, entry.stat().st_size))
        return rows

    @property
    def report_path(self) -> Path:
        return self.path / _REPORT

    def artifacts(self) -> list[Path]:
        """The folder's tables and JSON files that exist (what an export attaches)."""
        names = (_STEPS, _VERDICTS, _SUMMARY, _RUN, _TARGETS, _VARIANTS, _WORKLOAD)
        return [self.path / n for n in names if (self.path / n).is_file()]

    def tuning(self) -> TuningData | None:
        """A tuning run's tune/ folder (its trials and search), or None for a plain run."""
        info = self._json_or_none(f"{_TUNE}/{_TUNE_JSON}")
        if not isinstance(info, dict):
            return None
        return TuningData(self.path / _TUNE, info, read_trials(self.path / _TUNE / _TRIALS))

    def _json_or_none(self, name: str) -> Any:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return None


@dataclass(frozen=True)
class TuningData:
    """tune/ of a tuning run: tune.json, trials.csv, and each stack's run folder."""

    path: Path
    info: dict[str, Any]
    trials: pd.DataFrame  # TRIAL_FIELDS; params and config parsed into dicts

    def stack_run(self, stack: str) -> RunData | None:
        """The run folder of one stack's trials (its steps, records, logs), or None."""
        path = self.path / stack
        if not _inside(path, self.path) or not (path / _RUN).is_file():
            return None
        return load_run(path)


def read_trials(path: Path) -> pd.DataFrame:
    """trials.csv as a frame: numbers as floats, params/config as dicts; empty if none."""
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame({k: pd.Series(dtype=object) for k in TRIAL_FIELDS})
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    for name in TRIAL_FIELDS:
        if name not in frame:
            frame[name] = ""
    for name in ("trial", "value", "probe_value", "seconds"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    for name in ("params", "config"):
        frame[name] = pd.Series([_json_dict(v) for v in frame[name]], index=frame.index,
                                dtype=object)  # fmt: skip
    return frame


def _json_dict(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def load_run(run_dir: Path) -> RunData:
    """Read a run folder; RunFolderError when it is not one (or a file is not JSON)."""
    run_dir = Path(run_dir)
    if not (run_dir / _RUN).is_file():
        raise RunFolderError(f"{run_dir}: no run.json, so this is not a run folder")
    missing: list[str] = []
    run = _read_json(run_dir / _RUN, {}, missing)
    model = _read_json(run_dir / _MODEL, {}, missing)
    variants = _read_json(run_dir / _VARIANTS, [], missing)
    targets = _read_json(run_dir / _TARGETS, [], missing)
    return RunData(
        path=run_dir,
        run=run if isinstance(run, dict) else {},
        model=model if isinstance(model, dict) else {},
        variants=[v for v in variants if isinstance(v, dict)],
        targets=[t for t in targets if isinstance(t, dict)],
        steps=read_steps(run_dir / _STEPS),
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
    names = columns.names()
    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return _normalise(pd.DataFrame({c: pd.Series(dtype=str) for c in names}))
    # All text first, so a target called "NA" stays a name; numbers are converted below.
    frame = pd.read_csv(
        csv_path, dtype=str, keep_default_na=False, on_bad_lines="skip", encoding="utf-8"
    )
    return _normalise(frame)


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in columns.catalogue():
        name = column.name
        if name not in frame.columns:
            frame[name] = ""
        if column.kind == "text":
            frame[name] = frame[name].fillna("").astype(str)
        elif column.kind == "number":
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        elif column.kind == "bool":
            text = frame[name].astype(str).str.strip().str.lower()
            frame[name] = text.isin(["true", "1", "yes"])
        else:
            frame[name] = frame[name].map(_tristate).astype(object)
    # rows written before `eligible` existed: a step could be ranked when it was valid
    unknown = frame["eligible"].isna()
    frame.loc[unknown, "eligible"] = frame.loc[unknown, "valid"]
    frame.loc[unknown, "ineligible_reason"] = frame.loc[unknown, "invalid_reason"]
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


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(raw: Any) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _inside(path: Path, root: Path) -> bool:
    """Whether `path` stays inside `root` (names come from files we did not write)."""
    return path.resolve().is_relative_to(root.resolve())
