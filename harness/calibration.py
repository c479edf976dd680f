"""Calibration: the load generator's own overhead, measured against a built-in null server.

Before the targets, the run measures what our client adds when the server does nothing:
client CPU per request and the latency floor (closed loop), and whether the open-loop
schedule holds at a rate above the scenario's highest. The figures go into run.json and
the report, so every other number can be read against them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from harness.errors import ServingBenchError
from harness.load.backend import LoadBackend
from harness.load.endpoints import HttpEndpoint
from harness.load.http import build_request
from harness.load.plan import StepPlan
from harness.net import LOOPBACK, free_port, http
from harness.stats import summarize

CLOSED = StepPlan(mode="closed", concurrency=8, duration_s=1.5, warmup_s=0.3)


def calibrate(load: LoadBackend, server_cpus: list[int] | None, open_rate: float) -> dict[str, Any]:
    """Run the calibration steps; figures keyed by name (see module docstring)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.nullserver", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        if server_cpus:
            os.sched_setaffinity(proc.pid, server_cpus)
        _wait(port)
        request = build_request(LOOPBACK, port, "POST", "/predict", b'{"inputs":[[0.0]]}')
        endpoint = HttpEndpoint(LOOPBACK, port, (request,))
        closed_rec = load.run(endpoint, CLOSED)
        closed = summarize(closed_rec)
        plan = StepPlan(mode="open", rate=open_rate, arrival="constant", duration_s=1.5,
                        warmup_s=0.3)  # fmt: skip
        opened = summarize(load.run(endpoint, plan))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return {
        "client_cpu_us_per_request": closed_rec.client_cpu_s / max(len(closed_rec), 1) * 1e6,
        "closed_loop_rps": closed.throughput_rps,
        "floor_p50_ms": closed.p50_ms,
        "floor_p99_ms": closed.p99_ms,
        "open_rate": open_rate,
        "open_achieved_rate_ratio": opened.achieved_rate_ratio,
        "open_send_lag_p99_ms": opened.send_lag_p99_ms,
        "open_added_p50_ms": opened.p50_ms,
        "open_added_p99_ms": opened.p99_ms,
        "open_holds": opened.valid,
        "note": opened.invalid_reason,
    }


def _wait(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if http().get(f"http://{LOOPBACK}:{port}/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise ServingBenchError("the calibration null server did not start")
