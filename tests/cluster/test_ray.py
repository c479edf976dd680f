"""A benchmark spread over a real Ray cluster: a head and two worker nodes on 127.0.0.1.

`servingbench run --ray` runs as users run it (its own process, the driver), against a
cluster this module starts (tests/cluster/ray_cluster.py). What must hold: targets run on
the nodes, two at once; one run folder and one report come back; a node killed mid-run
fails its own target with the reason, keeps the steps it finished and leaves no server
behind, and the run goes on; a target no node can take fails at once, saying why; one
target's load can come from two nodes on one clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'servingbench[ray]'")


class LocalCluster:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("ray_cluster.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the local Ray cluster did not start"
        info = json.loads(line)
        self.address: str = info["address"]
        self.workers: list[str] = info["workers"]

    def kill(self, node_id: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"kill {node_id}\n")
        self.proc.stdin.flush()
        assert json.loads(self.proc.stdout.readline()) == {"killed": node_id}

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    started = LocalCluster()
    try:
        yield started
    finally:
        started.stop()


def _scenario(tmp_path: Path, targets: str, load: str = "", profile: str = "") -> Path:
    text = f"""\
name: cluster
model: {{name: digits-cnn}}
dataset: {{samples: 32}}
fidelity: {{samples: 8}}
slo: {{latency_ms: 100}}
resources: {{server_cpus: [0], client_cpus: [1]}}
load:
  duration_s: 1.5
  warmup_s: 0.2
  target_warmup_s: 0
  calibrate: false
{load}
  profile: {profile or "{kind: closed, concurrency: [1, 2, 4]}"}
targets:
{targets}
"""
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def _interruptible() -> None:
    # as in a terminal: a test run in the background (CI) inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler at all
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(scenario: Path, out: Path, address: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(out),
         "--ray", address, "--static"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=_interruptible,
    )  # fmt: skip


def _run_dir(out: Path, timeout_s: float = 60) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in out.glob("*") if (p / "run.json").exists()]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no run folder under {out}")


def _targets(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / "targets.json"
    try:
        return {t["name"]: t for t in json.loads(path.read_text())}
    except (OSError, ValueError):
        return {}


def _steps(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "steps.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame({"target": []})


def _finish(proc: subprocess.Popen[str], timeout_s: float = 300) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"servingbench run --ray did not end:\n{output[-3000:]}") from None
    return output


def test_one_targets_load_comes_from_two_nodes_on_one_clock(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # first in the module: the next test kills a node
    targets = "  - {name: spread, adapter: {kind: fastapi}, variant: onnx}\n"
    load = "  processes: 2\n  nodes: 2"
    profile = "{kind: open, rates: [100]}"
    out = tmp_path / "results"
    proc = _start(_scenario(tmp_path, targets, load, profile), out, cluster.address)
    output = _finish(proc)
    assert proc.returncode == 0, output[-3000:]
    run_dir = _run_dir(out)
    target = _targets(run_dir)["spread"]
    nodes = {n["node_id"] for n in target["load_nodes"]}
    assert len(nodes) == 2 and target["node"]["node_id"] in nodes
    step = _steps(run_dir).iloc[0]
    # two Poisson streams of 50/s each add up to the 100/s asked, from both nodes
    assert 70 <= step["throughput_rps"] <= 130, step["throughput_rps"]
    assert step["errors"] == 0


def test_ctrl_c_of_the_driver_stops_the_target_on_its_node(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # before the node-loss test: it needs a worker node of its own
    targets = "  - {name: stopped, adapter: {kind: fastapi}, variant: eager}\n"
    profile = "{kind: closed, concurrency: [1, 2, 4, 8, 16]}"
    out = tmp_path / "results"
    proc = _start(_scenario(tmp_path, targets, profile=profile), out, cluster.address)
    run_dir = _run_dir(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (_steps(run_dir)["target"] == "stopped").any():
            break
        time.sleep(0.2)
    pid = _targets(run_dir)["stopped"].get("pid")
    assert pid and psutil.pid_exists(pid), "its server is not running on the node"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the driver's terminal
    output = _finish(proc, 120)
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    target = _targets(run_dir)["stopped"]
    assert target["status"] == "interrupted", target
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    # the cancel reached the node: its runner tore the server down there
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(pid), f"the server {pid} outlived the Ctrl-C"


def test_targets_run_on_the_nodes_and_a_lost_node_fails_only_its_target(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    targets = """\
  - {name: victim, adapter: {kind: fastapi}, variant: eager}
  - {name: beside, adapter: {kind: fastapi}, variant: onnx}
  - {name: after, adapter: {kind: rayserve}, variant: eager, startup_timeout_s: 90}
  - name: wants-gpu
    adapter: {kind: fastapi}
    variant: eager
    placement: {gpus: 1, gpu_type: H200}
