"""The load engine's HTTP/1.1 client: the hot path, written by hand on purpose.

Measured on a 2-core box (docs/measurements.md): aiohttp costs ~57 us of client CPU per request,
httpx ~1.4 ms; a bare asyncio.Protocol writing pre-built request bytes and parsing with
httptools costs ~13 us. So: requests are pre-encoded bytes, a connection is a Protocol
whose parser callbacks complete the request directly (no futures, no tasks per request),
and a freed connection is handed straight to the oldest waiting request. Connections the
server closed are dropped and reopened on demand; a request that outlives its timeout is
recorded as an error and its connection aborted.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns

import httptools

from harness.load.endpoints import AnswerCheck
from harness.load.records import (
    ERR_CONNECT,
    ERR_CONNECTION,
    ERR_HTTP_STATUS,
    ERR_NONE,
    ERR_PROTOCOL,
    ERR_TIMEOUT,
)

# on_done(intended_ns, sent_ns, end_ns, status, error_code, request_index)
DoneCallback = Callable[[int, int, int, int, int, int], None]


def build_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """One complete HTTP/1.1 request as bytes, built once before the load starts."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Conn(asyncio.Protocol):
    __slots__ = ("body", "got", "head", "intended", "nbody", "parser", "pool", "req", "sent",
                 "transport", "uses")  # fmt: skip

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.intended = 0
        self.sent = 0  # 0 = idle
        self.req = -1
        self.body: list[bytes] | None = None
        self.uses = 0  # requests sent on this connection
        self.got = False  # any response bytes for the current request
        self.nbody = 0  # body bytes of the current answer
        self.head = b""  # its first byte

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.pool._fail(self, ERR_PROTOCOL)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._lost(self)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if not self.nbody:
            self.head = body[:1]
        self.nbody += len(body)
        if self.body is not None:
            self.body.append(body)

    def on_message_complete(self) -> None:
        end = perf_counter_ns()
        status = self.parser.get_status_code()
        self.pool._complete(self, status, end, self.parser.should_keep_alive())


