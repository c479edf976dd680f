"""The floor: the bare model called inside the load process. No server, no network.

Recipe
- serves: every variant (through `harness.runtime`)
- files: none; starts: nothing (`process_spec` is None)
- the load engine loads the variant itself and calls it synchronously, one request at a
  time: the best latency any server could reach with the same model and threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from harness.adapter import Adapter, AdapterConfig, ProcessSpec, Server
from harness.protocols.inprocess import InProcessClient
from harness.variants import VARIANT_NAMES, BuiltVariant


class InprocessConfig(AdapterConfig):
    kind: Literal["inprocess"]


class InprocessAdapter(Adapter[InprocessConfig]):
    kind: ClassVar[str] = "inprocess"
    config_class = InprocessConfig
    variants = frozenset(VARIANT_NAMES)
    description = "bare model in the load process (the floor)"
    stack_packages = ("onnxruntime", "torch")
    ports = ()
    baseline = True

    def __init__(self, config: InprocessConfig) -> None:
        super().__init__(config)
        self._clients: dict[str, InProcessClient] = {}

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec | None:
        return None

    def client(self, server: Server) -> InProcessClient:
        assert server.variant is not None
        key = str(server.variant.path)  # one predictor per variant, loaded once
        if key not in self._clients:
            self._clients[key] = InProcessClient(key, int(server.info.get("threads", 1)))
        return self._clients[key]
