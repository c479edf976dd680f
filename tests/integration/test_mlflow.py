"""`servingbench report RUN --mlflow URI`: a run folder logged to a real MLflow file store,
read back with MlflowClient. Skips when the `mlflow` extra is not installed."""

from __future__ import annotations

import math
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.results import RunFolder
from harness.summary import write_summary
from tests.harness.test_report import EVIL_TARGET, _base_folder, _records, _step_row, _target

if find_spec("mlflow") is None:
    REASON = "mlflow is not installed: pip install 'servingbench[mlflow]' (nox -s tests does)"
    print(REASON)
    pytest.skip(REASON, allow_module_level=True)

ARTIFACTS = {
    "report.html",
    "steps.csv",
    "verdicts.csv",
    "summary.json",
    "run.json",
    "targets.json",
    "variants.json",
}


def _run_folder(tmp_path: Path) -> RunFolder:
    """fast: two steps, two repeats each; a hostile target name: one step, one repeat."""
    folder = _base_folder(tmp_path / "results")
    batching = {"kind": "fastapi", "workers": 1, "batching": {"max_batch_size": 8}}
    folder.update_target("fast", _target("fast", settings=batching))
    folder.update_target(EVIL_TARGET, _target(EVIL_TARGET))
    rates = {(0, 0): 100.0, (0, 1): 110.0, (1, 0): 200.0, (1, 1): 220.0}
    for (step, repeat), rps in rates.items():
        more = {
            "server_cpu_pct": 50.0 + repeat,
            "server_rss_mb": 100.0 + step,
            "slo_percentile_ms": 5.0 + step,  # p99, within the 20 ms SLO
        }
        folder.append_step(_step_row("fast", step, repeat, rps, 5.0 + step, **more))
        folder.write_records("fast", step, repeat, _records(400, 2.0, seed=step * 2 + repeat))
    folder.append_step(_step_row(EVIL_TARGET, 0, 0, 50.0, 9.0))
    folder.write_records(EVIL_TARGET, 0, 0, _records(400, 3.0, seed=9))
    (folder.path / "verdicts.csv").write_text("label,target_a,target_b,metric\n")
    write_summary(folder.path)
    return folder


def _history(client: Any, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_report_logs_params_metrics_and_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # restored afterwards
    folder = _run_folder(tmp_path)
    store = (tmp_path / "mlruns").as_uri()
    elsewhere = tmp_path / "shared" / "benchmark.html"
    assert main(["report", str(folder.path), "-o", str(elsewhere), "--mlflow", store]) == 0

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("report-test")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "20250101-000000-report-test"

    params = run.data.params
    assert params["scenario"] == "report-test" and params["run_id"] == run.info.run_name
    assert params["targets"] == f"fast,{EVIL_TARGET}"  # the names as they are, in a value
    assert params["variants"] == "onnx,onnx-int8"
    assert params["slo.latency_ms"] == "20.0" and params["slo.percentile"] == "99.0"
    assert params["target/fast.adapter.kind"] == "fastapi"
    assert params["target/fast.adapter.batching.max_batch_size"] == "8"
    assert params["target/fast.variant"] == "onnx"
    assert params["target/fast.launcher.kind"] == "process"

    # per target x step, MLflow's step = the step index; two repeats: mean and range
    assert _history(client, run_id, "fast/throughput_rps") == {0: 105.0, 1: 210.0}
    assert _history(client, run_id, "fast/throughput_rps_ci_low") == {0: 100.0, 1: 200.0}
    assert _history(client, run_id, "fast/throughput_rps_ci_high") == {0: 110.0, 1: 220.0}
    assert _history(client, run_id, "fast/p99_ms") == {0: 5.0, 1: 6.0}
    assert _history(client, run_id, "fast/repeats") == {0: 2.0, 1: 2.0}
    assert _history(client, run_id, "fast/server_cpu_pct") == {0: 50.5, 1: 50.5}
    assert _history(client, run_id, "fast/valid") == {0: 1.0, 1: 1.0}
    for key in ("fast/error_rate", "fast/goodput_rps", "fast/p50_ms_ci_low", "fast/p50_ms"):
        assert set(_history(client, run_id, key)) == {0, 1}, key
    # summary.json figures: best throughput under the SLO, peak memory, startup
    metrics = run.data.metrics
    # a level's throughput is the mean of its repeats (200 and 220), not its best repeat
    assert metrics["fast/summary/throughput_under_slo_rps"] == 210.0
    assert metrics["fast/summary/peak_rss_mb"] == 101.0
    assert metrics["fast/summary/startup_s"] == 1.25
    # a name MLflow would refuse is made a valid key; one repeat: its own 95% interval
    evil = "t_img src_x onerror_alert_1__"
    assert _history(client, run_id, f"{evil}/throughput_rps") == {0: 50.0}
    assert _history(client, run_id, f"{evil}/throughput_rps_ci_low") == {0: 49.0}
    assert math.isclose(metrics[f"{evil}/p99_ms_ci_high"], 9.9)
    assert run.data.tags["servingbench.steps.fast"] == '{"0": "closed c=1", "1": "closed c=8"}'
    assert run.data.tags["mlflow.source.git.commit"] == "abc1234"

    assert {a.path for a in client.list_artifacts(run_id)} == ARTIFACTS
    local = Path(client.download_artifacts(run_id, "report.html", str(tmp_path / "dl")))
    assert local.read_bytes() == elsewhere.read_bytes()  # the report, logged as report.html


def test_a_bad_tracking_uri_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _run_folder(tmp_path)
    assert main(["report", str(folder.path), "--mlflow", "nosuchscheme://x"]) == 1
    assert "error: MLflow" in capsys.readouterr().err
