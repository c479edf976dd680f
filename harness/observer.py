"""Progress events. The engine never prints: the CLI subscribes rich, tests a recorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.load.plan import StepPlan
from harness.stats import StepSummary


class Observer:
    """Every hook is optional; the default does nothing."""

    def on_phase(self, message: str) -> None: ...

    def on_target_start(self, target: str, index: int, total: int) -> None: ...

    def on_step_start(self, target: str, plan: StepPlan) -> None: ...

    def on_step_end(
        self, target: str, plan: StepPlan, summary: StepSummary, row: dict[str, Any]
    ) -> None:
        """A step is on disk: its summary, and its whole steps.csv row."""

    def on_target_end(self, target: str, status: str, error: str | None) -> None: ...


@dataclass
class RecordingObserver(Observer):
    events: list[tuple[str, Any]] = field(default_factory=list)

    def on_phase(self, message: str) -> None:
        self.events.append(("phase", message))

    def on_target_start(self, target: str, index: int, total: int) -> None:
        self.events.append(("target_start", target))

    def on_step_end(
        self, target: str, plan: StepPlan, summary: StepSummary, row: dict[str, Any]
    ) -> None:
        self.events.append(("step_end", (target, plan.label, summary)))

    def on_target_end(self, target: str, status: str, error: str | None) -> None:
        self.events.append(("target_end", (target, status, error)))
