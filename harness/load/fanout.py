"""More than one load process when one is not enough.

A step is split across N load processes: closed-loop users are dealt out, an open-loop rate
is divided (independent Poisson streams sum to a Poisson stream of the total rate; constant
streams are phase-shifted to interleave). All processes start at the same CLOCK_MONOTONIC
instant, so their records share a t0 and merge by concatenation. The busiest process's CPU
is what decides whether the load generator was the bottleneck.
"""

from __future__ import annotations

import dataclasses
import math
from time import perf_counter_ns
from typing import Any

import numpy as np

from harness.load.backend import ClosingContext
from harness.load.endpoints import Endpoint
from harness.load.plan import StepPlan
from harness.load.records import StepRecords, StreamColumns
from harness.load.worker import LoadProcess

START_LEAD_NS = 300_000_000  # time for every process to receive its plan and connect


_END_ORDER = {"duration": 1, "samples": 2, "settled": 3, "max_duration": 4, "errors": 5,
              "saturated": 6}  # fmt: skip


def _ending(parts: list[StepRecords]) -> dict[str, Any]:
    """What ended the merged step: the process that ran longest for it."""
    last = max((p.extra for p in parts), key=lambda e: _END_ORDER.get(str(e.get("ended_by")), 0))
    keys = ("ended_by", "samples_needed", "samples_had", "saturation")
    found = {k: last[k] for k in keys if k in last}
    if "samples_had" in found:  # every process counts only its own
        found["samples_had"] = sum(int(p.extra.get("samples_had", 0)) for p in parts)
        found["samples_needed"] = sum(int(p.extra.get("samples_needed", 0)) for p in parts)
    return found


def split(plan: StepPlan, parts: int) -> list[StepPlan]:
    """One plan per load process; they add up to `plan` (its sample count too)."""
    if parts == 1:
        return [plan]
    if plan.mode == "closed":
        shares = [plan.concurrency // parts + (i < plan.concurrency % parts) for i in range(parts)]
        return [dataclasses.replace(plan, concurrency=c, seed=plan.seed + i,
                                    min_samples=math.ceil(plan.min_samples * c / plan.concurrency))
                for i, c in enumerate(shares) if c > 0]  # fmt: skip
    if plan.whole_schedule:  # every process sends its share of the one schedule
        return [dataclasses.replace(plan, rate=plan.rate / parts, stride=parts, stride_index=i,
                                    min_samples=math.ceil(plan.min_samples / parts))
                for i in range(parts)]  # fmt: skip
    return [
        dataclasses.replace(
            plan,
            rate=plan.rate / parts,
            seed=plan.seed + 7919 * i,
            phase_s=(plan.phase_s + i / plan.rate),
            min_samples=math.ceil(plan.min_samples / parts),
        )
        for i in range(parts)
    ]


def merge(parts: list[StepRecords]) -> StepRecords:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    intended = np.concatenate([p.intended_ns for p in parts])
    order = np.argsort(intended, kind="stable")

    def column(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])[order]

    if first.request_id is not None:  # reordered with the rest
        ids = [i for p in parts for i in (p.request_id or [])]
        first = dataclasses.replace(first, request_id=[ids[k] for k in order.tolist()])
    if first.turn is not None:
        first = dataclasses.replace(first, turn=column("turn"))

    return dataclasses.replace(
        first,
        intended_ns=intended[order],
        sent_ns=column("sent_ns"),
        end_ns=column("end_ns"),
        status=column("status"),
        error=column("error"),
        window_ns=max(p.window_ns for p in parts),
        client_cpu_s=max(p.client_cpu_s for p in parts),  # the busiest process decides
        client_wall_s=max(p.client_wall_s for p in parts),
        requested_rate=sum(p.requested_rate or 0 for p in parts) or None,
        connections=sum(p.connections for p in parts),
        connection_cap_hit=any(p.connection_cap_hit for p in parts),
        error_samples=[e for p in parts for e in p.error_samples][:20],
        stream=(
            StreamColumns.concat([p.stream for p in parts if p.stream is not None]).take(order)
            if first.stream is not None
            else None
        ),
        extra={
            **first.extra,
            "processes": len(parts),
            "client_cpu_s_per_process": [p.client_cpu_s for p in parts],
            "late_start_ms": max(p.extra.get("late_start_ms", 0.0) for p in parts),
            # the step ended when its last process did; one short of samples says so
            **_ending(parts),
        },
    )


class LoadGroup(ClosingContext):
    """N load processes behaving as one: `run(endpoint, plan) -> StepRecords`."""

    def __init__(self, processes: int = 1, cpus: list[int] | None = None) -> None:
        self.workers = [LoadProcess(cpus) for _ in range(processes)]

    def run(self, endpoint: Endpoint, plan: StepPlan) -> StepRecords:
        plans = split(plan, len(self.workers))
        if len(plans) > 1:
            start = perf_counter_ns() + START_LEAD_NS
            plans = [dataclasses.replace(p, start_at_ns=start) for p in plans]
        return merge(self.run_parts(endpoint, plans))

    def run_parts(self, endpoint: Endpoint, plans: list[StepPlan]) -> list[StepRecords]:
        """Plans already split (and timed) elsewhere, one per process: their records, unmerged
        (load spread over several machines merges them once, harness/cluster/load.py)."""
        assert len(plans) <= len(self.workers), "one plan per load process"
        for worker, part in zip(self.workers, plans, strict=False):
            worker.submit(endpoint, part)
        return [w.collect(p) for w, p in zip(self.workers, plans, strict=False)]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
