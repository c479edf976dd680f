"""Streamed generations (OpenAI-style server-sent events) on the load engine's HTTP pool.

The same hand-written connections as `harness/load/http.py`; the body callback stamps each
read as it arrives and splits it into SSE events. A content event is a token arrival: the
first one gives time to first token, the gaps between the next ones inter-token latency.
Token counts come from the final `usage` chunk (we ask for it with
`stream_options.include_usage`), never from counting chunks: servers merge tokens into one
chunk or drop empty ones.

Triton's generate extension (`/v2/models/<m>/generate_stream`) is the `triton` dialect:
each event is one response of a decoupled model, `text_output` a token's text; the final
one carries `finish_reason` and the `prompt_tokens`/`completion_tokens` counts, and stands
for `[DONE]` and usage (the stream then closes).

A generation is a success only when the whole stream arrived: HTTP 200, `data: [DONE]`,
a usage record, and as many output tokens as were asked for. A connection cut mid-stream
is `connection_lost`; a stream that ends without `[DONE]` or usage is `bad_response`; an
`error` event is `inference_error`; fewer tokens than asked is `short_output`.
"""

from __future__ import annotations

import json
from time import perf_counter_ns
from typing import Any

import numpy as np

from harness.load.http import DoneCallback, HttpPool, _Conn
from harness.load.records import (
    ERR_INFERENCE,
    ERR_NONE,
    ERR_PROTOCOL,
    ERR_SHORT_OUTPUT,
    StreamColumns,
)


def chunk_text(choice: dict[str, Any]) -> str:
    """The text one streamed choice carries: `text` (completions) or `delta.content` (chat);
    "" for role-only and finishing chunks, which are not tokens."""
    text = choice.get("text")
    if text is None:
        text = (choice.get("delta") or {}).get("content")
    return text or ""


def _count(value: Any) -> int:
    if isinstance(value, list):
        value = value[0] if value else 0
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class _StreamConn(_Conn):
    __slots__ = ("buf", "done_seen", "events", "first", "gaps", "last", "parts", "problem",
                 "triton", "usage")  # fmt: skip

    def __init__(self, pool: HttpPool) -> None:
        super().__init__(pool)
        self.triton = getattr(pool, "dialect", "openai") == "triton"
        self.reset()

    def reset(self) -> None:
        self.buf = b""
        self.first = 0
        self.last = 0
        self.gaps: list[int] = []
        self.events = 0
        self.usage: tuple[int, int] | None = None
        self.done_seen = False
        self.problem = ERR_NONE
        self.parts: list[str] | None = [] if self.pool.keep_text else None  # type: ignore[attr-defined]

    def _token(self, text: str, now: int) -> None:
        if self.parts is not None:
            self.parts.append(text)
        if self.first == 0:
            self.first = now
        else:
            self.gaps.append(now - self.last)
        self.last = now
        self.events += 1

    def _triton(self, obj: dict[str, Any], now: int) -> None:
        text = obj.get("text_output")
        if isinstance(text, list):  # a [1]-shaped output may come as a one-item list
            text = text[0] if text else ""
        if text:
            self._token(str(text), now)
        finish = obj.get("finish_reason")
        if isinstance(finish, list):
            finish = finish[0] if finish else ""
        if finish:
            self.done_seen = True
            self.usage = (_count(obj.get("prompt_tokens")), _count(obj.get("completion_tokens")))

    def on_body(self, body: bytes) -> None:
        now = perf_counter_ns()  # arrival of this read: every event in it arrived now
        buf = self.buf + body
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        *events, self.buf = buf.split(b"\n\n")
        for event in events:
            self._event(event, now)

    def _event(self, event: bytes, now: int) -> None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments (": ping"), event names, ids
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done_seen = True
                continue
            try:
                obj = json.loads(payload)
            except ValueError:
                self.problem = self.problem or ERR_PROTOCOL
                continue
            if not isinstance(obj, dict):
                self.problem = self.problem or ERR_PROTOCOL
                continue
            if "error" in obj:
                self.problem = ERR_INFERENCE
                assert isinstance(self.pool, StreamPool)
                self.pool._note(f"error event: {str(obj['error'])[:200]}")
                continue
            if self.triton:
                self._triton(obj, now)
                continue
            usage = obj.get("usage")
            if usage:
                self.usage = (
                    int(usage.get("prompt_tokens") or 0),
                    int(usage.get("completion_tokens") or 0),
                )
            for choice in obj.get("choices") or ():
                text = chunk_text(choice)
                if text:  # role-only and empty chunks are not tokens
                    self._token(text, now)


