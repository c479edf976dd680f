"""Triton for real on loopback: the bundled tritonserver 2.51 (python backend) in its own
environment, a generated model repository, three v2 protocols, dynamic batching seen in the
server's own metrics, load failures with the server's reason, teardown without leftovers.

The first run creates the triton environment (pip, a minute or more); later runs reuse it.
"""

from __future__ import annotations

import glob
import os
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from adapters._triton_repo import PYTHON_MODEL
from adapters.triton import IMAGE, TritonAdapter, TritonConfig
from harness import environments
from harness.errors import LaunchError, UnavailableError
from harness.launchers.base import LaunchRequest
from harness.launchers.process import ProcessConfig, ProcessLauncher
from harness.load.plan import StepPlan
from harness.load.worker import LoadProcess
from harness.scenario import VariantsSpec
from harness.variants import build_variant
from tests.conftest import client_cpus

pytestmark = pytest.mark.usefixtures("no_orphans")
PROTOCOLS = ("http-json", "http-binary", "grpc")
BATCHING = {"max_queue_delay_us": 5000}


@pytest.fixture(scope="module")
def triton_env() -> Path:
    env = TritonAdapter.environment
    assert env is not None
    try:
        return environments.ensure(env)
    except UnavailableError as exc:  # e.g. no package index: say so, do not fail
        pytest.skip(f"the triton environment cannot be created here: {exc}")


@pytest.fixture(scope="module")
def load():
    with LoadProcess(client_cpus()) as proc:
        yield proc


def launch(tmp_path: Path, variant, adapter: TritonAdapter | None = None, **config: object):
    adapter = adapter or TritonAdapter(TritonConfig(kind="triton", **config))  # type: ignore[arg-type]
    launcher = ProcessLauncher(ProcessConfig(stop_grace_s=10))
    request = LaunchRequest(
        "triton", adapter, variant, tmp_path / "work", tmp_path / "triton.log", None, 1, 120
    )
    return adapter, launcher, launcher.start(request)


def shm_prefix(server) -> str:
    """The python backend's shared-memory prefix, from the server's own command line."""
    for arg in psutil.Process(server.pid).cmdline():
        if "shm-region-prefix-name=" in arg:
            return arg.split("shm-region-prefix-name=", 1)[1]
    raise AssertionError("no shm-region-prefix-name on the tritonserver command line")


def shm_segments(prefix: str) -> list[str]:
    return glob.glob(f"/dev/shm/{glob.escape(prefix)}*")


def with_protocol(protocol: str) -> TritonAdapter:
    return TritonAdapter(TritonConfig(kind="triton", protocol=protocol))  # type: ignore[arg-type]


def test_serves_the_reference_over_every_protocol_and_batches(
    triton_env, tmp_path: Path, bundle, load
) -> None:
    variant = build_variant("onnx", bundle, VariantsSpec())
    expected = variant.outputs_test()
    adapter, launcher, server = launch(tmp_path, variant, dynamic_batching=BATCHING)
    prefix = shm_prefix(server)
    try:
        config = (tmp_path / "work/repo/model/config.pbtxt").read_text()
        assert 'backend: "python"' in config and "max_batch_size: 16" in config
        assert 'name: "input" data_type: TYPE_FP32 dims: [ 1, 8, 8 ]' in config
        assert 'name: "output" data_type: TYPE_FP32 dims: [ 10 ]' in config
        assert "max_queue_delay_microseconds: 5000" in config
        assert (tmp_path / "work/repo/model/1/model.py").exists()
        assert shm_segments(prefix)  # the python backend's regions, under our own prefix
        stack = adapter.stack_versions(server)  # the server's own word, and its environment's
        assert stack["tritonserver"].startswith("2.") and stack["nvidia-pytriton"]
        batches = {}
        for protocol in PROTOCOLS:
            speaker = with_protocol(protocol)  # same server, another protocol
            for i in range(4):  # one instance per request, as the load sends them
                got = speaker.client(server).infer(bundle.x_test[i : i + 1])
                np.testing.assert_allclose(got, expected[i : i + 1], atol=1e-4)
            np.testing.assert_allclose(
                speaker.client(server).infer(bundle.x_test[:8]), expected[:8], atol=1e-4
            )
            # the load engine's pre-built requests, answers kept and checked
            endpoint = speaker.client(server).endpoint(bundle.x_test[:64])
            before = adapter.server_metrics(server)
            plan = StepPlan(mode="closed", concurrency=16, duration_s=1.0, keep_bodies=True)
            records = load.run(endpoint, plan)
            after = adapter.server_metrics(server)
            assert len(records) > 50 and not records.error.any(), records.error_samples
            assert set(records.status.tolist()) == {200}
            decoder = speaker.client(server)
            for index, body in list(records.extra["bodies"].items())[:50]:
                np.testing.assert_allclose(
                    decoder.decode(body), expected[index % 64][None], atol=1e-4
                )
            served = after["success"] - before["success"]
            executions = after["executions"] - before["executions"]
            assert served >= len(records)
            batches[protocol] = served / executions
            view = adapter.breakdown(before, after, len(records))
            assert view["server_batch_avg"] == pytest.approx(served / executions)
            assert view["server_queue_ms"] > 0 and view["server_compute_ms"] > 0
    finally:
        launcher.stop(server)
    # 16 requests in flight and a 5 ms window: the server ran several per execution
    assert all(size > 2 for size in batches.values()), batches
    assert not shm_segments(prefix)


