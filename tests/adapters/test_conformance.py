"""Every in-tree adapter that starts something passes the adapter conformance suite.

`http` is left out on purpose: it describes a server that is already running (external
launcher only) and has nothing to start, prepare or tear down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from adapters.fastapi import FastapiAdapter
from adapters.inprocess import InprocessAdapter
from adapters.rayserve import RayServeAdapter
from adapters.torchserve import TorchserveAdapter
from harness.testing import AdapterConformance
from tests.conftest import servingbench_processes


@pytest.fixture(scope="module", autouse=True)
def no_orphans_at_the_end() -> Iterator[None]:
    # per module, not per test: a suite's server is shared by the tests of one variant
    before = {p.pid for p in servingbench_processes()}
    yield
    deadline = time.monotonic() + 5
    while (left := [p for p in servingbench_processes() if p.pid not in before]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not left, f"orphaned processes: {[' '.join(p.cmdline()) for p in left]}"


class TestFastapiConformance(AdapterConformance):
    adapter_class = FastapiAdapter
    config = {"kind": "fastapi"}
    variants = ["eager", "onnx"]
    startup_timeout_s = 60.0


class TestTorchserveConformance(AdapterConformance):
    # each TorchServe start is ~5-10 s: one variant keeps the class under a minute
    adapter_class = TorchserveAdapter
    config = {"kind": "torchserve"}
    variants = ["eager"]
    startup_timeout_s = 90.0


class TestRayServeConformance(AdapterConformance):
    # a private Ray instance per start (~10 s on 2 cores); batching on, as a team runs it
    adapter_class = RayServeAdapter
    config = {"kind": "rayserve", "batching": {"max_batch_size": 8}}
    variants = ["onnx"]
    startup_timeout_s = 120.0


class TestInprocessConformance(AdapterConformance):
    adapter_class = InprocessAdapter
    config = {"kind": "inprocess"}
    variants = ["eager"]
    has_server = False
