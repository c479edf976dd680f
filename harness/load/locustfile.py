"""Locust side of `harness/load/locust_backend.py`: run only by `locust -f`, never imported.

Importing locust gevent-patches the whole process (and fails after urllib3 was imported),
so this file imports nothing from the harness; it reads one JSON config named by
`SB_LOCUST_CONFIG` (written by the backend: requests already parsed, per-user rate,
timeouts, output folder) and writes one `.npz` per process into that folder.

Per request, through `events.request`: the send time (perf_counter_ns taken just before
the call and carried in the request's `context`), the end time (perf_counter_ns when the
event fires, right after the response body is read), the status and the exception's type.
perf_counter_ns is CLOCK_MONOTONIC, shared by every process on the machine, so the backend
can put all processes' records on one clock.

The process that runs the test (the local runner, or the master) takes t0 at spawning
complete and quits the test `total_s` later; `--stop-timeout` lets the requests in flight
finish (the drain), like our engine.
"""

from __future__ import annotations

import json
import os
import resource
import time
from itertools import count
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import gevent
import numpy as np
from geventhttpclient.client import HTTPClient
from geventhttpclient.header import Headers
from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

_CONFIG: dict[str, Any] = json.loads(Path(os.environ["SB_LOCUST_CONFIG"]).read_text())
_OUT = Path(_CONFIG["out_dir"])
_REQUESTS = [
    (r["method"], r["path"], dict(r["headers"]), bytes.fromhex(r["body_hex"]))
    for r in _CONFIG["requests"]
]
_MAX_SAMPLES = 20
# geventhttpclient adds "User-Agent: python/gevent-http-client-..." to every request; our
# engine sends none, and the comparison needs the same bytes on the wire.
HTTPClient.DEFAULT_HEADERS = Headers()

# Raw columns, appended by the request listener (the only per-request work we add).
_sent: list[int] = []
_end: list[int] = []
_status: list[int] = []
_kind: list[int] = []  # 0 = success, else 1 + index into _kinds
_kinds: list[str] = []  # exception type names, each once
_samples: list[str] = []
_state: dict[str, Any] = {"env": None, "cpu0": 0.0, "wall0": 0, "t0": None, "written": False}
_next_request = count()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    _state["env"] = environment


@events.test_start.add_listener
def _on_test_start(**_: Any) -> None:
    # CPU and wall are charged from here: locust's import and start-up are not per-request cost.
    _state["cpu0"], _state["wall0"] = _cpu_s(), perf_counter_ns()


@events.spawning_complete.add_listener
def _on_spawned(**_: Any) -> None:
    env: Environment = _state["env"]
    if isinstance(env.runner, WorkerRunner) or _state["t0"] is not None:
        return  # workers hear this too; only the process that runs the test owns t0
    _state["t0"], _state["wall_t0"] = perf_counter_ns(), time.time()
    runner = env.runner
    assert runner is not None
    gevent.spawn_later(_CONFIG["total_s"], runner.quit)


@events.request.add_listener
def _on_request(
    response: Any, exception: BaseException | None, context: dict[str, Any], **_: Any
) -> None:
    _end.append(perf_counter_ns())
    _sent.append(context["sent_ns"])
    _status.append(getattr(response, "status_code", 0) or 0)
    if exception is None:
        _kind.append(0)
        return
    # geventhttpclient wraps the error it gave up on (a timeout, say) in RetriesExceeded
    cause = getattr(exception, "original", None)
    name = type(cause if isinstance(cause, BaseException) else exception).__name__
    if name not in _kinds:
        _kinds.append(name)
    _kind.append(1 + _kinds.index(name))
    if len(_samples) < _MAX_SAMPLES:
        _samples.append(f"{name}: {exception}"[:300])


def _write(**_: Any) -> None:
    """Write this process's records once, when its users have stopped (or at quit)."""
    if _state["written"]:
        return
    _state["written"] = True
    env: Environment = _state["env"]
    runner = env.runner
    total = env.stats.total
    meta = {
        "role": type(runner).__name__,
        "pid": os.getpid(),
        "t0_ns": _state["t0"],
        "wall_t0": _state.get("wall_t0"),
        # a worker that was given no users never starts a test: it ran nothing
        "cpu_s": _cpu_s() - _state["cpu0"] if _state["wall0"] else 0.0,
        "wall_s": (perf_counter_ns() - _state["wall0"]) / 1e9 if _state["wall0"] else 0.0,
        "users": getattr(runner, "user_count", 0),
        # A worker's stats are reset at each report to the master: only the master's or the
        # local runner's totals are locust's own count of the whole test.
        "locust_requests": total.num_requests,
        "locust_failures": total.num_failures,
        "kinds": _kinds,
        "samples": _samples,
    }
    path = _OUT / f"{meta['role']}-{os.getpid()}.npz"
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        sent_ns=np.asarray(_sent, np.int64),
        end_ns=np.asarray(_end, np.int64),
        status=np.asarray(_status, np.int16),
        kind=np.asarray(_kind, np.int16),
        meta=np.asarray(json.dumps(meta)),
    )
    tmp.rename(path)  # the backend never reads a half-written file


@events.test_stop.add_listener
def _on_test_stop(**_: Any) -> None:
    # Load processes write when their users have stopped; the master only knows the final
    # totals (the workers' last reports) when it quits.
    if not isinstance(_state["env"].runner, MasterRunner):
        _write()


events.quitting.add_listener(_write)


class StepUser(FastHttpUser):
    """One virtual user: the next pre-built request as soon as the last one is answered
    (closed loop), or paced to `user_rate` per second (constant_throughput)."""

    host = _CONFIG["base_url"]
    network_timeout = _CONFIG["timeout_s"]
    connection_timeout = _CONFIG["timeout_s"]
    concurrency = 1  # one greenlet per user: one connection, like one virtual user
    wait_time = (
        constant(0) if _CONFIG["user_rate"] <= 0 else constant_throughput(_CONFIG["user_rate"])
    )

    @task
    def send(self) -> None:
        method, path, headers, body = _REQUESTS[next(_next_request) % len(_REQUESTS)]
        # `data` is typed str | dict, but geventhttpclient sends bytes as they are (no re-encoding)
        self.client.request(
            method,
            path,
            data=body,  # type: ignore[arg-type]
            headers=headers,
            context={"sent_ns": perf_counter_ns()},
        )
