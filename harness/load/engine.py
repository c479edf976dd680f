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
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter_ns
from typing import Any

import numpy as np

from harness.confidence import make_blocks, settled
from harness.load.endpoints import (
    Endpoint,
    GrpcEndpoint,
    HttpEndpoint,
    InProcessEndpoint,
    StreamEndpoint,
)
from harness.load.plan import StepPlan
from harness.load.records import StepRecords
from harness.load.sse import stream_columns_of

COARSE_MARGIN_NS = 2_000_000  # timer sleeps stop this early (libuv timers: 1 ms resolution)
FINE_MIN_NS = 60_000  # below this, a thread hop costs more than it saves: send on next turn
EXPIRE_EVERY_S = 0.05
LATE_START_MS = 5.0  # a fanned-out process starting later than this skews the merged step


def arrival_offsets_ns(plan: StepPlan, trace_s: tuple[float, ...] | None = None) -> np.ndarray:
    """Intended send times (ns from t0) for the whole step, warm-up included.

    A shaped rate (ramps, step changes) warps a unit-rate schedule of the same kind through
    the inverse of the cumulative rate (time rescaling), so a Poisson or gamma schedule keeps
    its character at every rate; a trace plays its own times, `speedup` times faster."""
    total_s = plan.warmup_s + _longest(plan)
    if plan.arrival == "trace":
        if not trace_s:
            raise ValueError(f"{plan.label}: this endpoint carries no trace to replay")
        offsets = np.asarray(trace_s, np.float64) / plan.speedup
        offsets = offsets[offsets < total_s][plan.stride_index :: plan.stride]
        return (offsets * 1e9).astype(np.int64)
    grid, cumulative = _cumulative_rate(plan, total_s)
    expected = int(cumulative[-1])
    if expected > plan.max_requests:
        raise ValueError(
            f"{plan.label}: {expected} requests exceed max_requests_per_step={plan.max_requests}"
        )
    if plan.shape:
        units = _unit_schedule(plan, float(cumulative[-1]))
        offsets = np.interp(units, cumulative, grid)[plan.stride_index :: plan.stride]
        offsets = offsets[offsets < total_s]
    elif plan.arrival == "constant":
        offsets = plan.phase_s + np.arange(expected, dtype=np.float64) / plan.rate
        offsets = offsets[offsets < total_s]
    elif plan.arrival == "gamma":
        offsets = _gamma_offsets(plan, total_s)
    else:
        rng = np.random.default_rng(plan.seed)
        gaps = rng.exponential(1.0 / plan.rate, size=int(expected * 1.2) + 100)
        offsets = np.cumsum(gaps) - gaps[0]
        offsets = offsets[offsets < total_s]
    return (offsets * 1e9).astype(np.int64)


def rate_at(plan: StepPlan, t_s: np.ndarray) -> np.ndarray:
    """The whole schedule's intended rate (req/s) at times `t_s` from t0."""
    rate = plan.rate * plan.stride if plan.whole_schedule else plan.rate
    if not plan.shape:
        return np.full(np.shape(t_s), rate, np.float64)
    knots_t, knots_f = zip(*plan.shape, strict=True)
    return rate * np.interp(t_s, knots_t, knots_f)


def _cumulative_rate(plan: StepPlan, total_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected arrivals from t0 to each point of a 1 ms grid (trapezoids)."""
    grid = np.linspace(0.0, total_s, max(2, int(total_s * 1000) + 1))
    if not plan.shape:
        return grid, grid * plan.rate
    rates = rate_at(plan, grid)
    steps = (rates[1:] + rates[:-1]) / 2 * np.diff(grid)
    return grid, np.concatenate([[0.0], np.cumsum(steps)])


def _unit_schedule(plan: StepPlan, total_units: float) -> np.ndarray:
    """Arrivals of a rate-1 process of the plan's kind, up to `total_units`."""
    if plan.arrival == "constant":
        return np.arange(int(total_units) + 1, dtype=np.float64)
    rng = np.random.default_rng(plan.seed)
    size = int(total_units * 1.2) + 100
    shape = plan.burstiness if plan.arrival == "gamma" else 1.0
    chunks, reached = [], 0.0
    while reached < total_units:
        gaps = rng.gamma(shape, 1.0 / shape, size=size)
        chunks.append(gaps)
        reached += float(gaps.sum())
    gaps = np.concatenate(chunks)
    return np.cumsum(gaps) - gaps[0]


def _gamma_offsets(plan: StepPlan, total_s: float) -> np.ndarray:
    """Gamma-distributed gaps of mean 1/rate and shape `burstiness` (the gaps' coefficient
    of variation is 1/sqrt(burstiness)), drawn until the step is covered; a split process
    keeps its share of the whole schedule (`stride`)."""
    rate = plan.rate * plan.stride
    shape = plan.burstiness
    rng = np.random.default_rng(plan.seed)
    chunks: list[np.ndarray] = []
    reached = 0.0
    while reached < total_s:
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=int(total_s * rate * 1.2) + 100)
        chunks.append(gaps)
        reached += float(gaps.sum())
    gaps = np.concatenate(chunks)
    offsets = (np.cumsum(gaps) - gaps[0])[plan.stride_index :: plan.stride]
    return offsets[offsets < total_s]