class StreamPool(HttpPool):
    """HttpPool whose requests are streamed generations; keeps per-request token columns."""

    connection_class = _StreamConn
    keep_text = False  # conversations send earlier answers back: keep every answer's text

    def __init__(
        self,
        host: str,
        port: int,
        requests: list[bytes],
        expected_tokens: list[int],
        on_done: DoneCallback,
        max_connections: int = 2048,
        dialect: str = "openai",
    ) -> None:
        self.dialect = dialect  # before the connections are made: they read it
        super().__init__(host, port, requests, on_done, max_connections=max_connections)
        self.expected = expected_tokens
        self.first: list[int] = []
        self.out: list[int] = []
        self.prompt: list[int] = []
        self.events: list[int] = []
        self.gaps: list[int] = []
        self.offsets: list[int] = [0]
        self._stash: int | None = None
        self.texts: dict[int, str] = {}  # request index -> the answer (keep_text only)

    def _send(self, conn: _Conn, index: int, intended_ns: int) -> None:
        assert isinstance(conn, _StreamConn)
        conn.reset()
        super()._send(conn, index, intended_ns)

    def _complete(self, conn: _Conn, status: int, end: int, keep_alive: bool) -> None:
        # Collect now: the base class hands the connection to the next request before it
        # reports this one, and that resets the connection's stream state.
        assert isinstance(conn, _StreamConn)
        self._stash = self._collect(conn, conn.req, judge=status < 400)
        super()._complete(conn, status, end, keep_alive)

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
        judged, self._stash = self._stash, None
        if judged is not None:  # a complete HTTP response, collected above
            code = code or judged
        elif isinstance(conn, _StreamConn) and conn.req == index:  # failed mid-stream
            self._collect(conn, index, judge=False)
        else:  # never had a connection: no stream at all
            self.first.append(-1)
            self.out.append(-1)
            self.prompt.append(-1)
            self.events.append(0)
            self.offsets.append(len(self.gaps))
        super()._done(conn, intended, sent, end, status, code, index)

    def _collect(self, conn: _StreamConn, index: int, judge: bool) -> int:
        if conn.parts is not None:
            self.texts[index] = "".join(conn.parts)
        self.first.append(conn.first or -1)
        self.out.append(conn.usage[1] if conn.usage else -1)
        self.prompt.append(conn.usage[0] if conn.usage else -1)
        self.events.append(conn.events)
        self.gaps.extend(conn.gaps)
        self.offsets.append(len(self.gaps))
        return self._judge(conn, index) if judge else ERR_NONE

    def _judge(self, conn: _StreamConn, index: int) -> int:
        if conn.problem:
            return conn.problem
        if not conn.done_seen:
            self._note("stream ended without data: [DONE]")
            return ERR_PROTOCOL
        if conn.usage is None:
            self._note("stream carried no usage record (stream_options.include_usage)")
            return ERR_PROTOCOL
        expected = self.expected[index % len(self.expected)]
        if conn.usage[1] < expected:
            self._note(f"asked for {expected} output tokens, usage says {conn.usage[1]}")
            return ERR_SHORT_OUTPUT
        return ERR_NONE

    def stream_columns(self, t0: int) -> StreamColumns:
        first = np.asarray(self.first, np.int64)
        return StreamColumns(
            first_ns=np.where(first > 0, first - t0, -1),
            output_tokens=np.asarray(self.out, np.int32),
            prompt_tokens=np.asarray(self.prompt, np.int32),
            events=np.asarray(self.events, np.int32),
            itl_ns=np.asarray(self.gaps, np.int64),
            itl_offsets=np.asarray(self.offsets, np.int64),
        )


def stream_columns_of(transport: Any, t0: int) -> StreamColumns | None:
    return transport.stream_columns(t0) if isinstance(transport, StreamPool) else None
