"""Load profiles as small generators: each yields a step plan and receives its summary.

Receiving the previous step's summary is what lets later profiles (SLO search) choose the
next level; the fixed profiles here ignore it. Pure: testable without a network.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator
from typing import Any

from harness.confidence import MIN_TAIL_SAMPLES
from harness.load.plan import StepPlan
from harness.scenario import (
    ClosedLevel,
    ClosedProfile,
    LoadSpec,
    OpenLevel,
    OpenProfile,
    SloSearchProfile,
    SloSpec,
    TraceLevel,
    TraceProfile,
    VerdictSpec,
)
from harness.stats import StepSummary

TRACE_LONGEST_S = 3600.0  # a trace replay without a duration plays at most this long

# Yields plans, receives each step's summary, returns what it found (SLO search) or None.
PlanGenerator = Generator[StepPlan, StepSummary | None, dict[str, Any] | None]


def levels(profile: Any) -> list[ClosedLevel | OpenLevel | TraceLevel]:
    """The fixed levels of a profile (an SLO search starts from its first rate)."""
    if isinstance(profile, SloSearchProfile):
        return [OpenLevel(mode="open", rate=profile.start_rate, arrival=profile.arrival,
                          burstiness=profile.burstiness)]  # fmt: skip
    if isinstance(profile, ClosedProfile):
        return [ClosedLevel(mode="closed", concurrency=c) for c in profile.concurrency]
    if isinstance(profile, OpenProfile):
        return [OpenLevel(mode="open", rate=r, arrival=profile.arrival,
                          burstiness=profile.burstiness) for r in profile.rates]  # fmt: skip
    if isinstance(profile, TraceProfile):
        return [TraceLevel(mode="trace", speedup=x, duration_s=profile.duration_s)
                for x in profile.speedups]  # fmt: skip
    return list(profile.steps)


def percentiles_of(
    level: ClosedLevel | OpenLevel | TraceLevel,
    slo: SloSpec | None,
    verdicts: VerdictSpec | None,
) -> list[float]:
    """The latency percentiles a step is compared on: its own list, or the scenario's
    verdict percentiles and SLO percentile."""
    if level.percentiles is not None:
        return sorted(set(level.percentiles))
    found = set((verdicts or VerdictSpec()).percentiles)
    if slo is not None:
        found.add(slo.percentile)
    return sorted(found)


def samples_for(percentiles: list[float]) -> int:
    """Successful requests a step needs so each percentile has MIN_TAIL_SAMPLES beyond it
    (p99: 1,000; p50: 20): the rule `confidence.enough_samples` applies afterwards."""
    return max((math.ceil(MIN_TAIL_SAMPLES / (1 - q / 100) - 1e-9) for q in percentiles), default=0)


def plan_for(
    level: ClosedLevel | OpenLevel | TraceLevel,
    load: LoadSpec,
    seed: int,
    duration_s: float | None = None,
    warmup_s: float | None = None,
    slo: SloSpec | None = None,
    verdicts: VerdictSpec | None = None,
) -> StepPlan:
    stability = load.stability
    common: dict[str, Any] = {
        "max_duration_s": load.longest_s,
        "settle": load.settle,
        "min_samples": samples_for(percentiles_of(level, slo, verdicts)),
        "stability": (
            stability.window_s,
            stability.windows,
            stability.tolerance,
            stability.percentile,
        ),
        "duration_s": load.duration_s if duration_s is None else duration_s,
        "warmup_s": load.warmup_s if warmup_s is None else warmup_s,
        "timeout_s": load.timeout_s,
        "max_connections": load.max_connections,
        "max_requests": load.max_requests_per_step,
        "seed": seed,
        "max_error_rate": slo.max_error_rate if slo is not None else None,
    }
    if isinstance(level, ClosedLevel):
        return StepPlan(mode="closed", concurrency=level.concurrency, **common)
    if isinstance(level, TraceLevel):  # a trace is as long as it is: never extended
        common |= {"max_duration_s": None, "settle": False,
                   "duration_s": level.duration_s or TRACE_LONGEST_S}  # fmt: skip
        return StepPlan(mode="open", arrival="trace", speedup=level.speedup, **common)
    shape, label = level.shape()
    return StepPlan(mode="open", rate=level.rate, arrival=level.arrival,
                    burstiness=level.burstiness, shape=shape, shape_label=label,
                    **common)  # fmt: skip


def expected_steps(profile: Any) -> int:
    """How many steps a profile runs (an upper bound for an SLO search)."""
    return profile.max_steps if isinstance(profile, SloSearchProfile) else len(levels(profile))


def plans(
    load: LoadSpec, seed: int, slo: SloSpec | None = None, verdicts: VerdictSpec | None = None
) -> PlanGenerator:
    """The steps of the scenario's profile, in order."""
    if isinstance(load.profile, SloSearchProfile):
        return (yield from slo_search(load.profile, load, seed, slo or SloSpec(), verdicts))
    for index, level in enumerate(levels(load.profile)):
        yield plan_for(level, load, seed + index, slo=slo, verdicts=verdicts)
    return None


