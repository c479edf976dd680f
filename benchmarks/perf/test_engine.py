"""The load engine's own cost per request against the built-in null server (closed loop).

The server runs on one core and this process on the other, as in a real run. Two views:
- a fixed count of requests through the engine's transport and recorder (`HttpPool` +
  `_Recorder`): its time is what pytest-benchmark compares between runs;
- one real `run_step` (closed loop, 1 s): the step's own requests/s and client CPU per
  request, as the report would show them (its wall time is the plan's, not a figure).
"""

from __future__ import annotations

import asyncio
import time
from time import perf_counter_ns
from typing import Any

import numpy as np
import pytest
import uvloop

from benchmarks.perf.conftest import cpus, pinned
from harness.load.endpoints import HttpEndpoint
from harness.load.engine import _Recorder, run_step
from harness.load.http import HttpPool
from harness.load.plan import StepPlan
from harness.protocols import PlainJsonClient

REQUESTS = 4000
CONCURRENCY = 8


@pytest.fixture(scope="module")
def endpoint(null_port: int, instances: np.ndarray) -> HttpEndpoint:
    found = PlainJsonClient(f"http://127.0.0.1:{null_port}").endpoint(instances)
    assert isinstance(found, HttpEndpoint)
    return found


async def _closed_loop(endpoint: HttpEndpoint, count: int, concurrency: int) -> _Recorder:
    """`count` requests, `concurrency` in flight, each sent as the previous one returns."""
    loop = asyncio.get_running_loop()
    rec = _Recorder()
    finished: asyncio.Future[None] = loop.create_future()
    state = {"next": 0, "left": count}

    def on_done(intended: int, sent: int, end: int, status: int, error: int, index: int) -> None:
        rec.add(intended, sent, end, status, error)
        state["left"] -= 1
        if state["next"] < count:
            state["next"] += 1
            pool.submit(state["next"] - 1, perf_counter_ns())
        elif state["left"] == 0:
            finished.set_result(None)

    pool = HttpPool(endpoint.host, endpoint.port, list(endpoint.requests), on_done)
    await pool.open(concurrency)
    for _ in range(concurrency):
        state["next"] += 1
        pool.submit(state["next"] - 1, perf_counter_ns())
    await asyncio.wait_for(finished, 60)
    pool.close()
    return rec


def test_engine_fixed_count(
    benchmark: Any, endpoint: HttpEndpoint, figures: dict[str, str]
) -> None:
    cpu_used: list[float] = []

    def run() -> _Recorder:
        cpu0 = time.process_time()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            rec = runner.run(_closed_loop(endpoint, REQUESTS, CONCURRENCY))
        cpu_used.append(time.process_time() - cpu0)
        return rec

    with pinned(cpus()[1]):
        rec = benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=2)
    assert len(rec.status) == REQUESTS and set(rec.status) == {200}
    rps = REQUESTS / benchmark.stats.stats.mean
    cpu_us = float(np.median(cpu_used)) / REQUESTS * 1e6
    benchmark.extra_info.update(requests_per_s=rps, client_cpu_us_per_request=cpu_us)
    figures[f"engine transport, closed c={CONCURRENCY}"] = (
        f"{rps:,.0f} req/s, {cpu_us:.1f} us client CPU/request"
    )


def test_engine_run_step(benchmark: Any, endpoint: HttpEndpoint, figures: dict[str, str]) -> None:
    plan = StepPlan(mode="closed", duration_s=1.0, concurrency=CONCURRENCY, timeout_s=5)

    def run() -> Any:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run_step(endpoint, plan))

    with pinned(cpus()[1]):
        records = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(records) > 0 and int((records.error != 0).sum()) == 0
    rps = len(records) / records.client_wall_s
    cpu_us = records.client_cpu_s / len(records) * 1e6
    benchmark.extra_info.update(requests_per_s=rps, client_cpu_us_per_request=cpu_us)
    figures[f"engine run_step, closed c={CONCURRENCY}, 1 s"] = (
        f"{rps:,.0f} req/s, {cpu_us:.1f} us client CPU/request"
    )
