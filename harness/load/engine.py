"""Run one step of load against one endpoint, on the current (uvloop) event loop.

Closed loop: `concurrency` virtual users, each sends its next request the moment its last
one completes. Open loop: arrival times are precomputed (constant or Poisson) and every
request is sent at its time whatever is still outstanding, with latency measured from the
*intended* time, so a stalled server shows its queueing instead of hiding it (no
coordinated omission). Requests intended during the warm-up are recorded but excluded
from the measured window.

Pacing: libuv timers have 1 ms resolution, so waits longer than a few ms use the loop's
timer and the final stretch is a precise sleep in a helper thread; when arrivals are
denser than that, every request already due is sent on each loop turn.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Literal

import numpy as np

from harness.confidence import make_blocks, stable
from harness.load.endpoints import (
    Endpoint,
    GrpcEndpoint,
    HttpEndpoint,
    InProcessEndpoint,
    StreamEndpoint,
)
from harness.load.records import StepRecords
from harness.load.sse import stream_columns_of

COARSE_MARGIN_NS = 2_000_000  # timer sleeps stop this early (libuv timers: 1 ms resolution)
FINE_MIN_NS = 60_000  # below this, a thread hop costs more than it saves: send on next turn
EXPIRE_EVERY_S = 0.05
LATE_START_MS = 5.0  # a fanned-out process starting later than this skews the merged step


@dataclass(frozen=True)
class StepPlan:
    mode: Literal["closed", "open"]
    duration_s: float
    warmup_s: float = 0.0
    concurrency: int = 1
    rate: float = 0.0
    arrival: Literal["constant", "poisson"] = "poisson"
    timeout_s: float = 10.0
    max_connections: int = 2048
    max_requests: int = 2_000_000
    seed: int = 0
    keep_bodies: bool = False
    # Extend an unstable step up to this long, checking every stability window; None: fixed.
    max_duration_s: float | None = None
    stability: tuple[float, int, float, float] | None = None  # window_s, windows, tol, q
    # Several load processes start together at this perf_counter_ns() (CLOCK_MONOTONIC is
    # shared by all processes), so their records share one t0 and merge directly.
    start_at_ns: int | None = None
    phase_s: float = 0.0  # shift of a constant schedule (interleaves split load processes)

    @property
    def label(self) -> str:
        if self.mode == "closed":
            return f"closed c={self.concurrency}"
        return f"open {self.rate:g}/s {self.arrival}"

    @property
    def level(self) -> float:
        return float(self.concurrency if self.mode == "closed" else self.rate)


def arrival_offsets_ns(plan: StepPlan) -> np.ndarray:
    """Intended send times (ns from t0) for the whole step, warm-up included."""
    total_s = plan.warmup_s + _longest(plan)
    expected = int(total_s * plan.rate)
    if expected > plan.max_requests:
        raise ValueError(
            f"{plan.label}: {expected} requests exceed max_requests_per_step={plan.max_requests}"
        )
    if plan.arrival == "constant":
        offsets = plan.phase_s + np.arange(expected, dtype=np.float64) / plan.rate
        offsets = offsets[offsets < total_s]
    else:
        rng = np.random.default_rng(plan.seed)
        gaps = rng.exponential(1.0 / plan.rate, size=int(expected * 1.2) + 100)
        offsets = np.cumsum(gaps) - gaps[0]
        offsets = offsets[offsets < total_s]
    return (offsets * 1e9).astype(np.int64)


class _Recorder:
    """Appends raw request outcomes; the only work done per request besides I/O."""

    def __init__(self) -> None:
        self.intended: list[int] = []
        self.sent: list[int] = []
        self.end: list[int] = []
        self.status: list[int] = []
        self.error: list[int] = []

    def add(self, intended: int, sent: int, end: int, status: int, error: int) -> None:
        self.intended.append(intended)
        self.sent.append(sent)
        self.end.append(end)
        self.status.append(status)
        self.error.append(error)


def _make_transport(endpoint: Endpoint, plan: StepPlan, on_done: Any) -> Any:
    if isinstance(endpoint, HttpEndpoint):
        from harness.load.http import HttpPool

        return HttpPool(
            endpoint.host,
            endpoint.port,
            list(endpoint.requests),
            on_done,
            max_connections=plan.max_connections,
            keep_bodies=plan.keep_bodies,
        )
    if isinstance(endpoint, StreamEndpoint):
        from harness.load.sse import StreamPool

        return StreamPool(
            endpoint.host,
            endpoint.port,
            list(endpoint.requests),
            list(endpoint.expected_tokens),
            on_done,
            max_connections=plan.max_connections,
        )
    if isinstance(endpoint, GrpcEndpoint):
        from harness.load.grpc import GrpcPool

        return GrpcPool(
            endpoint.host,
            endpoint.port,
            endpoint.method,
            list(endpoint.requests),
            on_done,
            keep_bodies=plan.keep_bodies,
        )
    if isinstance(endpoint, InProcessEndpoint):
        from harness.load.inprocess import InProcessTransport
        from harness.runtime import load_predictor

        predictor = _predictor_cache.get(endpoint.variant_dir)
        if predictor is None:
            predictor = load_predictor(endpoint.variant_dir, threads=endpoint.threads)
            _predictor_cache[endpoint.variant_dir] = predictor
        return InProcessTransport(predictor, endpoint.inputs, on_done)
    raise TypeError(f"unknown endpoint {type(endpoint).__name__}")


_predictor_cache: dict[str, Any] = {}
_fine_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pacer")


async def run_step(endpoint: Endpoint, plan: StepPlan) -> StepRecords:
    """Drive one step; return its raw records (times relative to t0)."""
    loop = asyncio.get_running_loop()
    rec = _Recorder()
    done = loop.create_future()
    state: dict[str, int] = {"stop_ns": 0, "outstanding": 0, "next": 0, "dispatched_all": 0}

    def on_done(intended: int, sent: int, end: int, status: int, error: int, index: int) -> None:
        rec.add(intended, sent, end, status, error)
        state["outstanding"] -= 1
        if plan.mode == "closed" and end < state["stop_ns"]:
            state["outstanding"] += 1
            nxt = state["next"]
            state["next"] = nxt + 1
            transport.submit(nxt, perf_counter_ns())
        elif state["outstanding"] == 0 and state["dispatched_all"] and not done.done():
            done.set_result(None)

    transport = _make_transport(endpoint, plan, on_done)
    if isinstance(endpoint, HttpEndpoint | StreamEndpoint):
        await transport.open(plan.concurrency if plan.mode == "closed" else _preopen(plan))
    timeout_ns = int(plan.timeout_s * 1e9)
    expirer = loop.create_task(_expire_loop(transport, timeout_ns))
    cpu0, wall0 = time.process_time(), time.time()
    if plan.start_at_ns is not None:
        while perf_counter_ns() < plan.start_at_ns - 2_000_000:
            await asyncio.sleep(0.001)
        while perf_counter_ns() < plan.start_at_ns:
            await asyncio.sleep(0)
    t0 = plan.start_at_ns or perf_counter_ns()
    late_ms = (perf_counter_ns() - t0) / 1e6  # > 0 when this process got its plan too late
    try:
        state["stop_ns"] = t0 + int((plan.warmup_s + _longest(plan)) * 1e9)
        monitor = loop.create_task(_watch_stability(plan, rec, state, t0))
        if plan.mode == "closed":
            for _ in range(plan.concurrency):
                state["outstanding"] += 1
                state["next"] += 1
                transport.submit(state["next"] - 1, perf_counter_ns())
            await monitor  # returns when the step is long enough (and stable, if asked)
            state["dispatched_all"] = True
        else:
            offsets = arrival_offsets_ns(plan) + t0
            await _pace(transport, offsets, state)
            monitor.cancel()
            state["dispatched_all"] = True
        if state["outstanding"] > 0:
            # Drain: the slowest requests are the last to finish; never drop them.
            await asyncio.wait_for(asyncio.shield(done), plan.timeout_s + 1.0)
    except TimeoutError:
        transport.expire(0)
    finally:
        expirer.cancel()
        cpu1 = time.process_time()
        wall1 = time.time()
        errors = list(transport.errors)
        cap_hit = transport.cap_hit
        connections = transport.opened
        stream = stream_columns_of(transport, t0)
        transport.close()
    return StepRecords(
        intended_ns=np.asarray(rec.intended, np.int64) - t0,
        sent_ns=np.asarray(rec.sent, np.int64) - t0,
        end_ns=np.asarray(rec.end, np.int64) - t0,
        status=np.asarray(rec.status, np.int16),
        error=np.asarray(rec.error, np.int8),
        warmup_ns=int(plan.warmup_s * 1e9),
        window_ns=int(state["stop_ns"] - t0),
        wall_t0=wall0,
        client_cpu_s=cpu1 - cpu0,
        client_wall_s=wall1 - wall0,
        requested_rate=plan.rate if plan.mode == "open" else None,
        connections=connections,
        connection_cap_hit=cap_hit,
        error_samples=errors,
        extra={
            **(
                {"bodies": transport.bodies}
                if plan.keep_bodies and hasattr(transport, "bodies")
                else {}
            ),
            **({"late_start_ms": late_ms} if plan.start_at_ns and late_ms > LATE_START_MS else {}),
        },
        t0_ns=t0,
        stream=stream,
    )


def _longest(plan: StepPlan) -> float:
    return max(plan.duration_s, plan.max_duration_s or 0.0) if plan.stability else plan.duration_s


async def _watch_stability(plan: StepPlan, rec: _Recorder, state: dict[str, int], t0: int) -> None:
    """Sleep the step's duration; then, if the plan asks, extend window by window until the
    last windows agree (or the maximum is reached). Moves `stop_ns` to the chosen end."""
    min_end = t0 + int((plan.warmup_s + plan.duration_s) * 1e9)
    await asyncio.sleep(plan.warmup_s + plan.duration_s)
    while perf_counter_ns() < min_end:  # uvloop's ms timers may wake a little early
        await asyncio.sleep(0.001)
    if plan.stability is None or not plan.max_duration_s or plan.max_duration_s <= plan.duration_s:
        state["stop_ns"] = min_end
        return
    window_s, windows, tolerance, q = plan.stability
    warmup_ns = t0 + int(plan.warmup_s * 1e9)
    while perf_counter_ns() < state["stop_ns"]:
        # judge whole windows that ended one window ago, so stragglers have landed
        now = perf_counter_ns()
        judged_end = now - int(window_s * 1e9)
        intended = np.asarray(rec.intended, np.int64)
        latency = (np.asarray(rec.end, np.int64) - intended) / 1e6
        ok = (np.asarray(rec.error) == 0) & (intended >= warmup_ns) & (intended < judged_end)
        blocks = make_blocks(intended[ok], latency[ok], warmup_ns, judged_end, window_s)
        if stable(blocks, q, windows, tolerance, check_rate=plan.mode == "closed"):
            state["stop_ns"] = max(now, min_end)
            return
        await asyncio.sleep(window_s)
    state["stop_ns"] = min(state["stop_ns"], perf_counter_ns())


def _preopen(plan: StepPlan) -> int:
    # Enough for ~20 ms of arrivals in flight; more are opened on demand.
    return max(4, min(plan.max_connections, int(plan.rate * 0.02) + 4))


async def _pace(transport: Any, offsets: np.ndarray, state: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    times = offsets.tolist()
    n = len(times)
    i = 0
    while i < n and times[i] < state["stop_ns"]:  # the stability watcher may end it early
        now = perf_counter_ns()
        while i < n and times[i] <= now:
            state["outstanding"] += 1
            transport.submit(i, times[i])
            i += 1
        if i >= n:
            break
        wait = times[i] - perf_counter_ns()
        if wait > COARSE_MARGIN_NS:
            await asyncio.sleep((wait - COARSE_MARGIN_NS) / 1e9)
        elif wait > FINE_MIN_NS:
            # Precise final stretch off-loop; the loop keeps serving responses meanwhile.
            await loop.run_in_executor(_fine_pool, _sleep_until, times[i])
        else:
            await asyncio.sleep(0)


def _sleep_until(deadline_ns: int) -> None:
    remaining = deadline_ns - perf_counter_ns()
    if remaining > 0:
        time.sleep(remaining / 1e9)


async def _expire_loop(transport: Any, timeout_ns: int) -> None:
    while True:
        await asyncio.sleep(EXPIRE_EVERY_S)
        transport.expire(timeout_ns)
