"""End to end through the CLI: real servers, real sockets, a real run folder and report."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from harness.net import free_port
from tests.conftest import REPO, client_cpus

pytestmark = pytest.mark.usefixtures("no_orphans")


def scenario_text(wrong_port: int, dead_port: int, duration: float = 1.0) -> str:
    return f"""\
name: e2e
description: "end-to-end <b>test</b>"
model: {{name: digits-cnn}}
dataset: {{samples: 32}}
fidelity: {{samples: 16}}
slo: {{latency_ms: 50}}
resources: {{server_cpus: {_cpus(0)}, client_cpus: {_cpus(1)}}}
load:
  duration_s: {duration}
  max_duration_s: {2 * duration}
  warmup_s: 0.2
  target_warmup_s: 0.3
  profile:
    kind: sweep
    steps:
      - {{mode: closed, concurrency: 4}}
      - {{mode: open, rate: 100, arrival: constant}}
targets:
  - name: floor
    adapter: {{kind: inprocess}}
    variant: onnx
  - name: fastapi-onnx-batch
    adapter: {{kind: fastapi, batching: {{max_batch_size: 8, max_delay_ms: 1}}}}
    variant: onnx
  - name: never-starts
    adapter: {{kind: http}}
    variant: onnx
    launcher: {{kind: external, url: "http://127.0.0.1:{dead_port}"}}
    startup_timeout_s: 1
  - name: wrong-answers
    adapter: {{kind: http}}
    variant: onnx
    launcher: {{kind: external, url: "http://127.0.0.1:{wrong_port}"}}
  - name: torchserve-torchscript-batch
    adapter: {{kind: torchserve, batch_size: 8, max_batch_delay_ms: 2}}
    variant: torchscript
