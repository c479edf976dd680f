"""Triton passes the adapter conformance suite (harness.conformance) like every in-tree
adapter. Its own module: the suite shares one server across the tests of a variant, so the
orphan check runs once at the end, not around each test (tests/adapters/test_triton.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from adapters.triton import TritonAdapter
from harness import environments
from harness.errors import UnavailableError
from harness.testing import AdapterConformance
from tests.conftest import servingbench_processes


@pytest.fixture(scope="module", autouse=True)
def triton_env_and_no_orphans() -> Iterator[None]:
    assert TritonAdapter.environment is not None
    try:
        environments.ensure(TritonAdapter.environment)
    except UnavailableError as exc:
        pytest.skip(f"the triton environment cannot be created here: {exc}")
    before = {p.pid for p in servingbench_processes()}
    yield
    deadline = time.monotonic() + 5
    while (left := [p for p in servingbench_processes() if p.pid not in before]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not left, f"orphaned processes: {[' '.join(p.cmdline()) for p in left]}"


class TestTritonConformance(AdapterConformance):
    adapter_class = TritonAdapter
    config = {"kind": "triton", "dynamic_batching": {"max_queue_delay_us": 2000}}
    variants = ["onnx"]
    startup_timeout_s = 60.0


class TestTritonGrpcConformance(AdapterConformance):
    adapter_class = TritonAdapter
    config = {"kind": "triton", "protocol": "grpc"}
    variants = ["eager"]
    startup_timeout_s = 60.0
