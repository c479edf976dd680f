"""A stack's search space: its adapter's declared tunables, narrowed by the scenario's
`tune.stacks[i].space`, and clipped to what is safe on this machine.

Pure (no optimizer): the scenario validator calls `check_tune` to name a mistyped tunable
or a value outside what the adapter declares; the tuner (`harness/tuning.py`) calls
`stack_space` to get the domains it hands to Optuna.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness import registry

if TYPE_CHECKING:
    from harness.scenario import SloSpec

from harness.tunables import (
    Choice,
    Domain,
    FloatRange,
    IntRange,
    Machine,
    Tunable,
    get_path,
    safe_domain,
)


@dataclass(frozen=True)
class StackSpace:
    """What one stack's trials may vary, and what was left out and why."""

    target: str
    adapter: str
    domains: dict[str, Domain]  # dotted config key -> the values a trial may take
    hand: dict[str, Any]  # the hand-set target's value of each tunable (None: unset)
    notes: list[str] = field(default_factory=list)  # clipped or fixed tunables, said so

    def grid(self) -> dict[str, list[Any]]:
        return {path: domain.values() for path, domain in self.domains.items()}

    def grid_size(self) -> int:
        size = 1
        for values in self.grid().values():
            size *= len(values)
        return size

    def describe(self) -> dict[str, str]:
        return {path: domain.describe() for path, domain in self.domains.items()}


def _override(tunable: Tunable, given: Any, where: str) -> tuple[Domain | None, str | None]:
    """The narrowed domain of one tunable, or a problem naming `where`."""
    declared = tunable.domain
    if isinstance(given, list):
        if not given:
            return None, f"{where}: give at least one value"
        bad = [v for v in given if not _fits(declared, v)]
        if bad:
            return None, (
                f"{where}: {', '.join(map(repr, bad))} outside what the adapter "
                f"declares ({declared.describe()})"
            )
        values = tuple(int(v) if isinstance(declared, IntRange) else v for v in given)
        return Choice(values), None
    low, high = given.low, given.high
    if isinstance(declared, Choice):
        return None, f"{where}: a choice ({declared.describe()}): give a list of values"
    if not (declared.contains(_num(declared, low)) and declared.contains(_num(declared, high))):
        return None, f"{where}: {low:g}..{high:g} is outside {declared.describe()}"
    if isinstance(declared, IntRange):
        if low != int(low) or high != int(high):
            return None, f"{where}: {tunable.path} takes whole numbers"
        step = int(given.step) if given.step else 1
        return IntRange(int(low), int(high), step, given.log and step == 1), None
    return FloatRange(float(low), float(high), given.log, given.grid_points), None


def _num(domain: Domain, value: float) -> Any:
    return int(value) if isinstance(domain, IntRange) and value == int(value) else value


def _fits(domain: Domain, value: Any) -> bool:
    if isinstance(domain, IntRange) and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) and not isinstance(domain, Choice):
        return False
    return domain.contains(value)


