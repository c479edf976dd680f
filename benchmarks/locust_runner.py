"""Locustfile driven by benchmarks/loadgen_bench.py: run only by `locust -f`, never imported.

Importing locust gevent-patches the whole process, so the bench runs this in its own
process and reads back one JSON file. Configuration comes from environment variables:

    LB_OUT        path of the JSON file written when the test stops
    LB_BODY       request body POSTed to /predict (JSON text)
    LB_USER_RATE  requests/s per user (constant_throughput); 0 means constant(0): no wait
    LB_WARMUP_S   seconds after spawning completes before counting starts
    LB_LATENCIES  "1": record every response time (events.request, float ms)

Counting starts `LB_WARMUP_S` after all users are spawned and stops at test_stop: client
CPU (time.process_time, the whole process) and request count over that window only, so
locust's import and spawn-up are not charged to its per-request cost.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import gevent
from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.env import Environment

_OUT = os.environ["LB_OUT"]
_BODY = os.environ.get("LB_BODY", '{"inputs": [[0.0]]}')
_USER_RATE = float(os.environ.get("LB_USER_RATE", "0"))
_WARMUP_S = float(os.environ.get("LB_WARMUP_S", "0"))
_LATENCIES = os.environ.get("LB_LATENCIES") == "1"
_HEADERS = {"Content-Type": "application/json"}

_state: dict[str, Any] = {"env": None, "start": None, "written": False}
_latencies: list[float] = []
_failures = [0]


def _snapshot() -> tuple[float, float, int, int]:
    env: Environment = _state["env"]
    total = env.stats.total
    return time.perf_counter(), time.process_time(), total.num_requests, total.num_failures


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    _state["env"] = environment


def _start_counting() -> None:
    _latencies.clear()
    _failures[0] = 0
    _state["start"] = _snapshot()


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **_: Any) -> None:
    if _state["start"] is None:
        gevent.spawn_later(_WARMUP_S, _start_counting)


if _LATENCIES:

    @events.request.add_listener
    def _on_request(response_time: float, exception: BaseException | None, **_: Any) -> None:
        if _state["start"] is None:
            return
        if exception is None:
            _latencies.append(response_time)
        else:
            _failures[0] += 1


def _write(**_: Any) -> None:
    if _state["written"]:
        return
    _state["written"] = True
    result: dict[str, Any] = {"ok": False}
    if _state["start"] is not None:
        t0, cpu0, n0, f0 = _state["start"]
        t1, cpu1, n1, f1 = _snapshot()
        result = {
            "ok": True,
            "t_start": t0,
            "t_end": t1,
            "wall_s": t1 - t0,
            "cpu_s": cpu1 - cpu0,
            "requests": n1 - n0,
            "failures": f1 - f0,
            "latencies_ms": _latencies,
        }
    with open(_OUT, "w") as fh:
        json.dump(result, fh)


events.test_stop.add_listener(_write)
events.quitting.add_listener(_write)


class PredictUser(FastHttpUser):
    wait_time = constant(0) if _USER_RATE <= 0 else constant_throughput(_USER_RATE)

    @task
    def predict(self) -> None:
        self.client.post("/predict", data=_BODY, headers=_HEADERS)
