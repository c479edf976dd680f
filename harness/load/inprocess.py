"""The floor transport: call the predictor in the load process itself.

Calls run synchronously on the event loop, one at a time, exactly like a single-worker
server with zero serving overhead: closed-loop latency is pure inference time, open-loop
latency (from the intended send time) adds the queueing a single worker would cause.
"""

from __future__ import annotations

import asyncio
from time import perf_counter_ns

from harness.load.http import DoneCallback
from harness.load.records import ERR_INFERENCE, ERR_NONE


class InProcessTransport:
    in_process = True

    def __init__(self, predictor: object, inputs: object, on_done: DoneCallback) -> None:
        import numpy as np

        self.predict = predictor
        self.inputs = np.asarray(inputs)
        self.on_done = on_done
        self.errors: list[str] = []
        self.cap_hit = False
        self.opened = 1
        self.in_flight = 0
        self._loop = asyncio.get_running_loop()

    def submit(self, index: int, intended_ns: int) -> None:
        # Deferred one loop turn so a closed loop's "send the next one" never recurses.
        self._loop.call_soon(self._run, index, intended_ns)

    def _run(self, index: int, intended_ns: int) -> None:
        x = self.inputs[index % len(self.inputs)][None]
        sent = perf_counter_ns()
        try:
            self.predict(x)  # type: ignore[operator]
            code = ERR_NONE
        except Exception as exc:  # a failed inference is a failed request: data, not a crash
            code = ERR_INFERENCE
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        self.on_done(
            intended_ns, sent, perf_counter_ns(), 200 if code == ERR_NONE else 500, code, index
        )

    def expire(self, timeout_ns: int) -> None:
        """Synchronous calls cannot be outstanding."""

    def close(self) -> None:
        """Nothing to close."""
