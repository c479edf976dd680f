"""One target's load from several Ray nodes: `load.nodes` > 1 under `--ray`.

The step is split into one plan per load process (harness/load/fanout.py: closed-loop users
dealt out, an open-loop rate divided, a trace strided), the plans dealt over the nodes of
the target's placement group: the target's own node runs its share in local load
processes, each other node in a `NodeLoad` actor that holds load processes of its own. All
start at one instant of the wall clock, which each node turns into its own monotonic clock
(records are times since that start, so they merge by concatenation as on one machine; the
nodes' clocks must agree, NTP does: a skew shows as `late_start_ms`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from harness.errors import ServingBenchError
from harness.load.backend import ClosingContext
from harness.load.endpoints import Endpoint
from harness.load.fanout import LoadGroup, merge, split
from harness.load.plan import StepPlan
from harness.load.records import StepRecords

# time for every node to receive its plans and connect (a Ray call, then the processes')
START_LEAD_NS = 1_500_000_000
# the placement group of the target this worker runs (relay.py sets it: the runner's thread
# does not see the task's own runtime context)
current_group: Any = None


def _local_start(wall_ns: int) -> int:
    """A wall-clock instant on this node's perf_counter clock (what the engine waits on)."""
    return time.perf_counter_ns() + (wall_ns - time.time_ns())


@ray.remote(num_cpus=0)  # its bundle holds the node's CPUs
class NodeLoad:
    """Load processes on one more node, run on the driver's clock."""

    def __init__(self, processes: int, cpus: list[int] | None) -> None:
        import socket

        self.group = LoadGroup(processes, cpus)
        self.where = {"node_id": ray.get_runtime_context().get_node_id(),
                      "hostname": socket.gethostname()}  # fmt: skip

    def node(self) -> dict[str, Any]:
        return self.where

    def run(self, endpoint: Endpoint, plans: list[StepPlan], wall_ns: int) -> list[StepRecords]:
        start = _local_start(wall_ns)
        return self.group.run_parts(
            endpoint, [dataclasses.replace(p, start_at_ns=start) for p in plans]
        )

    def close(self) -> None:
        self.group.close()


class ClusterLoad(ClosingContext):
    """`load.processes` processes over `load.nodes` nodes, behaving as one load backend."""

    def __init__(self, processes: int, nodes: int, cpus: list[int] | None) -> None:
        from ray.util import get_current_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = get_current_placement_group() or current_group
        if group is None:
            raise ServingBenchError(
                f"load.nodes: {nodes} places load on {nodes} Ray nodes: run the scenario with "
                "`servingbench run SCENARIO --ray ADDRESS`"
            )
        self.processes = processes
        per_node = [len(range(i, processes, nodes)) for i in range(nodes)]
        self.local = LoadGroup(per_node[0], cpus)
        self.remote = [
            NodeLoad.options(  # type: ignore[attr-defined]
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=i
                )
            ).remote(per_node[i], cpus)
            for i in range(1, nodes)
        ]
        self.nodes = [ray.get(actor.node.remote()) for actor in self.remote]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-load")

    def run(self, endpoint: Endpoint, plan: StepPlan) -> StepRecords:
        plans = split(plan, self.processes)
        wall = time.time_ns() + START_LEAD_NS
        count = 1 + len(self.remote)
        shares = [plans[i::count] for i in range(count)]
        others = zip(self.remote, shares[1:], strict=True)
        pending = [actor.run.remote(endpoint, share, wall) for actor, share in others if share]
        start = _local_start(wall)
        mine = [dataclasses.replace(p, start_at_ns=start) for p in shares[0]]
        local = self.pool.submit(self.local.run_parts, endpoint, mine) if mine else None
        parts = (local.result() if local else []) + [r for ref in pending for r in ray.get(ref)]
        merged = merge(parts)
        merged.extra["load_nodes"] = count
        merged.extra["load_processes_per_node"] = [len(s) for s in shares]
        return merged

    def close(self) -> None:
        for actor in self.remote:
            with contextlib.suppress(Exception):  # a lost node: its processes died with it
                ray.get(actor.close.remote(), timeout=30)
            ray.kill(actor)
        self.local.close()
        self.pool.shutdown()
