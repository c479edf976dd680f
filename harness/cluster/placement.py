"""What a target asks of a Ray node, and whether any node of the cluster has it."""

from __future__ import annotations

from typing import Any

from harness.cluster.connect import NODE_RESOURCE, ClusterError
from harness.scenario import Scenario


def cpus(scenario: Scenario) -> int:
    """The CPUs a target uses locally (its server's and its load's sets): the same there."""
    res = scenario.resources
    listed = set(res.server_cpus or []) | set(res.client_cpus or [])
    return max(1, len(listed))


def ask(scenario: Scenario, target: Any) -> dict[str, float]:
    """The resources of one target's node, as Ray counts them."""
    placement = target.placement
    wanted: dict[str, float] = {"CPU": float(cpus(scenario)), NODE_RESOURCE: 1.0}
    if placement.gpus:
        wanted["GPU"] = float(placement.gpus)
    if placement.gpu_type:
        # Ray's accelerator_type option is this resource: every GPU node declares its type
        wanted[f"accelerator_type:{placement.gpu_type}"] = 0.001
    wanted.update(placement.resources)
    return wanted


def task_options(wanted: dict[str, float]) -> dict[str, Any]:
    """`ray.remote(...).options(...)` for a task that needs `wanted`."""
    custom = {k: v for k, v in wanted.items() if k not in ("CPU", "GPU")}
    return {"num_cpus": wanted["CPU"], "num_gpus": wanted.get("GPU", 0), "resources": custom,
            "max_retries": 0}  # fmt: skip


def check_fits(name: str, wanted: dict[str, float], nodes: list[dict[str, Any]]) -> None:
    """Fail now, saying why, where Ray would wait forever for a node that cannot exist."""
    for node in nodes:
        if all(node["resources"].get(k, 0) >= v for k, v in wanted.items()):
            return
    have = "; ".join(
        f"{n['ip']} ({n['node_id'][:8]}): "
        + ", ".join(
            f"{k}={v:g}"
            for k, v in sorted(n["resources"].items())
            if not k.startswith(("node:", "memory", "object_store"))
        )
        for n in nodes
    )
    need = ", ".join(f"{k}={v:g}" for k, v in wanted.items())
    raise ClusterError(f"no node of the cluster can run target {name} ({need}); nodes: {have}")


def load_group(scenario: Scenario, wanted: dict[str, float], nodes: list[dict[str, Any]],
               name: str) -> Any:  # fmt: skip
    """A placement group of `load.nodes` bundles on as many distinct nodes (STRICT_SPREAD):
    the target's own (its server and the first share of its load) and one per other share
    of the load; all reserved at once, so no other target lands on them meanwhile."""
    from ray.util import placement_group

    count = scenario.load.nodes
    takers = [n for n in nodes if n["resources"].get(NODE_RESOURCE)]
    if len(takers) < count:
        raise ClusterError(
            f"target {name}: load.nodes is {count} but only {len(takers)} node(s) of the "
            f"cluster take targets ({NODE_RESOURCE})"
        )
    client = float(len(scenario.resources.client_cpus or []) or 1)
    bundles = [wanted] + [{"CPU": client, NODE_RESOURCE: 1.0} for _ in range(count - 1)]
    return placement_group(bundles, strategy="STRICT_SPREAD", name=f"servingbench-{name}")
