"""servingbench-echo: a third-party adapter found through the `servingbench.adapters`
entry point, with no change to servingbench itself.

Recipe
- serves: eager, torchscript, onnx (through `harness.runtime`)
- starts: `python -m servingbench_echo.server --host H --port P` (stdlib ThreadingHTTPServer)
- ready: `GET /health` is 200 once the model is loaded (503 before)
- protocol: plain-json, `POST /predict`
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from harness import PYTHON, Adapter, AdapterConfig, BuiltVariant, ProcessSpec

__all__ = ["EchoAdapter", "EchoConfig"]


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