def meets_slo(summary: StepSummary, slo: SloSpec) -> bool:
    """The step's SLO percentile is under the SLO, and it may be ranked at all: valid, and no
    more failed requests than `slo.max_error_rate` (the step's own judgement)."""
    value = summary.slo_percentile_ms
    return (
        summary.eligible
        and summary.error_rate <= slo.max_error_rate
        and value == value  # not NaN: enough samples for the percentile
        and value <= slo.latency_ms
    )


def _long_enough(duration_s: float, rate: float, percentile: float) -> float:
    """A step long enough for the SLO percentile to mean something at this rate (capped)."""
    needed = MIN_TAIL_SAMPLES / (1 - percentile / 100) / rate * 1.1
    return min(max(duration_s, needed), 10 * duration_s)


def slo_search(
    profile: SloSearchProfile,
    load: LoadSpec,
    seed: int,
    slo: SloSpec,
    verdicts: VerdictSpec | None = None,
) -> PlanGenerator:
    """Bracket (multiply by `growth`) then bisect (geometric mean) the open-loop rate."""
    passing: float | None = None  # highest rate that met the SLO
    failing: float | None = None  # lowest rate that did not
    rate = profile.start_rate
    steps = 0
    for steps in range(1, profile.max_steps + 1):
        level = OpenLevel(mode="open", rate=round(rate, 3), arrival=profile.arrival,
                          burstiness=profile.burstiness)  # fmt: skip
        summary = yield plan_for(level, load, seed + steps, duration_s=_long_enough(
            load.duration_s, level.rate, slo.percentile), slo=slo, verdicts=verdicts)  # fmt: skip
        if summary is not None and meets_slo(summary, slo):
            passing = max(passing or 0.0, level.rate)
        else:
            failing = min(failing or float("inf"), level.rate)
        if failing is None:
            if level.rate >= profile.max_rate:
                break  # meets the SLO at the highest rate allowed
            rate = min(level.rate * profile.growth, profile.max_rate)
        elif passing is None:
            rate = level.rate / profile.growth
        elif failing / passing - 1 <= profile.precision:
            break
        else:
            rate = (passing * failing) ** 0.5
    return {
        "kind": "slo_search",
        "rate": passing,
        "bracket": [passing, failing],
        "slo_ms": slo.latency_ms,
        "percentile": slo.percentile,
        "steps": steps,
        "converged": passing is not None
        and (failing is None or failing / passing - 1 <= profile.precision),
    }


def warmup_plan(load: LoadSpec, seed: int) -> StepPlan | None:
    """A target's warm-up: its first level, run for `target_warmup_s`, never recorded."""
    if load.target_warmup_s <= 0:
        return None
    plan = plan_for(
        levels(load.profile)[0], load, seed, duration_s=load.target_warmup_s, warmup_s=0.0
    )  # never extended: nothing of it is measured
    return dataclasses.replace(plan, max_duration_s=None, min_samples=0, settle=False,
                               duration_s=load.target_warmup_s)  # fmt: skip