"""


def _cpus(index: int) -> str:
    cpus = sorted(os.sched_getaffinity(0))
    return "null" if len(cpus) < 2 else f"[{cpus[index]}]"


def run_cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, build_cache: Path):
    """One real run of five targets, shared by the assertions below."""
    from tests.conftest import running

    tmp = tmp_path_factory.mktemp("e2e")
    wrong_port = free_port()
    zeros = json.dumps([[0.0] * 10])
    argv = [
        sys.executable,
        "-m",
        "harness.nullserver",
        "--port",
        str(wrong_port),
        "--outputs",
        zeros,
    ]
    with running(argv, f"http://127.0.0.1:{wrong_port}/health"):
        path = tmp / "e2e.yaml"
        path.write_text(scenario_text(wrong_port, free_port()))
        result = run_cli("run", str(path), "--out", str(tmp / "results"))
    run_dir = next((tmp / "results").iterdir())
    return result, run_dir


def test_exit_code_and_failures_reported(finished_run) -> None:
    result, run_dir = finished_run
    assert result.returncode == 1, result.stderr
    assert f"run folder: {run_dir}" in result.stdout
    assert "report: " in result.stdout
    assert "never-starts" in result.stderr and "wrong-answers" in result.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["provenance"]["versions"]["torch"]
    assert info["provenance"]["git"]["revision"]
    assert len(info["failures"]) == 2
    # where the time went: a line before the paths, and its figures in run.json
    assert info["timings"]["model and variants"] > 0 and info["timings"]["target floor"] > 0
    line = next(x for x in result.stdout.splitlines() if x.startswith("time: "))
    assert "model and variants" in line and "5 targets" in line and "report" in line
    calibration = info["calibration"]  # the client's own overhead, measured first
    assert 0 < calibration["client_cpu_us_per_request"] < 500
    assert 0 < calibration["floor_p50_ms"] < 5


def test_target_that_fails_to_start_does_not_stop_the_others(finished_run) -> None:
    _, run_dir = finished_run
    targets = {t["name"]: t for t in json.loads((run_dir / "targets.json").read_text())}
    assert targets["never-starts"]["status"] == "failed"
    assert "not ready after 1 s" in targets["never-starts"]["error"]
    for name in ("floor", "fastapi-onnx-batch", "torchserve-torchscript-batch"):
        assert targets[name]["status"] == "ok", targets[name]
        assert targets[name]["fidelity"]["passed"], targets[name]["fidelity"]
    assert targets["fastapi-onnx-batch"]["startup_s"] > 0
    # the served stacks' own versions: packages, and the JVM TorchServe's frontend ran on
    assert targets["fastapi-onnx-batch"]["stack"]["fastapi"]
    assert targets["fastapi-onnx-batch"]["stack"]["uvicorn"]
    torchserve = targets["torchserve-torchscript-batch"]["stack"]
    assert torchserve["torchserve"] and torchserve["java"].split(".")[0].isdigit()


def test_wrong_answers_are_flagged(finished_run) -> None:
    _, run_dir = finished_run
    targets = {t["name"]: t for t in json.loads((run_dir / "targets.json").read_text())}
    fidelity = targets["wrong-answers"]["fidelity"]
    assert fidelity["passed"] is False
    assert "differ from the reference" in fidelity["message"]
    assert fidelity["agreement"] < 0.5


def test_steps_csv_and_records(finished_run) -> None:
    _, run_dir = finished_run
    steps = pd.read_csv(run_dir / "steps.csv")
    required = [
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
    ]
    with (run_dir / "steps.csv").open() as fh:
        assert next(csv.reader(fh))[: len(required)] == required
    # 4 targets reached the load (wrong-answers is flagged, not skipped) x 2 steps
    assert sorted(set(steps.target)) == [
        "fastapi-onnx-batch",
        "floor",
        "torchserve-torchscript-batch",
        "wrong-answers",
    ]
    assert len(steps) == 8
    ok = steps[steps.target != "wrong-answers"]
    assert (ok.errors == 0).all() and (ok.requests > 0).all()
    open_rows = steps[steps["mode"] == "open"]
    # 100/s constant cannot give a p99's 1,000 samples by its 2 s maximum: it runs to that
    # maximum (whole schedule windows: exactly 200 requests), and says what it lacked
    assert np.allclose(open_rows.requests, 200)
    assert (open_rows.ended_by == "max_duration").all() and (open_rows.samples_needed == 1000).all()
    closed_rows = steps[(steps["mode"] == "closed") & (steps.target != "wrong-answers")]
    assert closed_rows.ended_by.isin(["duration", "samples", "max_duration"]).all()
    short = closed_rows[closed_rows.ended_by == "max_duration"]  # a slow stack at c=4
    assert (short.samples_needed == 1000).all() and short.p99_ms.isna().all()
    assert closed_rows.loc[closed_rows.target == "floor", "ended_by"].iloc[0] == "duration"
    assert (open_rows.achieved_rate_ratio > 0.95).all()
    has_p99 = steps.p99_ms.notna()
    assert (steps.p50_ms[has_p99] <= steps.p99_ms[has_p99]).all()
    assert (steps.p99_ms[has_p99] <= steps.max_ms[has_p99]).all()
    # 100 requests are too few for a p99 (fewer than 10 beyond it): left out, and said so
    assert open_rows.p99_ms.isna().all() and (open_rows.insufficient == "p99").all()
    assert (open_rows.p50_ms_ci_low <= open_rows.p50_ms).all()
    assert (open_rows.p50_ms <= open_rows.p50_ms_ci_high).all()
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    assert set(verdicts.verdict) <= {
        "faster",
        "slower",
        "no significant difference",
        "insufficient data",
    }
    floor_vs = verdicts[(verdicts.target_a == "floor") & (verdicts.metric == "p50_ms")]
    assert (floor_vs[floor_vs.trusted].verdict == "faster").all()  # the bare model wins
    # the constant-answer server is fast because it is wrong: its verdicts are not trusted
    assert not verdicts[verdicts.target_b == "wrong-answers"].trusted.any()
    records = pd.read_parquet(run_dir / "records" / "fastapi-onnx-batch" / "001-r0.parquet")
    assert {"intended_ns", "sent_ns", "end_ns", "status", "error", "in_window"} <= set(records)
    assert records.in_window.sum() == 200  # 100/s for its 2 s maximum
    assert (records.end_ns >= records.sent_ns).all()
    assert (run_dir / "logs" / "fastapi-onnx-batch.log").exists()
    # the server's process tree was sampled during every step of a launched server
    served = steps[steps.target == "fastapi-onnx-batch"]
    assert (served.server_cpu_pct > 0).all() and (served.server_rss_mb > 50).all()
    assert (run_dir / "telemetry" / "fastapi-onnx-batch" / "000-r0-process.parquet").exists()
    # TorchServe's own view of the same steps sits next to the client's
    ts = steps[steps.target == "torchserve-torchscript-batch"]
    assert (ts.server_queue_ms > 0).all() and (ts.server_compute_ms > 0).all()
    assert (ts.server_compute_ms < ts.mean_ms).all()  # the server sees part of the latency


def test_report_written_and_escaped(finished_run) -> None:
    _, run_dir = finished_run
    html = (run_dir / "report.html").read_text()
    # every chart drawn from an inline Vega-Lite spec (PNGs only under --static)
    assert (
        "fastapi-onnx-batch" in html
        and '<script type="application/json" id="vl-latency-spec">' in html
    )
    assert "&lt;b&gt;test&lt;/b&gt;" in html and "<b>test</b>" not in html
    # the report re-renders from the folder alone
    out = run_dir / "again.html"
    result = run_cli("report", str(run_dir), "-o", str(out))
    assert result.returncode == 0 and out.exists()


def test_batching_really_batches(tmp_path: Path, bundle) -> None:
    """Under concurrency the FastAPI batcher runs fewer batches than requests."""
    from adapters.fastapi import BatchingConfig, FastapiAdapter, FastapiConfig
    from harness.launchers.base import LaunchRequest
    from harness.launchers.process import ProcessConfig, ProcessLauncher
    from harness.load.plan import StepPlan
    from harness.load.worker import LoadProcess
    from harness.scenario import VariantsSpec
    from harness.variants import build_variant

    variant = build_variant("onnx", bundle, VariantsSpec())
    adapter = FastapiAdapter(
        FastapiConfig(kind="fastapi", batching=BatchingConfig(max_batch_size=8, max_delay_ms=2))
    )
    launcher = ProcessLauncher(ProcessConfig())
    server = launcher.start(
        LaunchRequest("b", adapter, variant, tmp_path, tmp_path / "b.log", None, 1, 60)
    )
    try:
        endpoint = adapter.client(server).endpoint(bundle.x_test[:16])
        with LoadProcess(client_cpus()) as load:
            rec = load.run(endpoint, StepPlan(mode="closed", concurrency=16, duration_s=1))
        stats = httpx.get(f"{server.base_url}/stats").json()
    finally:
        launcher.stop(server)
    assert (rec.error == 0).all()
    assert stats["items"] >= len(rec)
    assert stats["items"] / stats["batches"] > 2, stats


def test_ctrl_c_keeps_finished_steps_and_stops_servers(tmp_path: Path, build_cache) -> None:
    path = tmp_path / "long.yaml"
    text = scenario_text(free_port(), free_port(), duration=3.0)
    text = text[: text.index("  - name: floor")] + (
        "  - name: fastapi-onnx\n    adapter: {kind: fastapi}\n    variant: onnx\n"
        "  - name: fastapi-eager\n    adapter: {kind: fastapi}\n    variant: eager\n"
    )
    path.write_text(text)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(path),
            "--out",
            str(tmp_path / "results"),
            "--no-report",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a shell's background job (CI scripts) ignores SIGINT, and children inherit that:
        # give the CLI the default Ctrl-C it gets in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        steps = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((tmp_path / "results").glob("*/steps.csv"))
            if found and len(found[0].read_text().splitlines()) >= 2:  # header + one step
                steps = found[0]
                break
            time.sleep(0.2)
        assert steps is not None, proc.communicate()
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    run_dir = steps.parent
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert len(pd.read_csv(steps)) >= 1  # the finished step survived
    targets = json.loads((run_dir / "targets.json").read_text())
    pid = targets[0]["pid"]
    time.sleep(0.5)
    assert pid is None or not _alive(pid)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_relative_out_folder_works_for_servers_with_their_own_cwd(
    tmp_path: Path, build_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out results` (relative, the default) must reach a server started in its workdir."""
    from harness.results import RunFolder

    monkeypatch.chdir(tmp_path)
    folder = RunFolder.create(Path("results"), "rel")
    assert folder.path.is_absolute() and folder.path == tmp_path / "results" / "rel"
