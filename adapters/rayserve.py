"""Ray Serve: the plain-JSON protocol behind Ray's own HTTP proxy, replicas and batching.

Recipe
- serves: eager, torchscript, onnx, onnx-int8 (through `harness.runtime`, as FastAPI does)
- files: none (each replica loads the variant folder directly)
- starts: `python -m adapters._rayserve_server`: a private Ray instance (never a cluster
  servingbench may be running on: `address="local"`) sized to the target's threads, Ray
  Serve's proxy on 127.0.0.1, one application of `replicas` replicas, the model loaded and
  warmed in each before the route answers
- ready: `GET /health` is routed to a replica: 200 once a replica has loaded the model
- listens: the served port on 127.0.0.1 only; Ray's own control plane on every interface
  (it has no loopback setting): `listens_beyond_loopback` says so, docs/ray.md why
- protocol: plain-json, `POST /predict`
- tunes: `replicas` (the threads are split between them), `batching` (`@serve.batch`: the
  largest batch in requests, and how long a batch waits to fill)
- not here: the LLM. Ray Serve LLM wraps vLLM (`ray.serve.llm`), whose CPU build lives in
  an environment of its own (adapters/vllm.py); serving tiny-llama through both at once
  would be a third copy of vLLM for one more row.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt

from harness.adapter import Adapter, AdapterConfig, ProcessSpec
from harness.config import StrictModel
from harness.environments import PYTHON
from harness.tunables import Choice, FloatRange, IntRange, Tunable, without_batch_of_one
from harness.variants import BuiltVariant


class ServeBatching(StrictModel):
    max_batch_size: PositiveInt = Field(16, description="@serve.batch: requests per batch")
    batch_wait_timeout_ms: NonNegativeFloat = Field(
        2.0, description="@serve.batch: how long the first request of a batch waits for more"
    )


class RayServeConfig(AdapterConfig):
    kind: Literal["rayserve"]
    replicas: PositiveInt = Field(1, description="Serve replicas (each a Ray actor process)")
    batching: ServeBatching | None = None
    max_ongoing_requests: PositiveInt = Field(
        64, description="per replica; the proxy queues the rest (Ray's default is 5)"
    )


class RayServeAdapter(Adapter[RayServeConfig]):
    kind: ClassVar[str] = "rayserve"
    config_class = RayServeConfig
    variants = frozenset({"eager", "torchscript", "onnx", "onnx-int8"})
    description = "Ray Serve: HTTP proxy, replicas as Ray actors, @serve.batch batching"
    stack_packages = ("ray", "starlette", "uvicorn", "onnxruntime", "torch")
    requires = ("ray", "starlette", "uvicorn")
    # Ray prints these when its own processes cannot start: it will never become ready
    fatal_log_patterns = ("RuntimeError: Failed to start", "ray.exceptions.RaySystemError")
    listens_beyond_loopback = (
        "Ray's own processes (GCS, raylet, agents, the Serve controller) listen on every "
        "interface: Ray has no setting that binds them to loopback; the served HTTP port is "
        "127.0.0.1 only. Firewall the machine (docs/ray.md)."
    )
    tunables = (
        Tunable("replicas", IntRange(1, 4), "Serve replicas (threads split between them)",
                limit="server_cpus"),
        Tunable("batching.max_batch_size", Choice((1, 4, 8, 16, 32)),
                "@serve.batch's largest batch (1: no batching)"),
        Tunable("batching.batch_wait_timeout_ms", FloatRange(0.5, 4.0, log=True, grid_points=4),
                "how long a batch waits to fill"),
    )  # fmt: skip

    @classmethod
    def tuned_config(cls, base: dict[str, object], params: dict[str, object]) -> dict[str, object]:
        return without_batch_of_one(super().tuned_config(base, params))

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        c = self.config
        argv = [PYTHON, "-m", "adapters._rayserve_server", "--host", host,
                "--port", str(ports["http"]), "--replicas", str(c.replicas),
                "--max-ongoing", str(c.max_ongoing_requests)]  # fmt: skip
        if c.batching:
            argv += ["--max-batch", str(c.batching.max_batch_size),
                     "--batch-wait-ms", str(c.batching.batch_wait_timeout_ms)]  # fmt: skip
        # the server is never a driver of a cluster servingbench itself runs on (--ray)
        env = {"SB_VARIANT_DIR": str(variant.path), "RAY_ADDRESS": ""}
        return ProcessSpec(argv=argv, env=env)
