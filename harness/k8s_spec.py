"""What a target needs to run as a KServe InferenceService: the settings a scenario gives
(`K8sSpec`, e.g. the kserve adapter's `k8s:` block) and what an adapter declares about its
stack (`KServePredictor`: which KServe runtime serves it, with which protocol, container or
arguments). Plain types, no manifest building (that is `harness.k8s`), so adapter configs can
use them without importing the builder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, NonNegativeInt, PositiveInt, model_validator

from harness.config import StrictModel
from harness.environments import Environment

Runtime = Literal["custom", "pytorch", "triton", "huggingface"]
HTTP_PORT, GRPC_PORT = 8080, 8081  # what KServe's own runtimes listen on in a pod
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts `storageUri`
# a protocol family -> KServe's protocolVersion for the built-in runtimes
PROTOCOL_V1, PROTOCOL_V2, PROTOCOL_GRPC_V2 = "v1", "v2", "grpc-v2"
# The KServe SDK (and model server) live apart from the harness: kserve caps pandas<3,
# psutil<6 and protobuf<7, and cannot share a process with `tritonclient.grpc`. Manifests are
# checked with the SDK in this environment; the KServe model server's adapter runs in it too.
KSERVE_SDK_ENV = Environment(
    "kserve",
    requirements=("kserve==0.21.0", "onnxruntime>=1.18",
                  # what `import harness.runtime` pulls in through harness/__init__
                  "pydantic>=2.6", "httpx>=0.27", "httptools>=0.6",
                  # the sentence encoder's pipeline (harness/embedding.py)
                  "tokenizers>=0.19", "transformers>=4.45", "safetensors>=0.4"),
    preinstall=("torch==2.13.0",),
    expected_s=(30.0, 65.0),  # uv, pip (docs/measurements.md)
)  # fmt: skip


@dataclass(frozen=True)
class KServePredictor:
    """How KServe serves one adapter's target (`Adapter.kserve_predictor`).

    `runtime` "custom" runs `container` (command, args, ports; the builder adds image, env
    and resources); the built-in runtimes load `storageUri` themselves, with `args` and the
    `protocol_version` the target's client speaks."""

    runtime: Runtime
    protocol_version: str | None = None
    container: dict[str, Any] | None = None
    args: tuple[str, ...] = field(default_factory=tuple)


def _quantity(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Quantity = Annotated[str, BeforeValidator(_quantity)]


class K8sResources(StrictModel):
    cpu: Quantity | None = Field(
        None,
        pattern=r"^[0-9]+(\.[0-9]+)?m?$",
        description="CPU (e.g. 2, 500m); default: the scenario's server CPU count, else 1",
    )
    memory: Quantity = Field("1Gi", pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|[kmu])?$")
    gpus: NonNegativeInt = Field(0, description="nvidia.com/gpu")


class BatcherSpec(StrictModel):
    """KServe's batcher sidecar (it batches v1 `instances` requests)."""

    max_batch_size: PositiveInt = 32
    max_latency_ms: PositiveInt = Field(500, description="longest wait to fill a batch")
    timeout_s: PositiveInt | None = None


class K8sSpec(StrictModel):
    """How a target runs as a KServe InferenceService."""

    runtime: Runtime | None = Field(None, description="default: the adapter's own")
    name: str | None = Field(
        None, pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", description="default: target name"
    )
    namespace: str | None = None
    image: str | None = Field(None, description="custom runtime: image with servingbench+kserve")
    storage_uri: str | None = Field(
        None, description="where the model files are (s3://, gs://, pvc://)"
    )
    runtime_version: str | None = None
    min_replicas: NonNegativeInt = 1
    max_replicas: PositiveInt = 1
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] | None = None
    scale_target: PositiveInt | None = None
    container_concurrency: NonNegativeInt | None = Field(None, description="0: unlimited")
    batcher: BatcherSpec | None = None
    resources: K8sResources = K8sResources()
    deployment_mode: Literal["Serverless", "RawDeployment"] | None = None
    args: list[str] = Field(default_factory=list, description="extra server arguments")

    @model_validator(mode="after")
    def _replicas(self) -> K8sSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        return self
