"""No protocol at all: the floor's client calls the variant inside the load process.

`endpoint` hands the load engine the variant folder and the inputs (it loads the predictor
in its own process); `infer` loads it here, once, for the fidelity check.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from harness.load.endpoints import InProcessEndpoint
from harness.protocols.base import TensorClient


class InProcessClient(TensorClient):
    name: ClassVar[str] = "in-process"

    def __init__(self, variant_dir: str, threads: int = 1) -> None:
        self.variant_dir = variant_dir
        self.threads = threads
        self._predict: Any = None

    def infer(self, batch: np.ndarray, timeout_s: float = 30.0) -> np.ndarray:
        if self._predict is None:
            from harness.runtime import load_predictor

            self._predict = load_predictor(self.variant_dir, threads=self.threads)
        return np.asarray(self._predict(batch))

    def endpoint(
        self, instances: np.ndarray, expected: np.ndarray | None = None
    ) -> InProcessEndpoint:
        return InProcessEndpoint(self.variant_dir, instances, threads=self.threads)
