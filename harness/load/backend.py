"""What the runner needs from a load generator: run a step plan, give back its records."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, TypeVar

from harness.load.endpoints import Endpoint
from harness.load.plan import StepPlan
from harness.load.records import StepRecords

_Self = TypeVar("_Self", bound="ClosingContext")


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


class ClosingContext:
    """`with backend:` closes it on the way out, whatever happened inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