class HttpPool:
    """Connections to one server. `submit` sends now on an idle connection or queues."""

    connection_class: type[_Conn] = _Conn

    def __init__(
        self,
        host: str,
        port: int,
        requests: list[bytes],
        on_done: DoneCallback,
        max_connections: int = 2048,
        keep_bodies: bool = False,
        check: AnswerCheck | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.requests = requests
        self.on_done = on_done
        self.max_connections = max_connections
        self.keep_bodies = keep_bodies
        self.check = check
        self.sent_count = 0
        self.idle: list[_Conn] = []  # LIFO: reuse the warmest connection
        self.pending: deque[tuple[int, int]] = deque()  # (request index, intended_ns)
        self.busy: set[_Conn] = set()
        self.opened = 0
        self.opening = 0
        self.cap_hit = False
        self.errors: list[str] = []
        self.bodies: dict[int, bytes] = {}
        self.retried: set[int] = set()  # requests re-sent after a stale keep-alive connection
        self.reuse = True  # False once the server showed it closes kept-alive connections
        self.id_prefix: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def request_ids(self, prefix: bytes) -> None:
        """Send `X-Request-Id: <prefix><request index>` with every request."""
        self.id_prefix = prefix

    async def open(self, count: int) -> None:
        """Pre-open `count` connections (they become idle)."""
        self.opening += count
        await asyncio.gather(*(self._connect() for _ in range(count)))

    def _start_connect(self) -> None:
        # Count the attempt now, not when its task first runs: a burst of submits within one
        # loop turn must see it, or every one of them starts a connection past the cap.
        self.opening += 1
        self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        """One connection attempt; the caller has already counted it in `opening`."""
        try:
            _, conn = await self._loop.create_connection(
                lambda: self.connection_class(self), self.host, self.port
            )
        except OSError as exc:
            self.opening -= 1
            self._note(f"connect to {self.host}:{self.port} failed: {exc}")
            if self.pending:  # nobody else will serve these: fail them now
                idx, intended = self.pending.popleft()
                now = perf_counter_ns()
                self._done(None, intended, now, now, 0, ERR_CONNECT, idx)
            return
        self.opening -= 1
        self.opened += 1
        self._release(conn)

    def submit(self, index: int, intended_ns: int) -> None:
        if self.idle:
            self._send(self.idle.pop(), index, intended_ns)
            return
        self.pending.append((index, intended_ns))
        if self.opened + self.opening < self.max_connections:
            self._start_connect()
        else:
            self.cap_hit = True

    def _send(self, conn: _Conn, index: int, intended_ns: int) -> None:
        conn.req = index
        conn.intended = intended_ns
        conn.uses += 1
        conn.got = False
        conn.nbody = 0
        conn.head = b""
        self.sent_count += 1
        check = self.check
        if self.keep_bodies or (check is not None and self.sent_count % check.every == 0):
            conn.body = []
        conn.sent = perf_counter_ns()
        self.busy.add(conn)
        request = self.requests[index % len(self.requests)]
        if self.id_prefix is not None:  # one header after the request line
            cut = request.index(b"\r\n") + 2
            request = b"".join((request[:cut], b"X-Request-Id: ", self.id_prefix,
                                str(index).encode(), b"\r\n", request[cut:]))  # fmt: skip
        conn.transport.write(request)  # type: ignore[union-attr]

    def _release(self, conn: _Conn) -> None:
        if self.pending:
            index, intended = self.pending.popleft()
            self._send(conn, index, intended)
        else:
            self.idle.append(conn)

    def _complete(self, conn: _Conn, status: int, end: int, keep_alive: bool) -> None:
        intended, sent, index = conn.intended, conn.sent, conn.req
        conn.sent = 0
        self.busy.discard(conn)
        body = None
        if conn.body is not None:
            body = b"".join(conn.body)
            conn.body = None
            if self.keep_bodies:
                self.bodies[index] = body
        if keep_alive and self.reuse:
            self._release(conn)
        else:
            self._drop(conn)
            if self.pending and self.opened + self.opening < self.max_connections:
                self._start_connect()
        code = ERR_NONE if status < 400 else ERR_HTTP_STATUS
        if code == ERR_NONE and self.check is not None and not self._answer_ok(conn, body):
            code = ERR_PROTOCOL
        self._done(conn, intended, sent, end, status, code, index)

    def _answer_ok(self, conn: _Conn, body: bytes | None) -> bool:
        """The answer check (see AnswerCheck): every length, the sampled bodies in full."""
        check, size = self.check, conn.nbody
        assert check is not None
        if check.starts and conn.head != check.starts:
            self._note(f"bad answer: starts with {conn.head!r}, expected {check.starts!r}")
            return False
        if not check.min_bytes <= size <= check.max_bytes:
            self._note(f"bad answer: {size} bytes, expected {check.min_bytes}-{check.max_bytes}"
                       + (f": {body[:120]!r}" if body is not None else ""))  # fmt: skip
            return False
        if body is not None and not check.holds(body):
            self._note(f"bad answer: not {list(check.shape)} finite outputs: {body[:120]!r}")
            return False
        return True

    def _done(
        self,
        conn: _Conn | None,
        intended: int,
        sent: int,
        end: int,
        status: int,
        code: int,
        index: int,
    ) -> None:
        """Every request ends here, exactly once (a streaming pool adds its columns)."""
        self.on_done(intended, sent, end, status, code, index)

    def _drop(self, conn: _Conn) -> None:
        if conn.transport is not None:
            conn.transport.close()
            conn.transport = None
            self.opened -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        self.busy.discard(conn)

    def _fail(self, conn: _Conn, code: int) -> None:
        intended, sent, index = conn.intended, conn.sent, conn.req
        was_busy = conn.sent != 0
        conn.sent = 0
        if conn.transport is not None:
            conn.transport.abort()
        self._drop(conn)
        if was_busy:
            self._done(conn, intended, sent, perf_counter_ns(), 0, code, index)
        if self.pending and self.opened + self.opening < self.max_connections:
            self._start_connect()

    def _lost(self, conn: _Conn) -> None:
        if conn.transport is None and conn.sent == 0:
            return  # we closed it ourselves
        if conn.sent != 0 and not conn.got and conn.uses > 1 and conn.req not in self.retried:
            # A kept-alive connection the server had already closed (llama.cpp closes after
            # each streamed answer though it says keep-alive): nothing was answered, so send
            # it again on a fresh connection, once, as HTTP clients do. Latency still counts
            # from the intended time.
            self.retried.add(conn.req)
            self.reuse = False  # it will do it again: one request per connection from now on
            index, intended = conn.req, conn.intended
            conn.sent = 0
            self._drop(conn)
            self.pending.appendleft((index, intended))
            if self.opened + self.opening < self.max_connections:
                self._start_connect()
        elif conn.sent != 0:
            self._note("server closed a connection with a request in flight")
            self._fail(conn, ERR_CONNECTION)
        else:  # idle keep-alive connection closed by the server: just forget it
            conn.transport = None
            self.opened -= 1
            if conn in self.idle:
                self.idle.remove(conn)

    def expire(self, timeout_ns: int) -> None:
        """Fail requests older than the timeout (called periodically, not per request)."""
        now = perf_counter_ns()
        for conn in [c for c in self.busy if c.sent and now - c.sent > timeout_ns]:
            self._note(f"request timed out after {timeout_ns / 1e9:g} s")
            self._fail(conn, ERR_TIMEOUT)
        # Requests still waiting for a connection (cap reached) time out too, never vanish.
        while self.pending and now - self.pending[0][1] > timeout_ns:
            index, intended = self.pending.popleft()
            self._note(f"request timed out after {timeout_ns / 1e9:g} s waiting for a connection")
            self._done(None, intended, now, now, 0, ERR_TIMEOUT, index)

    def _note(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)

    @property
    def in_flight(self) -> int:
        return len(self.busy) + len(self.pending)

    def close(self) -> None:
        for conn in list(self.idle) + list(self.busy):
            if conn.transport is not None:
                conn.transport.abort()
                conn.transport = None
        self.idle.clear()
        self.busy.clear()
