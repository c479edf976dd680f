"""The load process: runs steps on its own uvloop, pinned to the client CPUs.

Keeping the load generator in its own process gives it a clean event loop, its own CPU
accounting (so "was the client the bottleneck?" is answerable) and its own core; the
harness process only sends a step plan and receives the raw records back.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

from harness.errors import ServingBenchError
from harness.lifetime import die_with_parent
from harness.load.endpoints import Endpoint
from harness.load.plan import StepPlan
from harness.load.records import StepRecords


class LoadProcess:
    def __init__(self, cpus: list[int] | None = None) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that may hold torch threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_main, args=(child, cpus), daemon=True, name="servingbench-load"
        )
        self._proc.start()
        child.close()

    def run(self, endpoint: Endpoint, plan: StepPlan) -> StepRecords:
        self.submit(endpoint, plan)
        return self.collect(plan)

    def submit(self, endpoint: Endpoint, plan: StepPlan) -> None:
        self._conn.send(("run", endpoint, plan))

    def collect(self, plan: StepPlan) -> StepRecords:
        while not self._conn.poll(0.25):
            if not self._proc.is_alive():
                raise ServingBenchError(
                    f"the load process died (exit code {self._proc.exitcode}) during {plan.label}"
                )
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise ServingBenchError(
                f"the load process died (exit code {self._proc.exitcode}) during {plan.label}"
            ) from exc
        if kind == "error":
            raise ServingBenchError(f"the load process failed during {plan.label}:\n{payload}")
        return payload

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send(("stop",))
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _main(conn: Connection, cpus: list[int] | None) -> None:
    die_with_parent()  # a kill -9 of servingbench ends its load processes too, mid-step
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    if cpus:
        os.sched_setaffinity(0, cpus)
    import uvloop

    from harness.load.engine import run_step

    loop = uvloop.new_event_loop()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        _, endpoint, plan = message
        gc.collect()
        gc.disable()  # no collector pauses inside a measured step
        try:
            records = loop.run_until_complete(run_step(endpoint, plan))
            conn.send(("ok", records))
        except Exception:
            conn.send(("error", traceback.format_exc()))
        finally:
            gc.enable()
