"""What an adapter lets a tuner change: typed settings with ranges, and what is safe here.

An adapter declares `tunables` (a tuple of `Tunable`) on its class: each names a key of its
config (dotted for nested ones, e.g. `batching.max_batch_size`), its domain (an integer
range, a float range or a choice), and whether the machine bounds it (`limit="server_cpus"`:
more worker processes than the server has CPUs only contend). The tuner
(`harness/tuning.py`) builds its search space from these, narrowed by the scenario's
`tune.space`, clipped to what is safe here, and asks the adapter's `tuning_problem()` about
each combination before it launches anything. Pure data: no optimizer imported here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal

Value = int | float | str | bool


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False  # sampled on a log scale (TPE); a grid takes powers of two then

    def values(self) -> list[Value]:
        """Every value, for a grid (log: the powers of two in the range, and its ends)."""
        if self.log:
            found = {self.low, self.high}
            v = 1
            while v <= self.high:
                if v >= self.low:
                    found.add(v)
                v *= 2
            return sorted(found)
        return list(range(self.low, self.high + 1, self.step))

    def clip(self, high: int) -> IntRange | None:
        top = min(self.high, high)
        return None if top < self.low else IntRange(self.low, top, self.step, self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"int {self.low}..{self.high}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    grid_points: int = 3  # how many values a grid takes (evenly, or geometrically if log)

    def values(self) -> list[Value]:
        n = max(2, self.grid_points)
        if self.log and self.low > 0:
            ratio = (self.high / self.low) ** (1 / (n - 1))
            return [round(self.low * ratio**i, 6) for i in range(n)]
        return [round(self.low + (self.high - self.low) * i / (n - 1), 6) for i in range(n)]

    def clip(self, high: float) -> FloatRange | None:
        top = min(self.high, high)
        return None if top < self.low else FloatRange(self.low, top, self.log, self.grid_points)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"float {self.low:g}..{self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Choice:
    options: tuple[Value, ...]

    def values(self) -> list[Value]:
        return list(self.options)

    def clip(self, high: float) -> Choice | None:
        kept = tuple(v for v in self.options if not isinstance(v, int | float) or v <= high)
        return Choice(kept) if kept else None

    def contains(self, value: Any) -> bool:
        return value in self.options

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.options)


Domain = IntRange | FloatRange | Choice


@dataclass(frozen=True)
class Tunable:
    """One setting a tuner may change: `path` in the adapter's config, its domain."""

    path: str
    domain: Domain
    description: str = ""
    # bounded by the machine: "server_cpus" = at most the server's CPU count
    limit: Literal["server_cpus"] | None = None


@dataclass(frozen=True)
class Machine:
    """What bounds a setting here: the server's CPUs (its CPU set, or the machine's)."""

    server_cpus: int

    @classmethod
    def here(cls, server_cpus: list[int] | None) -> Machine:
        return cls(len(server_cpus) if server_cpus else (os.cpu_count() or 1))

    def bound(self, limit: str | None) -> float:
        return float(self.server_cpus) if limit == "server_cpus" else math.inf


def safe_domain(tunable: Tunable, machine: Machine) -> Domain | None:
    """The part of a tunable's domain that is safe on this machine (None: no value is)."""
    bound = machine.bound(tunable.limit)
    if math.isinf(bound):
        return tunable.domain
    return tunable.domain.clip(int(bound))


def set_path(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `config` with the dotted `path` set (nested mappings made as needed)."""
    head, _, rest = path.partition(".")
    out = dict(config)
    if not rest:
        out[head] = value
        return out
    inner = out.get(head)
    out[head] = set_path(inner if isinstance(inner, dict) else {}, rest, value)
    return out


def without_batch_of_one(config: dict[str, Any], section: str = "batching") -> dict[str, Any]:
    """`config` with its batching `section` dropped where a trial set its max_batch_size to
    1: a batch of one is no batcher (its delay is moot). FastAPI's and Ray Serve's rule."""
    batching = config.get(section)
    if isinstance(batching, dict) and batching.get("max_batch_size") == 1:
        return {**config, section: None}
    return config


def get_path(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
