"""The docker launcher against a real engine (`nox -s docker_tests`): the FastAPI adapter's
container serves the onnx variant through the runner, with its limits applied, its logs
captured, and no container left after success, failure or Ctrl-C."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.fastapi import FastapiAdapter, FastapiConfig
from harness.adapter import ContainerSpec, Server
from harness.errors import LaunchError
from harness.launchers.base import LaunchRequest
from harness.launchers.docker import LABEL, DockerConfig, DockerLauncher
from harness.variants import BuiltVariant, build_variant

pytestmark = pytest.mark.docker
BASE = "servingbench/base:bookworm"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """A Docker client, or a skip that says why (never a silent pass)."""
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine here: {exc} (nox -s docker_tests starts one)")
    try:
        client.images.get(BASE)
    except Exception:
        pytest.skip(f"base image {BASE} missing: run docker/base/build.sh")
    yield client
    client.close()


def ours(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": LABEL})


@pytest.fixture
def no_containers(engine: Any) -> Iterator[None]:
    before = {c.id for c in ours(engine)}
    yield
    left = [c.name for c in ours(engine) if c.id not in before]
    assert not left, f"containers left behind: {left}"


SCENARIO = """\
name: docker
model: {name: digits-cnn}
dataset: {samples: 32}
fidelity: {samples: 16}
load:
  duration_s: 1.0
  warmup_s: 0.2
  target_warmup_s: 0.2
  calibrate: false
  profile: {kind: sweep, steps: [{mode: closed, concurrency: 2}]}
targets:
  - name: fastapi-docker
    adapter: {kind: fastapi}
    variant: onnx
    launcher: {kind: docker, cpus: 1, memory: 512m}
    startup_timeout_s: 120