class _Recorder:
    """Appends raw request outcomes; the only work done per request besides I/O."""

    def __init__(self) -> None:
        self.intended: list[int] = []
        self.sent: list[int] = []
        self.end: list[int] = []
        self.status: list[int] = []
        self.error: list[int] = []
        self.index: list[int] = []

    def add(self, intended: int, sent: int, end: int, status: int, error: int, index: int) -> None:
        self.index.append(index)
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
            check=endpoint.check,
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
            dialect=endpoint.dialect,
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
            check=endpoint.check,
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
    ending: dict[str, Any] = {}  # what ended the step (harness/columns.py `ended_by`)

    def finish_if_done() -> None:
        if state["outstanding"] == 0 and state["dispatched_all"] and not done.done():
            done.set_result(None)

    def on_done(intended: int, sent: int, end: int, status: int, error: int, index: int) -> None:
        rec.add(intended, sent, end, status, error, index)
        state["outstanding"] -= 1
        if sessions is not None:
            sessions.on_done(index, error, end)
            finish_if_done()
        elif plan.mode == "closed" and end < state["stop_ns"]:
            state["outstanding"] += 1
            nxt = state["next"]
            state["next"] = nxt + 1
            transport.submit(nxt, perf_counter_ns())
        elif state["outstanding"] == 0 and state["dispatched_all"] and not done.done():
            done.set_result(None)

    transport = _make_transport(endpoint, plan, on_done)
    sessions = None
    if isinstance(endpoint, StreamEndpoint) and endpoint.sessions:
        from harness.load.sessions import Sessions

        transport.keep_text = True
        sessions = Sessions(endpoint.sessions, endpoint.chat, endpoint.think_time_s, transport,
                            state, plan.mode == "closed", finish_if_done)  # fmt: skip
    id_prefix = f"{plan.id_prefix}-{plan.seed}-" if plan.id_prefix else ""
    if id_prefix and hasattr(transport, "request_ids"):
        transport.request_ids(id_prefix.encode())
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
    requested = plan.rate
    try:
        state["stop_ns"] = t0 + int((plan.warmup_s + _longest(plan)) * 1e9)
        monitor = loop.create_task(_watch_end(plan, rec, state, ending, t0))
        if plan.mode == "closed":
            for _ in range(plan.concurrency):
                state["outstanding"] += 1
                state["next"] += 1
                if sessions is not None:  # each user holds a conversation
                    sessions.start(perf_counter_ns())
                else:
                    transport.submit(state["next"] - 1, perf_counter_ns())
            await monitor  # returns when the step is long enough (and stable, if asked)
            state["dispatched_all"] = True
        else:
            offsets = arrival_offsets_ns(plan, getattr(endpoint, "arrival_s", None)) + t0
            if plan.arrival == "trace" and len(offsets):  # the window ends with the trace
                state["stop_ns"] = min(state["stop_ns"], int(offsets[-1]) + 1)
            # request i of the whole schedule is the i-th arrival (a trace's row i)
            indices = np.arange(len(offsets)) * plan.stride + plan.stride_index
            watcher = (loop.create_task(_watch_saturation(plan, rec, state, ending, t0))
                       if plan.stop_saturated else None)  # fmt: skip
            submit = sessions.submit if sessions is not None else transport.submit
            await _pace(submit, offsets, indices, state)
            monitor.cancel()
            if watcher is not None:
                watcher.cancel()
            if plan.shape or plan.arrival == "trace":  # the schedule's own mean rate
                lo, hi = t0 + int(plan.warmup_s * 1e9), state["stop_ns"]
                inside = int(((offsets >= lo) & (offsets < hi)).sum())
                requested = inside / max((hi - lo) / 1e9, 1e-9)
            if "ended_by" not in ending:  # the schedule ran out first: its longest window
                _ran_out(plan, rec, ending, t0)
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
        requested_rate=requested if plan.mode == "open" else None,
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
            **{k: v for k, v in ending.items() if k != "was"},
        },
        t0_ns=t0,
        stream=stream,
        request_id=[id_prefix + str(i) for i in rec.index] if id_prefix else None,
        turn=np.asarray(sessions.turns(rec.index), np.int16) if sessions is not None else None,
    )


