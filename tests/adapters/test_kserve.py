"""KServe for real on loopback: the Python ModelServer in its own environment, every protocol
against the reference, REST workers, loopback-only sockets, start failures with their cause,
quiet logs, teardown; InferenceService manifests checked by the KServe SDK's model classes
(run with the kserve environment's Python: kserve is never imported here). Also the adapter
conformance suite, last in the module: it shares one server across the tests of a variant.

The first run creates the kserve environment (pip, a minute or two); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import yaml
from pydantic import ValidationError

from adapters.kserve import KserveAdapter, KserveConfig
from adapters.vllm import VllmAdapter, VllmConfig
from harness import environments
from harness.cli import main as cli
from harness.conformance import listening, process_tree
from harness.errors import (
    ConfigError,
    LaunchError,
    ProtocolError,
    ServingBenchError,
    UnavailableError,
)
from harness.k8s import K8sSpec, build_inference_service, check_with_sdk, manifest_for, to_yaml
from harness.k8s_spec import GRPC_PORT, HTTP_PORT, MODEL_DIR
from harness.launchers import process as process_launcher
from harness.launchers.base import LaunchRequest
from harness.launchers.process import ProcessConfig, ProcessLauncher
from harness.load.endpoints import HttpEndpoint
from harness.protocols import PROTOCOLS, KServeV1Client
from harness.scenario import VariantsSpec
from harness.testing import AdapterConformance
from harness.variants import build_variant
from tests.conftest import REPO, servingbench_processes

SPOKEN = ("kserve-v1", "v2-json", "v2-binary", "v2-grpc")
KSERVE_SCENARIO = REPO / "scenarios" / "kserve.yaml"
FULL_SCENARIO = REPO / "scenarios" / "digits-cnn-full.yaml"  # every target, kserve v1 too


@pytest.fixture(scope="module")
def kserve_env() -> Path:
    env = KserveAdapter.environment
    assert env is not None
    try:
        return environments.ensure(env)
    except UnavailableError as exc:  # e.g. no package index: say so, do not fail
        pytest.skip(f"the kserve environment cannot be created here: {exc}")


@pytest.fixture(scope="module", autouse=True)
def no_orphans_at_the_end() -> Iterator[None]:
    # per module as well: the conformance classes share a server across their tests
    before = {p.pid for p in servingbench_processes()}
    yield
    deadline = time.monotonic() + 5
    while (left := [p for p in servingbench_processes() if p.pid not in before]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not left, f"orphaned processes: {[' '.join(p.cmdline()) for p in left]}"


def launch(tmp_path: Path, variant, **config: object):
    adapter = KserveAdapter(KserveConfig(kind="kserve", **config))  # type: ignore[arg-type]
    launcher = ProcessLauncher(ProcessConfig(stop_grace_s=10))
    request = LaunchRequest(
        "kserve", adapter, variant, tmp_path / "work", tmp_path / "kserve.log", None, 1, 90
    )
    return adapter, launcher, launcher.start(request)


def log_lines(path: Path) -> int:
    return len(path.read_text(errors="replace").splitlines())


@pytest.mark.usefixtures("no_orphans")
def test_every_protocol_answers_the_reference_quietly_on_loopback(
    kserve_env, tmp_path: Path, bundle
) -> None:
    variant = build_variant("onnx-int8", bundle, VariantsSpec())
    _adapter, launcher, server = launch(tmp_path, variant, protocol="v2-grpc")
    try:
        sockets = listening(process_tree(server.pid))
        lines = log_lines(tmp_path / "kserve.log")
        expected = variant.outputs_test()[:8]
        for protocol in SPOKEN:  # REST and gRPC on one server: gRPC is on for v2-grpc
            speaker = KserveAdapter(KserveConfig(kind="kserve", protocol=protocol))
            for _ in range(8):
                answer = speaker.client(server).infer(bundle.x_test[:8])
                np.testing.assert_allclose(answer, expected, atol=1e-5, err_msg=protocol)
            single = speaker.client(server).infer(bundle.x_test[3:4])
            np.testing.assert_allclose(single, expected[3:4], atol=1e-5, err_msg=protocol)
        quiet = log_lines(tmp_path / "kserve.log") == lines
        # a wrong shape is the client's fault (400), with the reason, on v1 and v2
        v1 = httpx.post(f"{server.base_url}/v1/models/model:predict", json={"instances": [[1]]})
        v2_body = {
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
        }
        v2 = httpx.post(f"{server.base_url}/v2/models/model/infer", json=v2_body)
    finally:
        launcher.stop(server)
    assert {server.ports["http"], server.ports["grpc"]} <= {port for _, port, _ in sockets}
    exposed = [s for s in sockets if s[0] not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert not exposed, f"KServe listens beyond loopback: {exposed}"
    assert v1.status_code == 400 and "expected instances of shape [1, 8, 8]" in v1.text
    assert v2.status_code == 400 and "expected instances of shape [1, 8, 8]" in v2.text
    # 36 good requests over four protocols wrote nothing (KServe logs errors: rare)
    assert quiet, (tmp_path / "kserve.log").read_text()[-2000:]


@pytest.mark.usefixtures("no_orphans")
def test_rest_workers_are_spawned_each_with_the_model(kserve_env, tmp_path: Path, bundle) -> None:
    variant = build_variant("torchscript", bundle, VariantsSpec())
    _adapter, launcher, server = launch(tmp_path, variant, workers=2)
    family = process_tree(server.pid)
    client = KServeV1Client(server.base_url or "")
    try:
        spawned = [p for p in family if "multiprocessing.spawn" in " ".join(p.cmdline())]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: client.infer(bundle.x_test[i : i + 1]), range(48)))
        sockets = listening(family)
        # the model is pickled into each worker and loads again there: every worker answers
        pids = {p.pid for p in spawned}
        serving = {pid for _, _, pid in sockets if pid in pids}
    finally:
        launcher.stop(server)
    assert len(spawned) == 2, [p.cmdline() for p in family]
    assert serving == pids  # both workers hold the REST socket
    assert all(ip == "127.0.0.1" for ip, _, _ in sockets), sockets
    np.testing.assert_allclose(np.concatenate(answers), variant.outputs_test()[:48], atol=1e-5)
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, [p.cmdline() for p in alive]


@pytest.mark.usefixtures("no_orphans")
@pytest.mark.parametrize("taken_index", [0, 1], ids=["http", "grpc"])
def test_a_taken_port_fails_fast_with_the_cause(
    kserve_env, tmp_path: Path, bundle, monkeypatch, taken_index: int
) -> None:
    variant = build_variant("onnx", bundle, VariantsSpec())
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    real = process_launcher.free_port
    picks = iter(range(2))
    # the launcher picks ports in the adapter's order (http, grpc): one is held elsewhere
    monkeypatch.setattr(
        process_launcher,
        "free_port",
        lambda: squatter.getsockname()[1] if next(picks, -1) == taken_index else real(),
    )
    started = time.monotonic()
    try:
        with pytest.raises(LaunchError) as info:
            launch(tmp_path, variant, protocol="v2-grpc")
    finally:
        squatter.close()
    assert time.monotonic() - started < 60
    text = f"{info.value}\n{info.value.log_tail}".lower()
    cause = "address already in use" if taken_index == 0 else "failed to bind"
    assert cause in text, text


def test_v1_client_bodies_and_answers() -> None:
    batch = (np.arange(128, dtype=np.float32).reshape(2, 1, 8, 8) / 7).astype(np.float32)
    client = KServeV1Client("http://127.0.0.1:8080", "/v1/models/digits:predict")
    assert PROTOCOLS["kserve-v1"] is KServeV1Client and client.model == "digits"
    sent = np.asarray(json.loads(client.encode(batch))["instances"], np.float32)
    np.testing.assert_array_equal(sent, batch)  # float32 text round-trips exactly
    answer = np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 10)
    body = json.dumps({"predictions": answer.tolist()}).encode()
    np.testing.assert_array_equal(client.decode(body), answer)
    with pytest.raises(ProtocolError, match="not a KServe v1 answer"):
        client.decode(b'{"outputs": [[1.0]]}')
    with pytest.raises(ValueError, match="not a KServe v1 predict path"):
        KServeV1Client("http://127.0.0.1:8080", "/v2/models/digits/infer")
    endpoint = client.endpoint(batch)  # one pre-built request per instance
    assert isinstance(endpoint, HttpEndpoint) and len(endpoint.requests) == 2
    head, _, payload = endpoint.requests[1].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/models/digits:predict HTTP/1.1\r\n")
    assert payload == client.encode(batch[1:])


def _docs() -> dict[str, dict]:
    """One manifest per runtime, from the shipped scenarios plus `--set` overrides."""
    ts_sets = ["storage_uri=gs://bucket/ts", "batcher.max_batch_size=16", "resources.gpus=1",
               "runtime_version=0.12.0", "scale_metric=rps", "scale_target=200"]  # fmt: skip
    hf = K8sSpec(storage_uri="pvc://models/llama", args=["--max-model-len=1024"],
                 resources={"cpu": 4, "memory": "8Gi", "gpus": 1})  # type: ignore[arg-type]  # fmt: skip
    vllm = VllmAdapter(VllmConfig(kind="vllm"))  # what the vLLM adapter declares for KServe
    vllm_predictor = vllm.kserve_predictor("bf16", MODEL_DIR, HTTP_PORT, GRPC_PORT)
    texts = {
        "custom-v1": manifest_for(KSERVE_SCENARIO, "kserve-onnx-v1"),
        "custom-grpc": manifest_for(KSERVE_SCENARIO, "kserve-onnx-grpc", ["namespace=bench"]),
        "pytorch": manifest_for(FULL_SCENARIO, "torchserve-eager-batch", ts_sets),
        "triton": manifest_for(
            FULL_SCENARIO,
            "triton-onnx-grpc-batch",
            ["storage_uri=pvc://models/triton", "min_replicas=2", "max_replicas=3"],
        ),
        "huggingface": to_yaml(build_inference_service("tiny-llama", hf, vllm_predictor)),
    }
    return {name: yaml.safe_load(text) for name, text in texts.items()}


def test_manifests_carry_resources_replicas_scaling_and_batcher() -> None:
    docs = _docs()
    for doc in docs.values():
        assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
        assert doc["kind"] == "InferenceService"
    v1 = docs["custom-v1"]["spec"]["predictor"]
    assert docs["custom-v1"]["metadata"]["name"] == "digits-onnx"
    assert (v1["minReplicas"], v1["maxReplicas"]) == (1, 4)
    assert (v1["scaleMetric"], v1["scaleTarget"]) == ("concurrency", 8)
    assert v1["batcher"] == {"maxBatchSize": 16, "maxLatency": 2}
    [box] = v1["containers"]
    assert box["image"] == "registry.example.com/servingbench-kserve:0.1.0"
    assert box["command"] == ["python", "-m", "adapters._kserve_server"]
    assert box["args"][box["args"].index("--host") + 1] == "0.0.0.0"  # a pod listens for all
    assert box["args"][box["args"].index("--grpc-port") + 1] == "0"
    assert box["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in box["env"]}
    assert env["STORAGE_URI"] == "gs://your-bucket/servingbench/digits-cnn/onnx"
    # the scenario pins one server CPU: the pod gets the same, requests = limits
    assert box["resources"]["requests"] == box["resources"]["limits"] == {
        "cpu": "1", "memory": "1Gi"}  # fmt: skip
    assert env["SERVINGBENCH_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    grpc = docs["custom-grpc"]
    assert grpc["metadata"]["namespace"] == "bench"
    assert grpc["spec"]["predictor"]["containerConcurrency"] == 16
    assert grpc["spec"]["predictor"]["containers"][0]["ports"] == [
        {"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]  # fmt: skip
    ts = docs["pytorch"]["spec"]["predictor"]
    assert ts["model"]["modelFormat"] == {"name": "pytorch"}
    assert ts["model"]["storageUri"] == "gs://bucket/ts"
    assert ts["model"]["runtimeVersion"] == "0.12.0"
    assert ts["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert ts["batcher"] == {"maxBatchSize": 16, "maxLatency": 500}
    assert (ts["scaleMetric"], ts["scaleTarget"]) == ("rps", 200)
    triton = docs["triton"]["spec"]["predictor"]
    assert triton["model"]["modelFormat"] == {"name": "triton"}
    assert triton["model"]["protocolVersion"] == "grpc-v2"  # the target speaks gRPC
    assert (triton["minReplicas"], triton["maxReplicas"]) == (2, 3)
    hf = docs["huggingface"]["spec"]["predictor"]["model"]
    assert hf["modelFormat"] == {"name": "huggingface"}
    # the name our OpenAI client sends and the variant's dtype, then the scenario's own args
    assert hf["args"] == ["--model_name=tiny-llama", "--backend=vllm", "--dtype=bfloat16",
                          "--max-model-len=1024"]  # fmt: skip
    assert hf["resources"]["requests"] == {"cpu": "4", "memory": "8Gi"}


def test_manifests_round_trip_through_the_sdk_models(kserve_env: Path) -> None:
    env = {**os.environ, **environments.server_env(KserveAdapter.environment)}
    texts = [to_yaml(doc) for doc in _docs().values()]
    check_with_sdk("---\n".join(texts), kserve_env, env)  # raises with the SDK's complaints
    broken = (
        texts[0]
        .replace("minReplicas", "minReplica")
        .replace("containerPort: 8080", "containerPort: eighty")
        .replace("maxLatency:", "maxLatencyMs:")
    )
    with pytest.raises(ServingBenchError) as info:
        check_with_sdk(broken, kserve_env, env)
    text = str(info.value)
    assert ".spec.predictor.minReplica: not a field of V1beta1PredictorSpec" in text
    assert ".spec.predictor.batcher.maxLatencyMs: not a field of V1beta1Batcher" in text
    assert ".spec.predictor.containers[0].ports[0].containerPort: expected int" in text


def test_missing_k8s_settings_say_what_to_set() -> None:
    with pytest.raises(ConfigError, match="storage_uri is not set"):
        manifest_for(FULL_SCENARIO, "torchserve-eager")
    with pytest.raises(ConfigError, match=r"set k8s\.image"):
        manifest_for(FULL_SCENARIO, "kserve-onnx-v1", ["storage_uri=gs://b/m"])
    with pytest.raises(ConfigError, match="no KServe runtime for fastapi"):
        manifest_for(FULL_SCENARIO, "fastapi-onnx", ["storage_uri=gs://b/m"])
    with pytest.raises(ConfigError, match="below min_replicas"):
        manifest_for(KSERVE_SCENARIO, "kserve-onnx-v1", ["min_replicas=5"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        manifest_for(KSERVE_SCENARIO, "kserve-onnx-v1", ["storage_uri"])
    with pytest.raises(ValidationError, match="batches v1"):
        KserveConfig(kind="kserve", protocol="v2-json", k8s={"batcher": {}})  # type: ignore[arg-type]


def test_cli_writes_and_checks_the_manifest(kserve_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "isvc.yaml"
    argv = ["k8s", "manifest", str(KSERVE_SCENARIO), "--target", "kserve-onnx-grpc"]
    assert cli([*argv, "-o", str(out), "--set", "max_replicas=2", "--check"]) == 0
    expected = manifest_for(KSERVE_SCENARIO, "kserve-onnx-grpc", ["max_replicas=2"])
    assert out.read_text() == expected
    assert yaml.safe_load(out.read_text())["spec"]["predictor"]["maxReplicas"] == 2
    assert cli([*argv, "--set", "min_replicas=-1"]) == 2  # a bad setting: the config exit code


class TestKserveConformance(AdapterConformance):
    pytestmark = [pytest.mark.conformance, pytest.mark.usefixtures("kserve_env")]
    adapter_class = KserveAdapter
    config = {"kind": "kserve", "protocol": "kserve-v1"}
    variants = ["eager"]
    startup_timeout_s = 60.0


class TestKserveGrpcConformance(AdapterConformance):
    pytestmark = [pytest.mark.conformance, pytest.mark.usefixtures("kserve_env")]
    adapter_class = KserveAdapter
    # an image makes the container recipe exist, so its shape is checked too
    config = {"kind": "kserve", "protocol": "v2-grpc", "k8s": {"image": "servingbench-kserve:t"}}
    variants = ["onnx"]
    startup_timeout_s = 60.0
