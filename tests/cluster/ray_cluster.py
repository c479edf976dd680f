"""A local Ray cluster for the tests: a head and two worker nodes on 127.0.0.1.

Run as a script by tests/cluster/test_ray.py: prints one JSON line (the GCS address and
the worker nodes' ids), then takes commands on stdin: `kill NODE_ID` (the node dies as a
machine would: SIGKILL, no goodbye) and `stop`. The head declares no `servingbench_node`
slot: it only hosts the driver, as a cluster's head usually does.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # everything on loopback

from ray.cluster_utils import Cluster


def main() -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    workers = {}
    for _ in range(2):
        node = cluster.add_node(num_cpus=2, resources={"servingbench_node": 1})
        workers[node.node_id] = node
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "workers": list(workers)}), flush=True)
    try:
        for line in sys.stdin:
            command = line.split()
            if command[:1] == ["kill"] and command[1] in workers:
                cluster.remove_node(workers.pop(command[1]), allow_graceful=False)
                print(json.dumps({"killed": command[1]}), flush=True)
            elif command[:1] == ["stop"]:
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
