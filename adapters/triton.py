"""Triton Inference Server: a standard model repository, the real server, v2 protocols.

Recipe
- serves: `backend: python` (the default) runs eager, torchscript, onnx and onnx-int8
  through `harness.runtime` in Triton's python backend; `onnxruntime` (onnx, onnx-int8),
  `pytorch` (torchscript) and `tensorrt` (onnx: onnxruntime backend + TensorRT FP16
  accelerator) are native backends that only the official image has
- files (in the target's workdir): `repo/model/config.pbtxt` + `repo/model/1/<file>`
  (model.py, model.onnx or model.pt); `backends/python/`, links to the bundled python
  backend and its stub for this Python (the stub is found next to the backend only)
- environment: its own (`nvidia-pytriton` 0.7.0 bundles tritonserver 2.51 with the python
  backend only and needs numpy<2), created on first launch; torch is installed first so
  the CPU build is taken and every variant can be served
- starts: the bundled `tritonserver` with the environment's libpython and bundled libs on
  LD_LIBRARY_PATH (else the stub picks the system's libpython and dies), every port and
  bind address explicit (loopback), no pinned/CUDA memory pools, GPU and CPU metrics off,
  a python-backend shared-memory prefix of its own, removed from /dev/shm after stop
- ready: `/v2/health/ready`, then `/v2/models/model/ready`
- protocol: `protocol` = v2 http-json, http-binary (binary tensor extension) or grpc
- a sentence encoder (minilm: eager, torchscript, onnx, onnx-int8, bf16) runs on the python
  backend only, its input a TYPE_STRING tensor (v2 BYTES) tokenized in the model
  (harness/embedding.py); the native backends would need a tokenizer model in front
- server view: Prometheus counters on the metrics port (success, executions, queue and
  compute durations), scraped around each step
- container: `nvcr.io/nvidia/tritonserver:24.10-py3` with the repository mounted (all
  backends; a python-backend model there also needs onnxruntime/torch in the image)
- text generation (tiny-llama f32, f16, bf16, int8): a decoupled python-backend model
  (adapters/_triton_llm_model.py, one response per token) running the transformers engine
  of harness/llm/serving.py, streamed by Triton's `generate_stream` endpoint (SSE; no chat
  API); `instance_count` instances each decode one sequence at a time; the engine's
  counters are Triton custom metrics on the metrics port
"""

from __future__ import annotations

import glob
import os
import secrets
import sys
import sysconfig
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from adapters._triton_repo import (
    BACKEND_VARIANTS,
    RepoSpec,
    tensor_names,
    write_llm_repository,
    write_repository,
)
from harness import embedding
from harness.adapter import (
    Adapter,
    AdapterConfig,
    ContainerSpec,
    ProcessSpec,
    Server,
    token_breakdown,
)
from harness.config import StrictModel
from harness.environments import PROJECT_ROOT, Environment
from harness.errors import UnavailableError
from harness.k8s_spec import PROTOCOL_GRPC_V2, PROTOCOL_V2, KServePredictor
from harness.launchers.base import SHM_PREFIX, owned
from harness.llm import serving
from harness.net import http
from harness.prometheus import MetricsPage, Sample
from harness.protocols import ProtocolClient, V2BinaryClient, V2GrpcClient, V2JsonClient
from harness.protocols.base import Client
from harness.protocols.triton_generate import TritonGenerateClient
from harness.stack import served_field
from harness.tunables import Choice, IntRange, Machine, Tunable
from harness.variants import BuiltVariant

MODEL = "model"
IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
PROTOCOL_CLIENTS: dict[str, type[ProtocolClient]] = {
    "http-json": V2JsonClient, "http-binary": V2BinaryClient, "grpc": V2GrpcClient,
}  # fmt: skip
# our key -> Triton's cumulative counter for the model (every version summed)
METRICS = MetricsPage({key: Sample(name, {"model": MODEL}) for key, name in {
    "success": "nv_inference_request_success",
    "inferences": "nv_inference_count",
    "executions": "nv_inference_exec_count",
    "queue_us": "nv_inference_queue_duration_us",
    "input_us": "nv_inference_compute_input_duration_us",
    "infer_us": "nv_inference_compute_infer_duration_us",
    "output_us": "nv_inference_compute_output_duration_us",
}.items()}, port="metrics")  # fmt: skip
_PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


class DynamicBatchingConfig(StrictModel):
    max_queue_delay_us: NonNegativeInt = Field(2000, description="wait to fill a batch")
    preferred_batch_size: list[PositiveInt] | None = None


