"""What a model zoo entry provides: a reference model built deterministically, plus data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from harness.config import StrictModel


@dataclass
class ModelBundle:
    """A built reference model and the data every variant and target is judged on."""

    name: str
    key: str  # recipe hash: the cache folder's name
    path: Path
    module: Any  # torch.nn.Module in eval mode (fp32): the reference
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    reference_test: np.ndarray  # fp32 reference outputs on x_test
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one instance (without the batch axis)."""
        return tuple(self.x_test.shape[1:])

    @property
    def test_accuracy(self) -> float:
        return float((self.reference_test.argmax(axis=1) == self.y_test).mean())


class ModelEntry(Protocol):
    """A zoo entry: its scenario config class, how to build it, how to rebuild its module."""

    name: ClassVar[str]
    config_class: ClassVar[type[StrictModel]]
    workload: ClassVar[str]  # its family in harness/workloads: "tensor" or "generate"

    def build(self, config: Any) -> Any: ...

    def make_module(self, config: Any) -> Any: ...
