"""What this machine can carry, checked before a run starts: refusals and warnings.

A scenario can be valid and still impossible here: 100,000 connections on a box that may
open 1,024 files, a percentile a step cannot reach at the rate it asks for. Refusals are
`ConfigError`s naming the field and the limit; warnings are lines the CLI prints (and the
run records) without stopping. Pure field bounds (a step of at most a day, requests per
step) are the scenario's own validators; what depends on the machine lives here.
"""

from __future__ import annotations

import math
import resource
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

FD_RESERVE = 128  # files the load process needs besides its connections (logs, parquet, ...)
PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def connection_limit() -> tuple[int, str]:
    """How many client connections one load process can hold open here, and why."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = []
    if soft != resource.RLIM_INFINITY:
        limits.append((soft - FD_RESERVE, f"open files (ulimit -n {soft})"))
    try:
        low, high = (int(v) for v in PORT_RANGE.read_text().split())
        limits.append((high - low + 1, f"local ports ({low}-{high})"))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else (1_000_000, "no limit found")


def _levels(scenario: Any) -> list[tuple[str, Any]]:
    from harness.profiles import levels

    profile = scenario.load.profile
    if profile.kind == "slo_search":  # it starts at start_rate; later rates are its own
        return [("load.profile.start_rate", levels(profile)[0])]
    field = {"closed": "concurrency", "open": "rates", "sweep": "steps"}[profile.kind]
    return [(f"load.profile.{field}[{i}]", lv) for i, lv in enumerate(levels(profile))]


def estimate_s(scenario: Any, targets: int | None = None) -> tuple[float, float]:
    """(shortest, longest) seconds of load a run takes: every target's warm-up and steps at
    their minimum and at their maximum duration, times the repeats, plus the calibration.
    Server start-ups and model builds come on top (they are the machine's, not the plan's)."""
    from harness.profiles import expected_steps

    load = scenario.load
    steps = expected_steps(load.profile)
    n = len(scenario.targets) if targets is None else targets
    per_low = load.target_warmup_s + steps * (load.warmup_s + load.duration_s)
    per_high = load.target_warmup_s + steps * (load.warmup_s + load.longest_s)
    calibration = 4.0 if load.calibrate else 0.0
    repeats = scenario.repeats
    return calibration + repeats * n * per_low, calibration + repeats * n * per_high


def check(scenario: Any, source: str = "scenario") -> list[str]:
    """ConfigError for what this machine cannot run; the warnings for what it can."""
    from harness.profiles import percentiles_of, samples_for

    load = scenario.load
    problems, warnings = [], []
    limit, why = connection_limit()
    for field, level in _levels(scenario):
        if level.mode == "closed":
            needed = math.ceil(level.concurrency / load.processes)
            if needed > limit:
                problems.append((field, f"{level.concurrency:,} connections "
                                 f"({needed:,} per load process) exceed what this machine "
                                 f"allows one process: {limit:,} ({why})"))  # fmt: skip
        elif level.mode == "open":  # a step extends up to load.max_duration_s for samples
            expected = level.rate * load.longest_s
            for q in percentiles_of(level, scenario.slo, scenario.verdicts):
                need = samples_for([q])
                if expected < need:
                    warnings.append(
                        f"{field}: {level.rate:g}/s for at most {load.longest_s:g} s expects "
                        f"~{expected:,.0f} requests; a p{q:g} needs {need:,} (it will be "
                        "reported as insufficient data: raise load.max_duration_s, or give "
                        "the level `percentiles: [50]`)"
                    )
    if load.max_connections > limit:
        warnings.append(
            f"load.max_connections: {load.max_connections:,} is more than this machine allows "
            f"one process ({limit:,}, {why}); open loop will stop opening connections there"
        )
    if problems:
        raise ConfigError(source, problems)
    return warnings