class TritonConfig(AdapterConfig):
    kind: Literal["triton"]
    protocol: Literal["http-json", "http-binary", "grpc"] = "http-binary"
    # always >= 1: the batch axis exists and dims are per instance; 0 would mean none
    max_batch_size: PositiveInt = 16
    dynamic_batching: DynamicBatchingConfig | None = Field(None, description="None: off")
    instance_count: PositiveInt = 1
    instance_kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    backend: Literal["python", "onnxruntime", "pytorch", "tensorrt"] = "python"

    @model_validator(mode="after")
    def _consistent(self) -> TritonConfig:
        preferred = self.dynamic_batching and self.dynamic_batching.preferred_batch_size
        if preferred and max(preferred) > self.max_batch_size:
            raise ValueError(
                f"dynamic_batching.preferred_batch_size {preferred} exceeds "
                f"max_batch_size {self.max_batch_size}"
            )
        if self.backend == "tensorrt" and self.instance_kind != "KIND_GPU":
            raise ValueError("backend tensorrt runs on a GPU: set instance_kind: KIND_GPU")
        return self


class TritonAdapter(Adapter[TritonConfig]):
    kind: ClassVar[str] = "triton"
    config_class = TritonConfig
    workloads = frozenset({"tensor", "generate", "embed"})
    variants = frozenset().union(*BACKEND_VARIANTS.values()) | serving.SERVED_VARIANTS
    tunables = (
        Tunable("instance_count", IntRange(1, 4), "model instances", limit="server_cpus"),
        Tunable("max_batch_size", Choice((8, 16, 32)), "the largest batch the model takes"),
        Tunable("dynamic_batching.preferred_batch_size", Choice((0, 4, 8, 16)),
                "the batch size the scheduler aims for (0: none preferred)"),
        Tunable("dynamic_batching.max_queue_delay_us", IntRange(0, 8000, step=1000),
                "wait to fill a batch"),
    )  # fmt: skip

    @classmethod
    def tuned_config(cls, base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        config = super().tuned_config(base, params)
        batching = config.get("dynamic_batching")
        if isinstance(batching, dict) and isinstance(batching.get("preferred_batch_size"), int):
            size = batching["preferred_batch_size"]  # one preferred size, as a list
            config["dynamic_batching"] = {**batching, "preferred_batch_size": [size] if size
                                          else None}  # fmt: skip
        return config

    @classmethod
    def tuning_problem(cls, config: dict[str, Any], machine: Machine) -> str | None:
        preferred = (config.get("dynamic_batching") or {}).get("preferred_batch_size") or []
        if preferred and max(preferred) > int(config.get("max_batch_size", 16)):
            return (f"preferred batch size {max(preferred)} is over max_batch_size "
                    f"{config.get('max_batch_size', 16)}")  # fmt: skip
        return super().tuning_problem(config, machine)

    description = "Triton Inference Server 2.51 (python backend here; all in the image)"
    stack_packages = ("nvidia-pytriton", "onnxruntime")

    def own_versions(self, server: Server) -> dict[str, str | None]:
        # the server's own word (GET /v2): right for the bundled binary and an image alike
        return {"tritonserver": served_field(f"{server.base_url}/v2", "version")}

    ports = ("http", "grpc", "metrics")
    # what the bundled tritonserver (nvidia-pytriton's) can load; the image has them all
    local_backends: ClassVar[frozenset[str]] = frozenset({"python"})
    environment = Environment(
        "triton",
        requirements=("nvidia-pytriton==0.7.0", "numpy<2", "onnxruntime>=1.18",
                      # what `import harness.runtime` pulls in through harness/__init__
                      "pydantic>=2.6", "httpx>=0.27", "httptools>=0.6",
                      # the LLM engine (harness/llm/serving.py)
                      "transformers>=4.45", "tokenizers>=0.19", "safetensors>=0.4"),
        preinstall=("torch==2.13.0",),
        expected_s=(30.0, 70.0),  # uv, pip (docs/measurements.md)
    )  # fmt: skip
    # "failed to load '<model>' version 1: <reason>" carries the server's reason
    # (or "Poll failed for model directory ...: failed to read text proto" for a bad config)
    fatal_log_patterns = ("failed to load '", "Poll failed", "error: creating server",
                          "failed to start")  # fmt: skip
    metrics = METRICS

    def __init__(self, config: TritonConfig) -> None:
        super().__init__(config)
        self._shm_prefix: dict[Path, str] = {}

    def supports(self, variant: str) -> bool:
        if self.workload == "embed":  # text in: the tokenizer runs in the python backend
            return self.config.backend == "python"
        if variant in serving.SERVED_VARIANTS:
            return self.config.backend == "python"
        return variant in BACKEND_VARIANTS[self.config.backend]

    @property
    def generates(self) -> bool:
        return self.workload == "generate"

    def settings(self) -> dict[str, Any]:
        if not self.generates:
            return super().settings()
        c = self.config  # a decoupled model takes no batch axis: the batching keys do not apply
        # what the engine does (no cache, one sequence at a time) wins over what was asked
        return {"kind": c.kind, "protocol": "generate_stream", "instance_count": c.instance_count,
                "backend": "python (decoupled)", **self.workload_settings,
                **serving.SETTINGS}  # fmt: skip

    def metrics_page(self, server: Server) -> MetricsPage | None:
        if self.workload == "embed":  # Triton's own counters and the encoder's split
            return MetricsPage({**METRICS.samples, **embedding.SAMPLES}, port="metrics")
        if not self.generates:
            return METRICS
        return MetricsPage({**METRICS.samples, **serving.SAMPLES}, port="metrics",
                           series=serving.SERIES)  # fmt: skip

    def _spec(self) -> RepoSpec:
        c, batching = self.config, self.config.dynamic_batching
        return RepoSpec(
            model=MODEL,
            backend=c.backend,
            max_batch_size=c.max_batch_size,
            instance_count=c.instance_count,
            instance_kind=c.instance_kind,
            queue_delay_us=batching.max_queue_delay_us if batching else None,
            preferred_batch_sizes=tuple(batching.preferred_batch_size or ()) if batching else (),
        )

    def prepare(self, variant: BuiltVariant, workdir: Path) -> None:
        """The repository, for whichever launcher runs it (the container needs the native
        backends' repositories too, so an unavailable local backend is not an error here)."""
        if self.generates:
            write_llm_repository(workdir / "repo", MODEL, self.config.instance_count,
                                 str(variant.path), str(PROJECT_ROOT))  # fmt: skip
            return
        write_repository(workdir / "repo", self._spec(), variant, str(variant.path),
                         str(PROJECT_ROOT))  # fmt: skip

    def _site_packages(self) -> Path:
        assert self.environment is not None
        return self.environment.path / "lib" / _PY / "site-packages"

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        if self.config.backend not in self.local_backends:
            raise UnavailableError(
                f"triton backend {self.config.backend!r} is unavailable here: the bundled "
                "tritonserver has only the python backend (use the container launcher on a "
                "GPU box, image " + IMAGE + ")"
            )
        dist = self._site_packages() / "pytriton" / "tritonserver"
        backends = self._link_backends(workdir, dist)
        prefix = self._shm_prefix.setdefault(workdir, f"{owned(SHM_PREFIX)}{secrets.token_hex(4)}_")
        argv = [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={workdir / 'repo'}",
            f"--backend-directory={backends}",
            f"--http-address={host}", f"--http-port={ports['http']}",
            f"--grpc-address={host}", f"--grpc-port={ports['grpc']}",
            f"--metrics-address={host}", f"--metrics-port={ports['metrics']}",
            "--allow-gpu-metrics=false", "--allow-cpu-metrics=false",
            "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
            "--log-verbose=0",
            # keep running when the model fails to load, so the launcher reports the
            # server's reason from the log instead of an exit code
            "--exit-on-error=false",
            f"--backend-config=python,shm-region-prefix-name={prefix}",
        ]  # fmt: skip
        return ProcessSpec(argv=argv, env=self._server_env(), cwd=workdir)

    def _link_backends(self, workdir: Path, dist: Path) -> Path:
        """A private backends folder: the python backend finds its stub only next to itself,
        and the stub must match this Python; the shared install stays untouched."""
        folder = workdir / "backends" / "python"
        folder.mkdir(parents=True, exist_ok=True)
        links = {
            "libtriton_python.so": dist / "backends" / "python" / "libtriton_python.so",
            "triton_python_backend_utils.py": dist / "backends" / "python"
            / "triton_python_backend_utils.py",
            "triton_python_backend_stub": dist / "python_backend_stubs"
            / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub",
        }  # fmt: skip
        for name, target in links.items():
            link = folder / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
        return folder.parent

    def _server_env(self) -> dict[str, str]:
        assert self.environment is not None
        # The environment is a venv of this very interpreter, so its LIBDIR is ours: the
        # stub links libpython3.x.so and must not pick up the system's older one.
        libs = [sysconfig.get_config_var("LIBDIR") or "",
                str(self._site_packages() / "nvidia_pytriton.libs"),
                os.environ.get("LD_LIBRARY_PATH", "")]  # fmt: skip
        path = [str(self.environment.path / "bin"), os.environ.get("PATH", "")]
        # the stub finds its site-packages from the first `python3` on PATH
        return {"LD_LIBRARY_PATH": os.pathsep.join(p for p in libs if p),
                "PATH": os.pathsep.join(p for p in path if p)}  # fmt: skip

    def cleanup(self, workdir: Path) -> None:
        # a killed server (or stub) leaves its python-backend shared memory regions behind
        prefix = self._shm_prefix.pop(workdir, None)
        if prefix:
            for path in glob.glob(f"/dev/shm/{glob.escape(prefix)}*"):
                Path(path).unlink(missing_ok=True)

    def container_spec(
        self, variant: BuiltVariant, workdir: Path, gpus: bool = False
    ) -> ContainerSpec:
        repo = workdir / "repo-container"
        if self.generates:
            write_llm_repository(repo, MODEL, self.config.instance_count, "/variant",
                                 "/servingbench")  # fmt: skip
        else:
            write_repository(repo, self._spec(), variant, "/variant", "/servingbench")
        ports = {"http": 8000, "grpc": 8001, "metrics": 8002}
        command = ["tritonserver", "--model-repository=/models", "--log-verbose=0",
                   "--exit-on-error=false", f"--allow-gpu-metrics={str(gpus).lower()}"]  # fmt: skip
        command += [f"--{name}-port={port}" for name, port in ports.items()]
        return ContainerSpec(
            image=IMAGE, command=command, ports=ports,
            mounts={str(repo): "/models", str(variant.path): "/variant",
                    str(PROJECT_ROOT): "/servingbench"},
            shm_size="1g", gpus=gpus,
        )  # fmt: skip

    def probe(self, server: Server) -> bool:
        try:
            for path in ("/v2/health/ready", f"/v2/models/{MODEL}/ready"):
                if http().get(f"{server.base_url}{path}", timeout=2.0).status_code != 200:
                    return False
        except httpx.HTTPError:
            return False
        return True

    def client(self, server: Server) -> Client:
        """The configured protocol's client: the HTTP port, or the gRPC one for `grpc`;
        Triton's generate_stream endpoint for text generation."""
        if self.generates:
            return TritonGenerateClient(server.base_url or "", MODEL)
        inp, out = tensor_names(self.config.backend)
        base = server.base_url or ""
        if self.config.protocol == "grpc":
            base = f"grpc://{httpx.URL(base).host}:{server.ports['grpc']}"
        cls = PROTOCOL_CLIENTS[self.config.protocol]
        return cls(base, f"/v2/models/{MODEL}/infer", input_name=inp, output_name=out)  # type: ignore[call-arg]

    def kserve_predictor(
        self, variant: str, model_dir: str, http_port: int, grpc_port: int
    ) -> KServePredictor:
        """KServe's Triton runtime over a model repository at `storageUri` (whose backends
        the runtime image has: onnxruntime, not python), in the protocol the target speaks."""
        grpc = self.config.protocol == "grpc"
        return KServePredictor("triton", PROTOCOL_GRPC_V2 if grpc else PROTOCOL_V2)

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, float]:
        if "output_tokens" in after:  # the LLM engine's counters
            view = token_breakdown(before, after, requests, serving.TIMES_MS)
            if view and "queue_us" in after:  # requests wait in Triton's scheduler, not ours
                waited = after["queue_us"] - before.get("queue_us", 0.0)
                view["server_queue_ms"] = view.get("server_queue_ms", 0.0) + waited / 1e3 / requests
            return view
        split = embedding.breakdown(before, after, requests) if self.workload == "embed" else {}
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in METRICS.samples}
        if not before or delta["success"] <= 0:
            return split
        served = delta["success"]
        compute_us = delta["input_us"] + delta["infer_us"] + delta["output_us"]
        result = {"server_queue_ms": delta["queue_us"] / served / 1000,
                  "server_compute_ms": compute_us / served / 1000}  # fmt: skip
        if delta["executions"] > 0:  # instances per model execution: the real batch size
            result["server_batch_avg"] = delta["inferences"] / delta["executions"]
        return {**result, **split}