def test_without_dynamic_batching_each_request_runs_alone(
    triton_env, tmp_path: Path, bundle, load
) -> None:
    variant = build_variant("eager", bundle, VariantsSpec())  # torch under numpy<2
    adapter, launcher, server = launch(tmp_path, variant, protocol="grpc")
    try:
        got = adapter.client(server).infer(bundle.x_test[:1])
        np.testing.assert_allclose(got, variant.outputs_test()[:1], atol=1e-4)
        before = adapter.server_metrics(server)
        endpoint = adapter.client(server).endpoint(bundle.x_test[:32])
        records = load.run(endpoint, StepPlan(mode="closed", concurrency=8, duration_s=0.5))
        after = adapter.server_metrics(server)
    finally:
        launcher.stop(server)
    assert len(records) > 10 and not records.error.any(), records.error_samples
    assert "dynamic_batching" not in (tmp_path / "work/repo/model/config.pbtxt").read_text()
    assert after["executions"] - before["executions"] == after["success"] - before["success"]
    assert adapter.breakdown(before, after, len(records))["server_batch_avg"] == 1.0


class BrokenModel(TritonAdapter):
    """Generates the repository normally, then swaps in a model that cannot initialize."""

    def prepare(self, variant, workdir: Path) -> None:
        super().prepare(variant, workdir)
        broken = PYTHON_MODEL.replace(
            "    def initialize(self, args):\n",
            "    def initialize(self, args):\n"
            "        raise RuntimeError('weights are corrupt (test)')\n",
        )
        assert broken != PYTHON_MODEL
        (workdir / "repo/model/1/model.py").write_text(broken)


def test_a_model_that_fails_to_load_is_reported_with_the_servers_reason(
    triton_env, tmp_path: Path, bundle
) -> None:
    variant = build_variant("onnx", bundle, VariantsSpec())
    adapter = BrokenModel(TritonConfig(kind="triton"))
    started = time.monotonic()
    with pytest.raises(LaunchError) as info:
        launch(tmp_path, variant, adapter)
    assert time.monotonic() - started < 60
    headline = str(info.value).splitlines()[0]
    assert "failed to load 'model'" in headline
    assert "RuntimeError: weights are corrupt (test)" in headline
    assert not glob.glob(f"/dev/shm/sb{os.getpid()}_*")