def _declared(scenario: Any, index: int) -> tuple[Any, Any, list[str]]:
    """(the stack's target, its adapter class, problems) for tune.stacks[index]."""
    stack = scenario.tune.stacks[index]
    where = f"tune.stacks[{index}].target"
    targets = {t.name: t for t in scenario.targets}
    target = targets.get(stack.target)
    if target is None:
        close = difflib.get_close_matches(stack.target, list(targets), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (
            None,
            None,
            [f"{where}: no target named {stack.target!r}{hint} (targets: {', '.join(targets)})"],
        )
    cls = registry.adapters()[target.adapter.kind]
    if not cls.tunables:
        return (
            target,
            cls,
            [
                f"{where}: adapter {cls.kind} declares no tunable settings "
                "(tunable adapters: "
                + ", ".join(sorted(k for k, c in registry.adapters().items() if c.tunables))
                + ")"
            ],
        )
    return target, cls, []


def check_tune(scenario: Any) -> list[str]:
    """Every problem of the scenario's `tune:` section, each naming its field."""
    problems: list[str] = []
    seen: set[str] = set()
    for index, stack in enumerate(scenario.tune.stacks):
        if stack.target in seen:
            problems.append(f"tune.stacks[{index}].target: {stack.target!r} is tuned twice")
        seen.add(stack.target)
        _, cls, found = _declared(scenario, index)
        problems += found
        if found:
            continue
        declared = {t.path: t for t in cls.tunables}
        for key in [*stack.space, *stack.fixed]:
            where = f"tune.stacks[{index}].{'space' if key in stack.space else 'fixed'}.{key}"
            if key not in declared:
                close = difflib.get_close_matches(key, list(declared), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    f"{where}: {cls.kind} has no tunable {key!r}{hint} "
                    f"(its tunables: {', '.join(declared)})"
                )
                continue
            if key in stack.space:
                _, problem = _override(declared[key], stack.space[key], where)
                if problem:
                    problems.append(problem)
        both = sorted(set(stack.space) & set(stack.fixed))
        if both:
            problems.append(f"tune.stacks[{index}]: {', '.join(both)} both fixed and searched")
    if scenario.tune.search.kind == "grid":
        for i, n in _grid_sizes(scenario):
            if n > 10_000:
                problems.append(
                    f"tune.stacks[{i}]: a grid of {n:,} combinations; narrow "
                    "`space` (at most 10,000)"
                )
    return problems


def _grid_sizes(scenario: Any) -> list[tuple[int, int]]:
    sizes = []
    for index in range(len(scenario.tune.stacks)):
        space = stack_space(scenario, index, Machine(10**6))
        sizes.append((index, space.grid_size()))
    return sizes


def stack_space(scenario: Any, index: int, machine: Machine) -> StackSpace:
    """The domains one stack's trials draw from, safe on `machine` (the scenario is valid)."""
    stack = scenario.tune.stacks[index]
    target, cls, _ = _declared(scenario, index)
    base = target.adapter.model_dump(mode="json")
    domains: dict[str, Domain] = {}
    hand: dict[str, Any] = {}
    notes: list[str] = []
    for tunable in cls.tunables:
        hand[tunable.path] = get_path(base, tunable.path)
        if tunable.path in stack.fixed:
            notes.append(f"{tunable.path} fixed at its hand-set value ({hand[tunable.path]})")
            continue
        domain: Domain | None = tunable.domain
        if tunable.path in stack.space:
            domain, _ = _override(tunable, stack.space[tunable.path], "")
        assert domain is not None
        safe = safe_domain(Tunable(tunable.path, domain, limit=tunable.limit), machine)
        if safe is None:
            bound = machine.bound(tunable.limit)
            notes.append(
                f"{tunable.path}: no value of {domain.describe()} is safe here "
                f"({tunable.limit} = {bound:g}); left as set"
            )
            continue
        if safe != domain:
            notes.append(
                f"{tunable.path}: {domain.describe()} clipped to {safe.describe()} "
                f"({tunable.limit} = {machine.bound(tunable.limit):g} here)"
            )
        domains[tunable.path] = safe
    return StackSpace(stack.target, cls.kind, domains, hand, notes)


# ---------------------------------------------------------------- a trial's figure


def _throughput_column(family: str) -> str:
    return "output_tokens_per_s" if family == "generate" else "throughput_rps"


def objective_value(
    rows: pd.DataFrame, kind: str, slo: SloSpec, family: str
) -> tuple[float | None, str]:
    """A trial's figure from its steps (steps.csv rows): the highest throughput of a step
    within the SLO (0 when none is), or the lowest SLO-percentile latency of a step that
    may be ranked (None when none may). With the reason when there is no figure."""
    if rows.empty:
        return None, "no step finished"
    ranked = (rows["eligible"] == True) & (rows["error_rate"] <= slo.max_error_rate)  # noqa: E712
    if kind == "min_latency":
        latency = rows.loc[ranked, "slo_percentile_ms"].dropna()
        if latency.empty:
            return None, "no step could be ranked (errors, invalid, or too few samples)"
        return float(latency.min()), ""
    within = ranked & (rows["slo_percentile_ms"] <= slo.latency_ms)
    if slo.ttft_ms is not None and "ttft_p99_ms" in rows:
        within &= rows["ttft_p99_ms"] <= slo.ttft_ms
    if slo.tpot_ms is not None and "tpot_p99_ms" in rows:
        within &= rows["tpot_p99_ms"] <= slo.tpot_ms
    figures = rows.loc[within, _throughput_column(family)].dropna()
    if figures.empty:
        return 0.0, "no step within the SLO"
    return float(figures.max()), ""
