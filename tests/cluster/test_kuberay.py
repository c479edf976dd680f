"""The KubeRay manifests of docs/ray.md: on paper (no Kubernetes here), so checked for what
servingbench relies on: one Ray version with the harness's pin, one target slot per GPU
worker pod and none on the head, Guaranteed CPUs, a driver that runs with --ray."""

from __future__ import annotations

import json
import re

import yaml

from tests.conftest import REPO

DOCS = REPO / "docs" / "kuberay"


def _load(name: str) -> dict:
    return yaml.safe_load((DOCS / name).read_text())


def _pinned_ray() -> str:
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(r'"ray\[serve\]==([0-9.]+)"', text)
    assert found, "the ray extra pins Ray"
    return found.group(1)


def _slots(params: dict) -> float:
    raw = params.get("resources")
    if raw is None:
        return 0
    return float(json.loads(json.loads(raw)).get("servingbench_node", 0))  # KubeRay's quoting


def test_the_cluster_has_one_slot_per_gpu_worker_and_none_on_the_head() -> None:
    cluster = _load("raycluster.yaml")
    assert cluster["kind"] == "RayCluster" and cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == _pinned_ray()
    assert _slots(cluster["spec"]["headGroupSpec"]["rayStartParams"]) == 0
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert _slots(group["rayStartParams"]) == 1
        for container in group["template"]["spec"]["containers"]:
            res = container["resources"]
            assert res["requests"] == res["limits"]  # Guaranteed QoS: whole cores
            assert res["limits"].get("nvidia.com/gpu")


def test_the_job_runs_the_driver_on_that_cluster_with_ray() -> None:
    job = _load("rayjob.yaml")
    cluster = _load("raycluster.yaml")
    assert job["kind"] == "RayJob"
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    entry = job["spec"]["entrypoint"]
    assert entry.startswith("servingbench run ") and "--ray auto" in entry
    scenario = entry.split()[2]
    assert (REPO / scenario).is_file()
