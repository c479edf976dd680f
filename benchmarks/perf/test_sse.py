"""The streaming client's per-chunk work: what each token costs the load process.

One generation as llama.cpp streams it (32 token chunks, the finishing chunk with usage,
`[DONE]`), fed to the SSE connection one chunk per read, as the socket delivers them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from harness.load.sse import StreamPool, _StreamConn

TOKENS = 32


def _chunks() -> list[bytes]:
    def event(obj: Any) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    base = {
        "created": 1795701558,
        "model": "tiny-llama",
        "object": "text_completion",
        "id": "cmpl-U0NoO2ZNsSwn7r9Zk0MNQHXJpF7VuEFA",
    }
    out = [
        event({**base, "choices": [{"text": f" tok{i}", "index": 0, "finish_reason": None}]})
        for i in range(TOKENS)
    ]
    usage = {"completion_tokens": TOKENS, "prompt_tokens": 64, "total_tokens": TOKENS + 64}
    out.append(
        event(
            {
                **base,
                "choices": [{"text": "", "index": 0, "finish_reason": "length"}],
                "usage": usage,
            }
        )
    )
    return [*out, b"data: [DONE]\n\n"]


def test_parse_one_streamed_generation(benchmark: Any) -> None:
    chunks = _chunks()
    loop = asyncio.new_event_loop()

    async def make() -> _StreamConn:
        pool = StreamPool("127.0.0.1", 1, [b""], [TOKENS], lambda *a: None)
        return _StreamConn(pool)

    conn = loop.run_until_complete(make())

    def one() -> _StreamConn:
        conn.reset()
        for chunk in chunks:
            conn.on_body(chunk)
        return conn

    done = benchmark(one)
    loop.close()
    assert done.events == TOKENS and done.usage == (64, TOKENS) and done.done_seen
    benchmark.extra_info["tokens"] = TOKENS
