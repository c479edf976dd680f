"""The load engine's gRPC transport: unary calls of pre-serialized messages on grpc.aio.

Same interface as `HttpPool` (submit / expire / close, `errors`, `cap_hit`, `opened`,
`in_flight`, the `on_done` callback). Requests are protobuf bytes built before the load and
the call has no serializers, so nothing is encoded per request. One channel: HTTP/2
multiplexes every call on one connection, as real gRPC clients do. grpc.aio costs ~100 us
of client CPU per call here (docs/measurements.md), several times the HTTP/1.1 pool: the report's
client-CPU column says when that limits a step.

Outcomes are recorded like HTTP: status 200 for OK; a status the server answered maps to
its HTTP equivalent (the gRPC spec's table) with ERR_HTTP_STATUS; a server that cannot be
reached is ERR_CONNECT before any answer came back and ERR_CONNECTION after; a call older
than the timeout is cancelled and recorded as ERR_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
from time import perf_counter_ns

import grpc
import grpc.aio

from harness.load.endpoints import AnswerCheck
from harness.load.http import DoneCallback
from harness.load.records import (
    ERR_CONNECT,
    ERR_CONNECTION,
    ERR_HTTP_STATUS,
    ERR_NONE,
    ERR_PROTOCOL,
    ERR_TIMEOUT,
)

# Never route loopback gRPC through an HTTP proxy from the environment; no message size cap.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", -1),
                   ("grpc.max_send_message_length", -1)]  # fmt: skip

_S = grpc.StatusCode
HTTP_EQUIVALENT = {
    _S.CANCELLED: 499, _S.UNKNOWN: 500, _S.INVALID_ARGUMENT: 400, _S.DEADLINE_EXCEEDED: 504,
    _S.NOT_FOUND: 404, _S.ALREADY_EXISTS: 409, _S.PERMISSION_DENIED: 403,
    _S.RESOURCE_EXHAUSTED: 429, _S.FAILED_PRECONDITION: 400, _S.ABORTED: 409,
    _S.OUT_OF_RANGE: 400, _S.UNIMPLEMENTED: 501, _S.INTERNAL: 500, _S.UNAVAILABLE: 503,
    _S.DATA_LOSS: 500, _S.UNAUTHENTICATED: 401,
}  # fmt: skip


class GrpcPool:
    """In-flight unary calls to one server. `submit` starts a call at once: no pool limit."""

    def __init__(
        self,
        host: str,
        port: int,
        method: str,
        requests: list[bytes],
        on_done: DoneCallback,
        keep_bodies: bool = False,
        check: AnswerCheck | None = None,
    ) -> None:
        self.requests = requests
        self.on_done = on_done
        self.keep_bodies = keep_bodies
        self.check = check
        self._sent = 0
        self.target = f"{host}:{port}"
        self.errors: list[str] = []
        self.bodies: dict[int, bytes] = {}
        self.cap_hit = False
        self.opened = 1
        self._answered = 0
        self._closed = False
        self._live: dict[asyncio.Task[None], int] = {}  # call -> sent_ns
        self._expired: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._channel.get_state(try_to_connect=True)  # connect now, not on the first call
        self._call = self._channel.unary_unary(method)  # no serializers: bytes in, bytes out

    def submit(self, index: int, intended_ns: int) -> None:
        sent = perf_counter_ns()
        self._sent += 1
        task = self._loop.create_task(self._one(index, intended_ns, sent, self._sent))
        self._live[task] = sent

    async def _one(self, index: int, intended: int, sent: int, nth: int) -> None:
        task = asyncio.current_task()
        try:
            body = await self._call(self.requests[index % len(self.requests)])
        except asyncio.CancelledError:
            if task not in self._expired:  # closed under us: nobody is listening any more
                raise
            status, code = 0, ERR_TIMEOUT
        except grpc.aio.AioRpcError as exc:
            status, code = self._failure(exc)
        else:
            status, code = 200, ERR_NONE
            self._answered += 1
            if self.keep_bodies:
                self.bodies[index] = body
            if self.check is not None and not self._answer_ok(body, nth):
                code = ERR_PROTOCOL
        end = perf_counter_ns()
        self._live.pop(task, None)  # type: ignore[arg-type]
        self._expired.discard(task)
        if not self._closed:
            self.on_done(intended, sent, end, status, code, index)

    def _answer_ok(self, body: bytes, nth: int) -> bool:
        """The answer check (see AnswerCheck): every length, every `every`-th body in full."""
        check = self.check
        assert check is not None
        if not check.min_bytes <= len(body) <= check.max_bytes:
            self._note(f"bad answer: {len(body)} bytes, expected "
                       f"{check.min_bytes}-{check.max_bytes}")  # fmt: skip
            return False
        if nth % check.every == 0 and not check.holds(body):
            self._note(f"bad answer: not {list(check.shape)} finite outputs: {body[:120]!r}")
            return False
        return True

    def _failure(self, exc: grpc.aio.AioRpcError) -> tuple[int, int]:
        status = exc.code()
        if status == grpc.StatusCode.UNAVAILABLE:
            self._note(f"{self.target} unavailable: {exc.details()}")
            return 0, ERR_CONNECTION if self._answered else ERR_CONNECT
        if status == grpc.StatusCode.DEADLINE_EXCEEDED:
            self._note(f"{self.target}: deadline exceeded")
            return 0, ERR_TIMEOUT
        self._note(f"{self.target} answered {status.name}: {exc.details()}")
        return HTTP_EQUIVALENT.get(status, 500), ERR_HTTP_STATUS

    def expire(self, timeout_ns: int) -> None:
        """Cancel calls older than the timeout (called periodically, not per request)."""
        now = perf_counter_ns()
        for task, sent in list(self._live.items()):
            if now - sent > timeout_ns and task not in self._expired:
                self._note(f"request timed out after {timeout_ns / 1e9:g} s")
                self._expired.add(task)
                task.cancel()

    def _note(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)

    @property
    def in_flight(self) -> int:
        return len(self._live)

    def close(self) -> None:
        self._closed = True
        for task in self._live:
            task.cancel()
        # Channel.close() is a coroutine, and the engine's close() is not. Without a grace
        # period grpc.aio cancels the calls and destroys the channel without ever suspending,
        # so it is driven to its end right here; should a grpc release ever suspend there,
        # the channel is left to the garbage collector, which closes it as well.
        closing = self._channel.close()
        with contextlib.suppress(StopIteration):
            closing.send(None)
            closing.close()
