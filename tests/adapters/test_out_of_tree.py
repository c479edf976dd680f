"""A third-party adapter package works with no change to harness code.

`tests/out_of_tree/servingbench-echo` is its own distribution: it registers `echo` through
the `servingbench.adapters` entry point, is discovered by the registry, validates in a
scenario, is listed by `servingbench list`, and passes the conformance suite.
`nox -s tests` installs it; a plain `pytest` run without it skips, saying how to install.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

try:
    importlib.metadata.distribution("servingbench-echo")
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        "servingbench-echo is not installed: "
        "`pip install -e tests/out_of_tree/servingbench-echo` (nox -s tests does it)",
        allow_module_level=True,
    )

from servingbench_echo import EchoAdapter

from harness import registry
from harness.scenario import parse_scenario, scenario_model
from harness.testing import AdapterConformance

SCENARIO = """
name: echo
model: {name: digits-cnn}
load:
  profile: {kind: closed, concurrency: 1}
targets:
  - name: echo-onnx
    adapter: {kind: echo}
    variant: onnx
"""


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    # both registries are cached per process: rebuild them from the installed entry points
    registry.adapters.cache_clear()
    scenario_model.cache_clear()
    yield
    registry.adapters.cache_clear()
    scenario_model.cache_clear()


def test_discovered_through_its_entry_point(fresh_registry: None) -> None:
    found = [
        ep
        for ep in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)
        if ep.name == "echo"
    ]
    assert [ep.value for ep in found] == ["servingbench_echo:EchoAdapter"]
    assert registry.adapters()["echo"] is EchoAdapter
    assert not EchoAdapter.__module__.startswith("adapters")  # not an in-tree module


def test_usable_in_a_scenario(fresh_registry: None) -> None:
    scenario = parse_scenario(SCENARIO)
    target = scenario.targets[0]  # type: ignore[attr-defined]
    assert type(target.adapter).__name__ == "EchoConfig" and target.adapter.kind == "echo"


def test_listed_by_servingbench_list() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "harness.cli", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        check=True,
    ).stdout
    rows = [line for line in listing.splitlines() if " echo " in line]
    assert len(rows) == 1 and "yes" in rows[0] and "servingbench-echo" in rows[0], listing


class TestEchoConformance(AdapterConformance):
    adapter_class = EchoAdapter
    config = {"kind": "echo"}
    variants = ["onnx"]
    startup_timeout_s = 60.0
