"""The floor: the bare model called inside the load process. No server, no network.

Recipe
- serves: every variant (through `harness.runtime`)
- files: none; starts: nothing (`process_spec` is None)
- the load engine loads the variant itself and calls it synchronously, one request at a
  time: the best latency any server could reach with the same model and threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from harness.adapter import Adapter, AdapterConfig, ProcessSpec, Server
from harness.load.endpoints import Endpoint, InProcessEndpoint
from harness.runtime import load_predictor
from harness.variants import VARIANT_NAMES, BuiltVariant


class InprocessConfig(AdapterConfig):
    kind: Literal["inprocess"]


class InprocessAdapter(Adapter[InprocessConfig]):
    kind: ClassVar[str] = "inprocess"
    config_class = InprocessConfig
    variants = frozenset(VARIANT_NAMES)
    description = "bare model in the load process (the floor)"
    ports = ()
    baseline = True

    def __init__(self, config: InprocessConfig) -> None:
        super().__init__(config)
        self._predictors: dict[str, Any] = {}

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec | None:
        return None

    def endpoint(self, server: Server, variant: BuiltVariant, instances: np.ndarray) -> Endpoint:
        return InProcessEndpoint(
            str(variant.path), instances, threads=int(server.info.get("threads", 1))
        )

    def infer(self, server: Server, variant: BuiltVariant, batch: np.ndarray) -> np.ndarray:
        key = str(variant.path)
        if key not in self._predictors:
            self._predictors[key] = load_predictor(
                variant.path, threads=int(server.info.get("threads", 1))
            )
        return self._predictors[key](batch)
