"""The streaming client against a real socket server that misbehaves on purpose.

The server below speaks just enough HTTP/1.1 + SSE to stream OpenAI-style completion
chunks, and breaks the stream in the ways real servers do: cut the connection mid-way,
end without `[DONE]`, omit usage, stop short of `max_tokens`, send an error event. The
real OpenAI-compatible servers (llama.cpp, vLLM) are tested in tests/adapters/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from harness.llm.metrics import llm_summary
from harness.load.plan import StepPlan
from harness.load.records import (
    ERR_CONNECTION,
    ERR_INFERENCE,
    ERR_NONE,
    ERR_PROTOCOL,
    ERR_SHORT_OUTPUT,
)
from harness.load.worker import LoadProcess
from harness.protocols.base import GenRequest
from harness.protocols.openai import OpenAIClient
from tests.conftest import client_cpus

TOKEN_GAP_S = 0.004
FIRST_TOKEN_S = 0.02


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(await reader.readexactly(length))
            mode = body["prompt"] if isinstance(body["prompt"], str) else "ok"
            n = body["max_tokens"]
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )

            def chunk(obj: object) -> None:
                data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode())
                data += b"\n\n"
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))

            # a role-only first chunk (as vLLM's chat sends): not a token
            chunk({"choices": [{"index": 0, "text": "", "finish_reason": None}]})
            await asyncio.sleep(FIRST_TOKEN_S)
            produced = n - 2 if mode == "short" else n
            for i in range(produced):
                if mode == "cut" and i == n // 2:
                    await writer.drain()
                    writer.transport.abort()
                    return
                if mode == "error" and i == 3:
                    chunk({"error": {"message": "out of KV cache", "code": 500}})
                    break
                chunk({"choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}]})
                await writer.drain()
                await asyncio.sleep(TOKEN_GAP_S)
            chunk({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
            if mode != "nousage":
                chunk(
                    {
                        "choices": [],
                        "usage": {
                            "prompt_tokens": 5,
                            "completion_tokens": produced,
                            "total_tokens": 5 + produced,
                        },
                    }
                )
            if mode != "nodone":
                chunk(b"[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def sse_server() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(_handle, "127.0.0.1", 0))
        holder["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield int(holder["port"])  # type: ignore[call-overload]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture(scope="module")
def load() -> Iterator[LoadProcess]:
    with LoadProcess(client_cpus()) as proc:
        yield proc


def _run(load: LoadProcess, port: int, mode: str, tokens: int = 16):
    client = OpenAIClient(f"http://127.0.0.1:{port}", "m")
    prompt = (
        GenRequest((1, 2, 3, 4, 5), "", tokens) if mode == "ok" else GenRequest(None, mode, tokens)
    )
    plan = StepPlan(mode="closed", concurrency=2, duration_s=0.6, warmup_s=0.0, timeout_s=5)
    return load.run(client.endpoint([prompt]), plan)


def test_complete_streams_are_measured_token_by_token(load: LoadProcess) -> None:
    with sse_server() as port:
        rec = _run(load, port, "ok", tokens=16)
    assert len(rec) >= 4 and (rec.error == ERR_NONE).all()
    s = rec.stream
    assert s is not None
    assert (s.output_tokens == 16).all() and (s.prompt_tokens == 5).all()
    assert (s.events == 16).all()  # the empty role chunk and final chunk are not tokens
    ttft = (s.first_ns - rec.sent_ns) / 1e6
    e2e = (rec.end_ns - rec.sent_ns) / 1e6
    assert (ttft >= FIRST_TOKEN_S * 1e3 * 0.9).all() and (ttft <= e2e).all()
    gaps = s.itl_ns / 1e6
    assert len(gaps) == 15 * len(rec)  # 16 tokens: 15 gaps each
    assert np.median(gaps) >= TOKEN_GAP_S * 1e3 * 0.9
    summary = llm_summary(rec, duration_s=0.6, slo_ttft_ms=1000, slo_tpot_ms=1000)
    assert summary["output_tokens_mean"] == 16
    assert summary["llm_goodput_fraction"] == 1.0
    assert summary["tpot_mean_ms"] >= TOKEN_GAP_S * 1e3 * 0.9
    strict = llm_summary(rec, duration_s=0.6, slo_ttft_ms=1.0)  # 20 ms TTFT misses 1 ms
    assert strict["llm_goodput_fraction"] == 0.0


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("cut", ERR_CONNECTION),
        ("nodone", ERR_PROTOCOL),
        ("nousage", ERR_PROTOCOL),
        ("short", ERR_SHORT_OUTPUT),
        ("error", ERR_INFERENCE),
    ],
)
def test_a_broken_stream_is_an_error_not_a_short_success(
    load: LoadProcess, mode: str, code: int
) -> None:
    with sse_server() as port:
        rec = _run(load, port, mode)
    assert len(rec) >= 2
    assert (rec.error == code).all(), (mode, rec.error, rec.error_samples)
    summary = llm_summary(rec, duration_s=0.6)
    assert np.isnan(summary["ttft_mean_ms"])  # failures never enter the token metrics