"""


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docker") / "docker.yaml"
    path.write_text(SCENARIO)
    return path


@pytest.fixture(scope="module")
def onnx(build_cache: Path, bundle: Any, scenario_file: Path) -> BuiltVariant:
    from harness.scenario import load_scenario

    return build_variant("onnx", bundle, load_scenario(scenario_file).variants)


def request_for(adapter: Any, variant: BuiltVariant, tmp_path: Path) -> LaunchRequest:
    return LaunchRequest(
        target="t", adapter=adapter, variant=variant, workdir=tmp_path / "work",
        log_path=tmp_path / "t.log", server_cpus=None, threads=1, startup_timeout_s=120,
    )  # fmt: skip


@pytest.mark.usefixtures("no_containers")
def test_runner_benchmarks_the_container(scenario_file: Path, tmp_path: Path) -> None:
    from harness.runner import run_scenario
    from harness.scenario import load_scenario

    outcome = run_scenario(load_scenario(scenario_file), out_root=tmp_path)
    assert outcome.failures == [], outcome.failures
    (target,) = json.loads((outcome.run_dir / "targets.json").read_text())
    assert target["status"] == "ok" and target["launcher"] == "docker"
    assert target["fidelity"]["passed"]
    assert target["container"]["image"] == "servingbench/fastapi:cpu"
    assert target["container"]["image_id"].startswith("sha256:")
    assert target["url"].startswith("http://127.0.0.1:")
    assert "docker build servingbench/fastapi:cpu" in (outcome.run_dir / target["log"]).read_text()
    assert (outcome.run_dir / "steps.csv").read_text().count("\n") >= 2


@pytest.mark.usefixtures("no_containers")
def test_limits_applied_inside(engine: Any, onnx: BuiltVariant, tmp_path: Path) -> None:
    launcher = DockerLauncher(DockerConfig(cpus=1.5, memory="512m"))
    adapter = FastapiAdapter(FastapiConfig(kind="fastapi"))
    server = launcher.start(request_for(adapter, onnx, tmp_path))
    try:
        container = engine.containers.get(server.info["container"]["id"])
        ports = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"]
        assert [p["HostIp"] for p in ports] == ["127.0.0.1"]
        cpu, memory = _limits(container)
        user = container.exec_run("id -u").output.decode().strip()
        mounted = container.exec_run("touch /model/x").exit_code
    finally:
        launcher.stop(server)
    assert cpu == pytest.approx(1.5)
    assert memory == 512 * 2**20
    assert user != "0"
    assert mounted != 0  # the variant is mounted read-only
    launcher.stop(server)  # twice is fine


def _read(container: Any, path: str) -> str:
    done = container.exec_run(["cat", path])
    return str(done.output.decode()).strip() if done.exit_code == 0 else ""


def _limits(container: Any) -> tuple[float, int]:
    """(CPUs, memory bytes) as the container's cgroup sees them (v2, else v1)."""
    cpu_max = _read(container, "/sys/fs/cgroup/cpu.max")
    if cpu_max:
        quota, period = cpu_max.split()
        return int(quota) / int(period), int(_read(container, "/sys/fs/cgroup/memory.max"))
    quota = int(_read(container, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
    period = int(_read(container, "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    return quota / period, int(_read(container, "/sys/fs/cgroup/memory/memory.limit_in_bytes"))


class _BadCommand(FastapiAdapter):
    def container_spec(
        self, variant: BuiltVariant, workdir: Path, gpus: bool = False
    ) -> ContainerSpec:
        spec = super().container_spec(variant, workdir, gpus)
        cmd = ["python", "-c", "import sys; print('boom-marker', flush=True); sys.exit(3)"]
        return ContainerSpec(**{**spec.__dict__, "command": cmd})


class _Interrupted(FastapiAdapter):
    def probe(self, server: Server) -> bool:
        raise KeyboardInterrupt


@pytest.mark.usefixtures("no_containers")
def test_failure_raises_with_log_tail(onnx: BuiltVariant, tmp_path: Path) -> None:
    launcher = DockerLauncher(DockerConfig(build=False))
    request = request_for(_BadCommand(FastapiConfig(kind="fastapi")), onnx, tmp_path)
    with pytest.raises(LaunchError, match="exited with code 3") as err:
        launcher.start(request)
    assert "boom-marker" in err.value.log_tail
    assert "boom-marker" in request.log_path.read_text()  # streamed into the log file


@pytest.mark.usefixtures("no_containers")
def test_interrupt_during_readiness_removes_container(onnx: BuiltVariant, tmp_path: Path) -> None:
    launcher = DockerLauncher(DockerConfig(build=False))
    with pytest.raises(KeyboardInterrupt):
        launcher.start(request_for(_Interrupted(FastapiConfig(kind="fastapi")), onnx, tmp_path))


@pytest.mark.usefixtures("no_containers")
@pytest.mark.parametrize(
    ("option", "setting"), [("privileged", {"privileged": True}), ("gpus", {"gpus": 1})]
)
def test_refused_option_is_named(
    onnx: BuiltVariant, tmp_path: Path, option: str, setting: dict[str, Any]
) -> None:
    config = DockerConfig(build=False, image="servingbench/fastapi:cpu", **setting)
    launcher = DockerLauncher(config)
    adapter = FastapiAdapter(FastapiConfig(kind="fastapi"))
    try:
        server = launcher.start(request_for(adapter, onnx, tmp_path))
    except LaunchError as exc:
        assert "refused" in str(exc) and option in str(exc), str(exc)
    else:  # an engine that allows it (a GPU machine, a privileged daemon): nothing refused
        launcher.stop(server)


KILLED = """\
name: docker-killed
model: {name: digits-cnn}
dataset: {samples: 32}
fidelity: {samples: 8}
load:
  duration_s: 6.0
  warmup_s: 0.2
  target_warmup_s: 0
  calibrate: false
  profile: {kind: closed, concurrency: [2, 2]}
targets:
  - name: fastapi-docker
    adapter: {kind: fastapi}
    variant: onnx
    launcher: {kind: docker, cpus: 1, memory: 512m}
    startup_timeout_s: 120
"""


def _wait_running(engine: Any, timeout_s: float = 180) -> Any:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [c for c in ours(engine) if c.status == "running"]
        if found:
            return found[0]
        time.sleep(0.2)
    raise TimeoutError("no container of ours started")


@pytest.mark.usefixtures("no_containers")
def test_a_container_killed_mid_step_fails_its_target(engine: Any, tmp_path: Path) -> None:
    import threading
    import time

    from harness.runner import run_scenario
    from harness.scenario import parse_scenario

    def kill_during_the_first_step() -> None:
        container = _wait_running(engine)
        time.sleep(4.0)  # ready, fidelity checked, into the 6 s step
        container.kill()  # SIGKILL to its main process

    killer = threading.Thread(target=kill_during_the_first_step, daemon=True)
    killer.start()
    outcome = run_scenario(parse_scenario(KILLED), out_root=tmp_path)
    killer.join(30)
    (target,) = json.loads((outcome.run_dir / "targets.json").read_text())
    assert target["status"] == "failed"
    assert "container exited with code 137" in target["error"]
    assert target["death"]["step"] == 0
    assert outcome.failures and "died during step 0" in outcome.failures[0]


@pytest.mark.usefixtures("no_containers")
def test_sigkill_of_the_cli_removes_its_container(engine: Any, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    path = tmp_path / "killed.yaml"
    path.write_text(KILLED.replace("duration_s: 6.0", "duration_s: 30.0"))
    errors = tmp_path / "cli.err"  # the CLI's stderr, and its watchdog's (they share it)
    with errors.open("wb") as err:
        cli = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(path), "--out", str(tmp_path / "out")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    try:
        container = _wait_running(engine)
        time.sleep(2.0)
        cli.kill()  # SIGKILL: only the watchdog can remove the container now
        cli.wait(10)
        deadline = time.monotonic() + 15
        while container.id in {c.id for c in ours(engine)} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert container.id not in {c.id for c in ours(engine)}, errors.read_text()[-3000:]
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(cli.pid, signal.SIGKILL)