"""
    out = tmp_path / "results"
    proc = _start(_scenario(tmp_path, targets), out, cluster.address)
    run_dir = _run_dir(out)
    # the victim's node dies once its first step is on disk (the driver's copy)
    deadline = time.monotonic() + 120
    victim: dict[str, Any] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        victim = _targets(run_dir).get("victim", {})
        if victim.get("node") and (_steps(run_dir)["target"] == "victim").any():
            break
        time.sleep(0.2)
    assert victim.get("node"), "the victim never started on a node"
    node = victim["node"]["node_id"]
    cluster.kill(node)
    output = _finish(proc)
    assert proc.returncode == 1, output[-3000:]  # failures: exit 1, no traceback
    assert "Traceback" not in output, output[-3000:]

    found = _targets(run_dir)
    lost = found["victim"]
    assert lost["status"] == "failed"
    assert "lost mid-run" in lost["error"] and node[:8] in lost["error"], lost["error"]
    steps = _steps(run_dir)
    assert (steps["target"] == "victim").sum() >= 1  # what it finished is kept
    # its server died with its node: no orphan anywhere
    pid = lost.get("pid")
    deadline = time.monotonic() + 20
    while pid and psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (pid and psutil.pid_exists(pid)), f"the victim's server {pid} outlived its node"

    # the run went on: the others ran on the nodes, one of them after the loss
    for name in ("beside", "after"):
        assert found[name]["status"] == "ok", (name, found[name].get("error"))
        assert found[name]["node"]["node_id"] != node
        assert (steps["target"] == name).sum() == 3
    assert found["beside"]["node"]["node_id"] != found["victim"]["node"]["node_id"]
    # logs came home, messages point at this run folder
    assert (run_dir / "logs" / "beside.log").exists()
    assert "sb-node-" not in json.dumps(found)
    # what the killed worker could not remove (its scratch run folder) `clean` does
    from harness.clean import clean

    left = [p for p in Path(tempfile.gettempdir()).glob("sb-node-*") if run_dir.name in
            {q.name for q in p.iterdir()}]  # fmt: skip
    clean(out)
    assert not [p for p in left if p.exists()]
    # a target no node can take fails at once, naming what it asked and what nodes have
    gpu = found["wants-gpu"]
    assert gpu["status"] == "failed"
    assert "no node of the cluster can run target wants-gpu" in gpu["error"]
    assert "GPU=1" in gpu["error"]

    # provenance: which node ran what; the cluster in run.json
    info = json.loads((run_dir / "run.json").read_text())
    assert {n["node_id"] for n in info["cluster"]["nodes"]} >= set(cluster.workers)
    # victim and beside ran at once on nodes of one host: never ranked, and said so
    assert "same host" in (found["beside"].get("confound") or "")
    summary = json.loads((run_dir / "summary.json").read_text())
    for pick, winner in summary["winners"].items():
        assert (winner or {}).get("target") not in ("victim", "beside", "wants-gpu"), pick
    assert any("one host" in w for w in info["warnings"])
    report = (run_dir / "report.html").read_text()
    assert "same host" in report
