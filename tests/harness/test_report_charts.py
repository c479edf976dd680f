"""The report's resource and time charts, from synthetic run folders written with RunFolder."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.load.records import ERR_NONE, ERR_TIMEOUT, StepRecords
from harness.report import charts, interactive
from harness.report.data import aggregate_steps
from harness.report.resources_view import accuracy_points, reference_accuracy, resources_chart
from harness.report.timeline import heaviest_closed_label, timeline, window_percentiles
from harness.results import RunFolder, load_run
from tests.harness.test_report import _base_folder, _records, _step_row, _target


def _png_size(uri: str) -> tuple[int, int]:
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        return image.size


def _slowdown(n: int = 2000, errors: int = 0) -> StepRecords:
    """One request per ms for 2 s: 1 ms each in the first second, 10 ms in the second."""
    intended = np.arange(n, dtype=np.int64) * 1_000_000
    latency = np.where(intended < 1_000_000_000, 1_000_000, 10_000_000).astype(np.int64)
    error = np.zeros(n, dtype=np.int8)
    error[n // 2 : n // 2 + errors] = ERR_TIMEOUT
    return StepRecords(
        intended_ns=intended,
        sent_ns=intended,
        end_ns=intended + latency,
        status=np.where(error == ERR_NONE, 200, 0).astype(np.int16),
        error=error,
        warmup_ns=500_000_000,
        window_ns=2_000_000_000,
        wall_t0=1.7e9,
    )


def test_window_percentiles_follow_a_slowdown(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    path = folder.write_records("a", 0, 0, _slowdown(errors=50))
    frame, warmup_s = window_percentiles(path)
    assert warmup_s == pytest.approx(0.5)
    assert frame["requests"].sum() == 2000 - 50  # failed requests are left out
    assert np.allclose(np.diff(frame["t_s"]), 0.1) and frame["t_s"].iloc[0] == pytest.approx(0.05)
    early = frame[frame["t_s"] < 0.95]
    late = frame[(frame["t_s"] > 1.15) & (frame["t_s"] < 1.95)]
    assert np.allclose(early[["p50_ms", "p99_ms"]], 1.0)
    assert np.allclose(late[["p50_ms", "p99_ms"]], 10.0)


def _sweep_folder(tmp_path: Path) -> RunFolder:
    """Targets a and b: closed c=1 (step 0), closed c=8 (step 1), open 100/s (step 2)."""
    folder = _base_folder(tmp_path)
    for name in ("a", "b"):
        folder.update_target(name, _target(name))
        for step in (0, 1):
            folder.append_step(_step_row(name, step, 0, 100.0 * (step + 1), 5.0))
            folder.write_records(name, step, 0, _records(300, 2.0, seed=step))
        open_row = _step_row(name, 1, 0, 100.0, 5.0, mode="open", concurrency=None)
        folder.append_step({**open_row, "step": 2, "label": "open 100/s", "requested_rate": 100})
        folder.write_records(name, 2, 0, _records(300, 2.0, seed=2))
    return folder


def test_timeline_shows_the_heaviest_closed_step_with_its_telemetry(tmp_path: Path) -> None:
    folder = _sweep_folder(tmp_path)
    t = np.arange(0.1, 2.0, 0.1)
    process = pd.DataFrame({"t_s": t, "cpu_pct": 90.0, "rss_mb": 100.0, "processes": 1})
    gpu = pd.DataFrame({"t_s": t, "util_pct": 50.0, "mem_used_mb": 900.0, "power_w": 70.0})
    folder.write_telemetry("a", 1, 0, {"process": process, "gpu": gpu})
    folder.write_telemetry("a", 0, 0, {"process": process})  # another step: not shown
    (folder.path / "telemetry" / "b").mkdir()
    (folder.path / "telemetry" / "b" / "001-r0-process.parquet").write_bytes(b"not parquet")
    data = load_run(folder.path)
    assert heaviest_closed_label(data.steps) == "closed c=8"

    shown = timeline(data)  # the series, for the interactive charts; no PNG
    assert shown is not None and shown.label == "closed c=8" and shown.chart is None
    assert set(shown.process) == {"a"} and set(shown.gpu) == {"a"}
    spec = interactive.server_load(shown.process, shown.gpu, ["a", "b"], set(), shown.label)
    assert spec is not None and len(spec["vconcat"]) == 3  # CPU, GPU utilisation, power
    shown = timeline(data, static=True)
    assert shown is not None and shown.gpu and shown.chart is not None
    assert _png_size(shown.chart) == (900, 760)  # three panels: latency, CPU, GPU
    assert len(shown.notes) == 1 and shown.notes[0].startswith("b: process telemetry unreadable")

    (folder.path / "telemetry" / "a" / "001-r0-gpu.parquet").unlink()
    shown = timeline(load_run(folder.path), static=True)
    assert shown is not None and shown.chart is not None and not shown.gpu
    assert _png_size(shown.chart) == (900, 560)  # latency and CPU


def test_timeline_needs_a_closed_step(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.update_target("a", _target("a"))
    folder.append_step(_step_row("a", 0, 0, 100.0, 5.0, mode="open", concurrency=None))
    data = load_run(folder.path)
    assert timeline(data) is None
    agg = aggregate_steps(data.steps)
    assert charts.throughput_vs_concurrency(agg, ["a"]) is None


def test_throughput_vs_concurrency_draws_closed_steps(tmp_path: Path) -> None:
    data = load_run(_sweep_folder(tmp_path).path)
    agg = aggregate_steps(data.steps)
    assert charts.throughput_vs_concurrency(agg, ["a", "b"]) is not None
    assert charts.throughput_vs_concurrency(agg, ["not-a-target"]) is None


def test_accuracy_vs_speed_counts_only_trusted_targets(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)  # variants: onnx (97.7%), onnx-int8 (90%)
    wrong = {"passed": False, "samples": 64, "max_abs_diff": 1.0, "agreement": 0.5}
    targets = {
        "floor": (_target("floor", baseline=True), [9000.0]),
        "a": (_target("a"), [100.0, 300.0]),
        "wrong": (_target("wrong", fidelity=wrong), [5000.0]),
        "q": (_target("q", variant="onnx-int8"), [400.0, 800.0]),
    }
    for name, (info, rates) in targets.items():
        folder.update_target(name, info)
        for step, rps in enumerate(rates):
            # q's faster step was throttled by the load generator: it does not count
            invalid = {"valid": False, "invalid_reason": "client CPU 99%"} if rps == 800 else {}
            folder.append_step(_step_row(name, step, 0, rps, 5.0, **invalid))
    data = load_run(folder.path)
    points = accuracy_points(data, aggregate_steps(data.steps))
    assert points == [("onnx", "a", 300.0, 0.977), ("onnx-int8", "q", 400.0, 0.90)]
    assert reference_accuracy(data) == 0.977
    assert charts.accuracy_vs_speed(points, 0.977) is not None
    assert charts.accuracy_vs_speed([("onnx", "a", float("nan"), 0.9)], None) is None


def test_startup_and_memory_leave_out_the_baseline_and_missing_data(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.update_target("floor", _target("floor", baseline=True, startup_s=0.0))
    folder.update_target("a", _target("a", startup_s=None))
    folder.append_step(_step_row("floor", 0, 0, 100.0, 5.0, server_rss_mb=50.0))
    folder.append_step(_step_row("a", 0, 0, 100.0, 5.0))
    assert resources_chart(load_run(folder.path)) is None  # only the baseline has figures

    folder.append_step(_step_row("a", 1, 0, 100.0, 5.0, server_rss_mb=120.0))
    uri = resources_chart(load_run(folder.path))
    assert uri is not None
    width, height = _png_size(uri)
    assert (width, height) == (900, 240)  # one panel (memory), one target: the minimum height
