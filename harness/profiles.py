"""Load profiles as small generators: each yields a step plan and receives its summary.

Receiving the previous step's summary is what lets later profiles (SLO search) choose the
next level; the fixed profiles here ignore it. Pure: testable without a network.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from harness.load.engine import StepPlan
from harness.scenario import ClosedLevel, ClosedProfile, LoadSpec, OpenLevel, OpenProfile
from harness.stats import StepSummary

PlanGenerator = Generator[StepPlan, StepSummary | None, None]


def levels(profile: Any) -> list[ClosedLevel | OpenLevel]:
    if isinstance(profile, ClosedProfile):
        return [ClosedLevel(mode="closed", concurrency=c) for c in profile.concurrency]
    if isinstance(profile, OpenProfile):
        return [OpenLevel(mode="open", rate=r, arrival=profile.arrival) for r in profile.rates]
    return list(profile.steps)


def plan_for(
    level: ClosedLevel | OpenLevel,
    load: LoadSpec,
    seed: int,
    duration_s: float | None = None,
    warmup_s: float | None = None,
) -> StepPlan:
    common: dict[str, Any] = {
        "duration_s": load.duration_s if duration_s is None else duration_s,
        "warmup_s": load.warmup_s if warmup_s is None else warmup_s,
        "timeout_s": load.timeout_s,
        "max_connections": load.max_connections,
        "max_requests": load.max_requests_per_step,
        "seed": seed,
    }
    if isinstance(level, ClosedLevel):
        return StepPlan(mode="closed", concurrency=level.concurrency, **common)
    return StepPlan(mode="open", rate=level.rate, arrival=level.arrival, **common)


def plans(load: LoadSpec, seed: int) -> PlanGenerator:
    """The steps of a fixed profile (closed, open or sweep), in order."""
    for index, level in enumerate(levels(load.profile)):
        yield plan_for(level, load, seed + index)


def warmup_plan(load: LoadSpec, seed: int) -> StepPlan | None:
    """A target's warm-up: its first level, run for `target_warmup_s`, never recorded."""
    if load.target_warmup_s <= 0:
        return None
    return plan_for(
        levels(load.profile)[0], load, seed, duration_s=load.target_warmup_s, warmup_s=0.0
    )
