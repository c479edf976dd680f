"""The load engine's gRPC transport against a real gRPC server with known behaviour."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from harness.load.endpoints import GrpcEndpoint
from harness.load.plan import StepPlan
from harness.load.records import ERR_CONNECT, ERR_HTTP_STATUS, ERR_NONE, ERR_TIMEOUT
from harness.load.worker import LoadProcess
from harness.net import free_port
from tests.conftest import client_cpus

METHOD = "/test.Echo/Call"


def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
    """b"ok..." echoes after 2 ms, b"bad" fails with INVALID_ARGUMENT, b"slow" takes 2 s."""
    if request == b"bad":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
    time.sleep(2.0 if request == b"slow" else 0.002)
    return b"echo:" + request


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=32))
    handler = grpc.unary_unary_rpc_method_handler(answer)  # no (de)serializers: bytes
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Call": handler})]
    )
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    yield port
    server.stop(0)


@pytest.fixture(scope="module")
def load() -> Iterator[LoadProcess]:
    with LoadProcess(client_cpus()) as proc:
        yield proc


def test_closed_loop_keeps_concurrency_and_answers(server_port: int, load: LoadProcess) -> None:
    endpoint = GrpcEndpoint("127.0.0.1", server_port, METHOD, (b"ok0", b"ok1", b"ok2"))
    plan = StepPlan(mode="closed", concurrency=8, duration_s=1.0, keep_bodies=True)
    rec = load.run(endpoint, plan)
    assert len(rec) > 200 and (rec.error == ERR_NONE).all(), rec.error_samples
    assert set(rec.status.tolist()) == {200}
    assert rec.connections == 1  # one HTTP/2 channel carries every call
    bodies = rec.extra["bodies"]
    assert all(body == b"echo:ok%d" % (i % 3) for i, body in bodies.items())
    # 8 in flight against ~2 ms answers: about 8 / 2 ms, well over one at a time (500/s)
    assert len(rec) / 1.0 > 2 * (1 / 0.002)


def test_open_loop_measures_from_the_intended_time(server_port: int, load: LoadProcess) -> None:
    endpoint = GrpcEndpoint("127.0.0.1", server_port, METHOD, (b"ok",))
    plan = StepPlan(mode="open", rate=200, arrival="constant", duration_s=1.0, warmup_s=0.2)
    rec = load.run(endpoint, plan)
    assert len(rec) == 240 and (rec.error == ERR_NONE).all(), rec.error_samples
    latency_ms = rec.latency_ns / 1e6
    assert 2.0 <= float(np.median(latency_ms)) < 10.0


def test_server_errors_are_recorded_with_their_http_equivalent(
    server_port: int, load: LoadProcess
) -> None:
    endpoint = GrpcEndpoint("127.0.0.1", server_port, METHOD, (b"ok", b"bad"))
    rec = load.run(endpoint, StepPlan(mode="closed", concurrency=2, duration_s=0.3))
    failed = rec.error == ERR_HTTP_STATUS
    assert failed.any() and (~failed).any()
    assert set(rec.status[failed].tolist()) == {400}  # INVALID_ARGUMENT
    assert any("INVALID_ARGUMENT" in e for e in rec.error_samples)


def test_slow_calls_time_out_and_are_cancelled(server_port: int, load: LoadProcess) -> None:
    endpoint = GrpcEndpoint("127.0.0.1", server_port, METHOD, (b"slow",))
    started = time.monotonic()
    rec = load.run(endpoint, StepPlan(mode="closed", concurrency=4, duration_s=0.2, timeout_s=0.3))
    assert time.monotonic() - started < 1.9  # never waited for the 2 s answers
    assert len(rec) >= 4 and (rec.error == ERR_TIMEOUT).all()


def test_nothing_listening_is_a_connect_failure(load: LoadProcess) -> None:
    endpoint = GrpcEndpoint("127.0.0.1", free_port(), METHOD, (b"ok",))
    rec = load.run(endpoint, StepPlan(mode="closed", concurrency=2, duration_s=0.2))
    assert len(rec) > 0 and (rec.error == ERR_CONNECT).all()
    assert any("unavailable" in e for e in rec.error_samples)
