"""Joining a Ray cluster, and what its nodes are."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from harness.errors import ServingBenchError

# The custom resource a node declares to take targets: one per node (`ray start
# --resources '{"servingbench_node": 1}'`), one per target, so two targets never share a
# node's measured CPUs. A node without it (a head kept for the driver) gets no target.
NODE_RESOURCE = "servingbench_node"
NAMESPACE = "servingbench"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ClusterError(ServingBenchError):
    """The cluster cannot be reached, or cannot run what was asked of it."""


@dataclass(frozen=True)
class Cluster:
    address: str
    nodes: list[dict[str, Any]]  # alive nodes: id, ip, hostname, resources

    def describe(self) -> dict[str, Any]:
        return {"address": self.address, "nodes": self.nodes}


def connect(address: str) -> Cluster:
    """Connect this process to the cluster at `address` (host:port of its GCS, or "auto")."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in _LOOPBACK:
        # Ray turns a loopback address into the machine's own before connecting, and a
        # cluster started on 127.0.0.1 does not listen there; this keeps it on loopback.
        # Read when ray is first imported: set before that.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(
            "--ray needs Ray installed here: pip install 'servingbench[ray]'"
        ) from exc
    if not ray.is_initialized():
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                     configure_logging=False)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"--ray {address}: cannot join the Ray cluster: {exc}") from exc
    cluster = Cluster(address, alive_nodes())
    if not any(n["resources"].get(NODE_RESOURCE) for n in cluster.nodes):
        raise ClusterError(
            f"--ray {address}: no node of this cluster takes targets: start each node that "
            f"should with `ray start ... --resources '{{\"{NODE_RESOURCE}\": 1}}'` "
            f"(docs/ray.md)"
        )
    return cluster


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [
        {
            "node_id": n["NodeID"],
            "ip": n.get("NodeManagerAddress"),
            "hostname": n.get("NodeManagerHostname"),
            "resources": dict(n.get("Resources") or {}),
        }
        for n in ray.nodes()
        if n.get("Alive")
    ]


def node_alive(node_id: str) -> bool:
    return any(n["node_id"] == node_id for n in alive_nodes())


def this_node() -> dict[str, Any]:
    """Where the calling Ray task runs: recorded with each target (provenance)."""
    import socket

    import ray

    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    found = next((n for n in alive_nodes() if n["node_id"] == node_id), {})
    return {
        "node_id": node_id,
        "ip": found.get("ip"),
        "hostname": socket.gethostname(),
        "resources": found.get("resources", {}),
        "assigned": {k: v for k, v in context.get_assigned_resources().items()},
        "pid": os.getpid(),
        "cpus_seen": len(os.sched_getaffinity(0)),
    }