@pytest.mark.parametrize(
    ("backend", "variant_name", "artifact"),
    [("onnxruntime", "onnx", "model.onnx"), ("pytorch", "torchscript", "model.pt"),
     ("tensorrt", "onnx", "model.onnx")],
)  # fmt: skip
def test_native_backends_are_unavailable_here_but_their_repository_is_written(
    tmp_path: Path, bundle, backend: str, variant_name: str, artifact: str
) -> None:
    variant = build_variant(variant_name, bundle, VariantsSpec())
    kind = "KIND_GPU" if backend == "tensorrt" else "KIND_CPU"
    adapter = TritonAdapter(TritonConfig(kind="triton", backend=backend, instance_kind=kind))  # type: ignore[arg-type]
    with pytest.raises(UnavailableError, match="only the python backend") as info:
        launch(tmp_path, variant, adapter)
    assert "container launcher" in str(info.value)
    assert not (tmp_path / "triton.log").exists()  # nothing was started
    folder = tmp_path / "work/repo/model"
    config = (folder / "config.pbtxt").read_text()
    assert (folder / "1" / artifact).read_bytes() == (variant.path / variant.artifact).read_bytes()
    expected_backend = "onnxruntime" if backend == "tensorrt" else backend
    assert f'backend: "{expected_backend}"' in config
    assert ('name: "input__0"' in config) == (backend == "pytorch")
    assert ('name: "tensorrt"' in config) == (backend == "tensorrt")
    assert adapter.supports(variant_name) and not adapter.supports("eager")


class AllBackends(TritonAdapter):
    local_backends = frozenset({"python", "onnxruntime", "pytorch", "tensorrt"})


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch", "tensorrt"])
def test_native_backend_configs_parse(triton_env, tmp_path: Path, bundle, backend: str) -> None:
    # The bundled server reads each config and stops only at the missing backend library;
    # a config it cannot parse fails earlier, with "failed to read text proto".
    name = "torchscript" if backend == "pytorch" else "onnx"
    variant = build_variant(name, bundle, VariantsSpec())
    kind = "KIND_GPU" if backend == "tensorrt" else "KIND_CPU"
    batching = {"max_queue_delay_us": 100, "preferred_batch_size": [4, 8]}
    adapter = AllBackends(
        TritonConfig(kind="triton", backend=backend, instance_kind=kind, dynamic_batching=batching)  # type: ignore[arg-type]
    )
    with pytest.raises(LaunchError) as info:
        launch(tmp_path, variant, adapter)
    native = "onnxruntime" if backend == "tensorrt" else backend
    assert f"unable to find backend library for backend '{native}'" in str(info.value)
    assert "text proto" not in str(info.value)


def test_a_killed_server_leaves_no_shared_memory(triton_env, tmp_path: Path, bundle) -> None:
    variant = build_variant("onnx", bundle, VariantsSpec())
    _adapter, launcher, server = launch(tmp_path, variant, instance_count=2)
    prefix = shm_prefix(server)
    family = psutil.Process(server.pid).children(recursive=True)
    assert len([p for p in family if "triton_python_backend_stub" in p.name()]) == 2
    assert shm_segments(prefix)
    os.killpg(server.pid, signal.SIGKILL)  # no chance to unlink its regions
    time.sleep(0.5)
    assert shm_segments(prefix)
    launcher.stop(server)
    assert not shm_segments(prefix)


def test_container_spec_mounts_a_repository_for_the_image(tmp_path: Path, bundle) -> None:
    variant = build_variant("onnx", bundle, VariantsSpec())
    adapter = TritonAdapter(TritonConfig(kind="triton", dynamic_batching=BATCHING))  # type: ignore[arg-type]
    spec = adapter.container_spec(variant, tmp_path, gpus=True)
    assert spec.image == IMAGE and spec.gpus and spec.shm_size == "1g"
    assert spec.ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert spec.mounts[str(tmp_path / "repo-container")] == "/models"
    assert spec.mounts[str(variant.path)] == "/variant"
    assert "--model-repository=/models" in spec.command
    config = (tmp_path / "repo-container/model/config.pbtxt").read_text()
    assert 'key: "variant_dir" value: { string_value: "/variant" }' in config


def test_config_rejects_inconsistent_settings() -> None:
    with pytest.raises(ValueError, match="exceeds max_batch_size"):
        TritonConfig(
            kind="triton", max_batch_size=4, dynamic_batching={"preferred_batch_size": [8]}
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="KIND_GPU"):
        TritonConfig(kind="triton", backend="tensorrt")