def _longest(plan: StepPlan) -> float:
    """The step's longest measured window: only a plan that may extend runs past duration_s."""
    if _extends(plan):
        return max(plan.duration_s, plan.max_duration_s or 0.0)
    return plan.duration_s


def _extends(plan: StepPlan) -> bool:
    wants = plan.min_samples > 0 or (plan.settle and plan.stability is not None)
    return wants and (plan.max_duration_s or 0.0) > plan.duration_s


async def _watch_end(
    plan: StepPlan, rec: _Recorder, state: dict[str, int], ending: dict[str, Any], t0: int
) -> None:
    """Sleep the step's duration; then, while it lacks samples for its percentiles (or, if
    asked, its last windows disagree), extend it window by window up to its maximum. Moves
    `stop_ns` to the chosen end, always a whole window past the minimum (an open-loop
    schedule is cut at a window's edge, never inside one), and says what ended it."""
    min_end = t0 + int((plan.warmup_s + plan.duration_s) * 1e9)
    await asyncio.sleep(plan.warmup_s + plan.duration_s)
    while perf_counter_ns() < min_end:  # uvloop's ms timers may wake a little early
        await asyncio.sleep(0.001)
    if not _extends(plan):
        state["stop_ns"] = min_end
        ending["ended_by"] = "duration"
        return
    window_s, windows, tolerance, q = plan.stability or (1.0, 3, 0.10, 99.0)
    window_ns = int(window_s * 1e9)
    warmup_ns = t0 + int(plan.warmup_s * 1e9)
    last_end = state["stop_ns"]  # t0 + warm-up + the longest window
    lacking: list[str] = []
    while True:
        now = perf_counter_ns()
        edge = min(min_end + (now - min_end) // window_ns * window_ns, last_end)
        intended = np.asarray(rec.intended, np.int64)
        error = np.asarray(rec.error)
        ok = (error == 0) & (intended >= warmup_ns)
        count = int((ok & (intended < edge)).sum())
        lacking = [] if count >= plan.min_samples else ["samples"]
        if lacking and _failing(plan, error, intended, warmup_ns, edge):
            # more samples cannot make it rankable: it ends here, and says why
            state["stop_ns"] = edge
            ending["ended_by"] = "errors"
            ending["samples_needed"], ending["samples_had"] = plan.min_samples, count
            return
        if plan.settle and plan.stability is not None:
            # judge whole windows that ended one window ago, so stragglers have landed
            judged = max(warmup_ns, edge - window_ns)
            latency = (np.asarray(rec.end, np.int64) - intended) / 1e6
            mask = ok & (intended < judged)
            blocks = make_blocks(intended[mask], latency[mask], warmup_ns, judged, window_s)
            if not settled(blocks, q, windows, tolerance, check_rate=plan.mode == "closed"):
                lacking.append("settled")
        if not lacking or edge >= last_end:
            state["stop_ns"] = edge
            if not lacking:
                ending["ended_by"] = "duration" if edge == min_end else ending.get("was", "samples")
            else:
                ending["ended_by"] = "max_duration"
                if "samples" in lacking:
                    ending["samples_needed"] = plan.min_samples
                    ending["samples_had"] = count
            return
        ending["was"] = "samples" if "samples" in lacking else "settled"
        next_edge = edge + window_ns
        await asyncio.sleep(max(0.0, (next_edge - perf_counter_ns()) / 1e9) + 0.005)


FAILING_MIN_ERRORS = 10  # a share judged on fewer failures is too unsure to end a step on


def _failing(plan: StepPlan, error: np.ndarray, intended: np.ndarray, warmup_ns: int,
             edge: int) -> bool:  # fmt: skip
    """Over `plan.max_error_rate` already, on at least FAILING_MIN_ERRORS failures."""
    if plan.max_error_rate is None:
        return False
    measured = (intended >= warmup_ns) & (intended < edge)
    failed = int((measured & (error != 0)).sum())
    return failed >= FAILING_MIN_ERRORS and failed > plan.max_error_rate * int(measured.sum())


def _ran_out(plan: StepPlan, rec: _Recorder, ending: dict[str, Any], t0: int) -> None:
    ending["ended_by"] = "max_duration" if _extends(plan) else "duration"
    intended = np.asarray(rec.intended, np.int64)
    ok = (np.asarray(rec.error) == 0) & (intended >= t0 + int(plan.warmup_s * 1e9))
    if int(ok.sum()) < plan.min_samples:
        ending["samples_needed"], ending["samples_had"] = plan.min_samples, int(ok.sum())


SATURATION_WINDOW_S = 0.5
SATURATION_WINDOWS = 4  # windows in a row whose queue grew
SATURATION_MIN_QUEUE = 8
SATURATION_SERVED = 0.9  # served less than this share of what arrived over those windows


async def _watch_saturation(
    plan: StepPlan, rec: _Recorder, state: dict[str, int], ending: dict[str, Any], t0: int
) -> None:
    """End an open step that is clearly past saturation: requests in flight grew in each of
    the last SATURATION_WINDOWS windows, at least doubled to SATURATION_MIN_QUEUE or more,
    and the server completed under 90% of what arrived meanwhile. Such a queue grows without
    bound: running on measures only how long we waited. Says so in `ended_by`."""
    window_ns = int(SATURATION_WINDOW_S * 1e9)
    warmup_end = t0 + int(plan.warmup_s * 1e9)
    history: list[tuple[int, int, int]] = []  # (time, in flight, completed)
    while True:
        await asyncio.sleep(SATURATION_WINDOW_S)
        now = perf_counter_ns()
        if now < warmup_end:
            continue
        history.append((now, state["outstanding"], len(rec.end)))
        if len(history) <= SATURATION_WINDOWS:
            continue
        recent = history[-SATURATION_WINDOWS - 1 :]
        queue = [q for _, q, _ in recent]
        grew = all(b > a for a, b in itertools.pairwise(queue))
        served = recent[-1][2] - recent[0][2]
        arrived = served + queue[-1] - queue[0]
        if (grew and queue[-1] >= max(SATURATION_MIN_QUEUE, 2 * queue[0])
                and served < SATURATION_SERVED * arrived):  # fmt: skip
            # the window edge just passed: a wake-up a hair before it (loop time is a float,
            # these are integer ns) must not drop the last window of growth it judged
            edge = warmup_end + (now - warmup_end + 1_000_000) // window_ns * window_ns
            state["stop_ns"] = max(edge, warmup_end + window_ns)
            span_s = (recent[-1][0] - recent[0][0]) / 1e9
            ending["ended_by"] = "saturated"
            ending["saturation"] = (
                f"past saturation: requests in flight grew from {queue[0]} to {queue[-1]} in "
                f"{span_s:.1f} s while the server completed {served} of {arrived} arrivals"
            )
            return


def _preopen(plan: StepPlan) -> int:
    # Enough for ~20 ms of arrivals in flight; more are opened on demand.
    return max(4, min(plan.max_connections, int(plan.rate * 0.02) + 4))


async def _pace(
    submit: Any, offsets: np.ndarray, indices: np.ndarray, state: dict[str, int]
) -> None:
    loop = asyncio.get_running_loop()
    times = offsets.tolist()
    index = indices.tolist()
    n = len(times)
    i = 0
    while i < n and times[i] < state["stop_ns"]:  # the stability watcher may end it early
        now = perf_counter_ns()
        while i < n and times[i] <= now:
            state["outstanding"] += 1
            submit(index[i], times[i])
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
