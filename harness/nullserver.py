"""A minimal HTTP server with a known behaviour, for calibration and tests.

Answers every request with a fixed plain-JSON body after an optional fixed delay (plus a
uniform jitter; or serially, one request at a time, a known service rate), and can
stall periodically (every `stall_every_s` seconds it holds all answers for `stall_s`), like
a GC pause. Written on uvloop + httptools so that it is never the bottleneck when the
load generator's own overhead is measured against it.

    python -m harness.nullserver --port 8000 [--delay-ms 5] [--jitter-ms 10
                                 [--jitter-dist exponential]] [--serial]
                                 [--stall-every-s 5 --stall-s 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import time

import httptools


class _Handler(asyncio.Protocol):
    def __init__(self, server: NullServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        now = time.perf_counter()
        response = self.server.response_for(self.url)
        delay = 0.0 if response is self.server.health else self.server.delay_for(now)
        if delay <= 0:
            self._write(response)
            return
        # libuv timers have 1 ms resolution: sleep coarsely, then spin through loop turns
        # (other connections are still served) so the delay is exact to ~10 us.
        deadline = now + delay
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, delay - 0.002), self._spin, loop, deadline, response)

    def _spin(self, loop: asyncio.AbstractEventLoop, deadline: float, response: bytes) -> None:
        if time.perf_counter() >= deadline:
            self._write(response)
        else:
            loop.call_soon(self._spin, loop, deadline, response)

    def _write(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)
            if not self.keep_alive:
                self.transport.close()


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class NullServer:
    def __init__(
        self,
        delay_ms: float = 0.0,
        stall_every_s: float = 0.0,
        stall_s: float = 0.0,
        outputs: list[list[float]] | None = None,
        jitter_ms: float = 0.0,
        serial: bool = False,
        seed: int = 0,
        jitter_dist: str = "uniform",
    ) -> None:
        self.jitter_dist = jitter_dist
        self.delay_s = delay_ms / 1000
        self.jitter_s = jitter_ms / 1000
        self.serial = serial  # one request at a time, FIFO: a known capacity of 1/delay
        self.busy_until = 0.0
        self.rng = random.Random(seed)
        self.stall_every_s = stall_every_s
        self.stall_s = stall_s
        self.t0 = time.perf_counter()
        body = json.dumps({"outputs": outputs or [[0.0]]}).encode()
        self.ok = _response("200 OK", body)
        self.health = _response("200 OK", b'{"status":"ok"}')

    def response_for(self, url: bytes) -> bytes:
        return self.health if url.startswith(b"/health") else self.ok

    def _jitter(self) -> float:
        if not self.jitter_s:
            return 0.0
        if self.jitter_dist == "exponential":  # jitter_s is the mean
            return self.rng.expovariate(1 / self.jitter_s)
        return self.rng.uniform(0, self.jitter_s)

    def delay_for(self, now: float) -> float:
        delay = self.delay_s + self._jitter()
        if self.serial:  # queue behind the request in service
            start = max(now, self.busy_until)
            self.busy_until = start + delay
            return self.busy_until - now
        if self.stall_every_s > 0 and self.stall_s > 0:
            phase = (now - self.t0) % self.stall_every_s
            if phase < self.stall_s:  # inside a stall: answer when it ends
                delay += self.stall_s - phase
        return delay


async def serve(host: str, port: int, server: NullServer) -> None:
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: _Handler(server), host, port, backlog=4096)
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    async with srv:
        await stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--stall-every-s", type=float, default=0.0)
    parser.add_argument("--stall-s", type=float, default=0.0)
    parser.add_argument("--outputs", default=None, help="JSON list of output rows to answer")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="plus uniform(0, jitter)")
    parser.add_argument("--serial", action="store_true", help="serve one request at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter-dist", choices=["uniform", "exponential"], default="uniform")
    args = parser.parse_args(argv)
    outputs = json.loads(args.outputs) if args.outputs else None
    server = NullServer(
        args.delay_ms,
        args.stall_every_s,
        args.stall_s,
        outputs,
        args.jitter_ms,
        args.serial,
        args.seed,
        args.jitter_dist,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(
        f"nullserver listening on {args.host}:{args.port} pid={os.getpid()} t0={server.t0!r}",
        flush=True,
    )
    asyncio.run(serve(args.host, args.port, server))


if __name__ == "__main__":
    main()
