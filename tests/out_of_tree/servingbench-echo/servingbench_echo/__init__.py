"""servingbench-echo: a third-party adapter found through the `servingbench.adapters`
entry point, with no change to servingbench itself.

Recipe
- serves: eager, torchscript, onnx (through `harness.runtime`)
- starts: `python -m servingbench_echo.server --host H --port P` (stdlib ThreadingHTTPServer)
- ready: `GET /health` is 200 once the model is loaded (503 before)
- protocol: plain-json, `POST /predict`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt

from harness import PYTHON, Adapter, AdapterConfig, BuiltVariant, ProcessSpec

__all__ = ["EchoAdapter", "EchoConfig", "FaultyAdapter", "FaultyConfig"]


class EchoConfig(AdapterConfig):
    kind: Literal["echo"]


class EchoAdapter(Adapter[EchoConfig]):
    kind: ClassVar[str] = "echo"
    config_class = EchoConfig
    variants = frozenset({"eager", "torchscript", "onnx"})
    description = "out-of-tree example: the model behind a stdlib HTTP server (servingbench-echo)"

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        argv = [PYTHON, "-m", "servingbench_echo.server", "--host", host,
                "--port", str(ports["http"])]  # fmt: skip
        return ProcessSpec(argv=argv, env={"ECHO_VARIANT_DIR": str(variant.path)})


class FaultyConfig(AdapterConfig):
    """The echo server, misbehaving on purpose (servingbench's fault tests)."""

    kind: Literal["faulty"]
    die_after: PositiveInt | None = Field(None, description="SIGKILL itself at this request")
    garbage_after: PositiveInt | None = Field(None, description="200 + garbage from here on")
    shed_every: PositiveInt | None = Field(
        None, description="503 for every n-th request that comes while another is served"
    )
    stall_every_s: NonNegativeFloat = Field(0.0, description="hold every answer this often")
    stall_s: NonNegativeFloat = Field(0.0, description="... for this long")
    fail_with: str | None = Field(None, description="HTTP 500 with this body, always")


class FaultyAdapter(EchoAdapter):
    kind: ClassVar[str] = "faulty"
    config_class = FaultyConfig
    description = "out-of-tree example: servingbench-echo's server, faults injected (tests)"

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        spec = super().process_spec(variant, workdir, host, ports)
        faults = self.config.model_dump(exclude={"kind"}, exclude_none=True)
        return ProcessSpec(spec.argv, {**spec.env, "ECHO_FAULTS": json.dumps(faults)})
