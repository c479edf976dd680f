"""What the runner needs from a load generator: run a step plan, give back its records."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from harness.load.endpoints import Endpoint
from harness.load.engine import StepPlan
from harness.load.records import StepRecords


class LoadBackend(Protocol):
    def run(self, endpoint: Endpoint, plan: StepPlan) -> StepRecords: ...

    def close(self) -> None: ...

    def __enter__(self) -> LoadBackend: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
