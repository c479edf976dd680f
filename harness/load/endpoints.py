"""What the load engine drives: picklable descriptions handed to the load process.

An adapter turns a running server into one of these; the engine never knows which
framework is behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AnswerCheck:
    """How the load engine checks answers while it runs, beyond status and framing.

    Every successful answer's body length must lie in [min_bytes, max_bytes] and, for a
    text protocol, its first byte must be `starts` (`{` for JSON): comparisons, a few
    nanoseconds. Every `every`-th one is also decoded by `decoder` (a protocol client:
    picklable, it travels to the load process) and must give `shape` with finite values.
    A failure is a `bad_response` error, however fast it came back. Decoding an answer costs
    ~45 us of client CPU inside the load engine on a small box (docs/measurements.md), so one
    answer in `every` = 64 is decoded: under a microsecond per request on average."""

    min_bytes: int
    max_bytes: int
    decoder: Any = None
    shape: tuple[int, ...] = ()
    every: int = 64
    starts: bytes = b""

    def holds(self, body: bytes) -> bool:
        """The full check of one body (the sampled ones)."""
        try:
            outputs = np.asarray(self.decoder.decode(body))
        except Exception:  # any failure to decode is a bad answer, not a crash
            return False
        return outputs.shape == self.shape and bool(np.isfinite(outputs).all())


@dataclass(frozen=True)
class HttpEndpoint:
    host: str
    port: int
    requests: tuple[bytes, ...]  # complete pre-built HTTP/1.1 requests, cycled
    check: AnswerCheck | None = None


@dataclass(frozen=True)
class StreamEndpoint:
    """Streamed generations (SSE): pre-built requests, each asking for `expected_tokens[i]`
    output tokens, so a shorter stream is an error rather than a fast success."""

    host: str
    port: int
    requests: tuple[bytes, ...]
    expected_tokens: tuple[int, ...]
    arrival_s: tuple[float, ...] | None = None  # a replayed trace: when request i arrives
    # multi-turn conversations (harness/load/sessions.py): each arrival or closed-loop user
    # holds one; `requests` then holds nothing, every turn is built when it is sent
    sessions: tuple[Any, ...] | None = None  # Conversation
    chat: Any = None  # ChatBuilder
    think_time_s: float = 0.0
    # what each event carries (harness/load/sse.py): OpenAI chunks, or Triton's generate
    # extension (`text_output` per token, counts and `finish_reason` in the final event)
    dialect: str = "openai"


@dataclass(frozen=True)
class GrpcEndpoint:
    """Unary gRPC calls on one HTTP/2 channel; `requests` are serialized messages, cycled."""

    host: str
    port: int
    method: str  # "/package.Service/Method"
    requests: tuple[bytes, ...]
    check: AnswerCheck | None = None


@dataclass(frozen=True)
class InProcessEndpoint:
    """The floor: the variant called directly in the load process, no network, no server."""

    variant_dir: str
    inputs: np.ndarray  # one instance per request, cycled
    threads: int = 1


Endpoint = HttpEndpoint | StreamEndpoint | GrpcEndpoint | InProcessEndpoint
