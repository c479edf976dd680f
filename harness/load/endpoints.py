"""What the load engine drives: picklable descriptions handed to the load process.

An adapter turns a running server into one of these; the engine never knows which
framework is behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HttpEndpoint:
    host: str
    port: int
    requests: tuple[bytes, ...]  # complete pre-built HTTP/1.1 requests, cycled


@dataclass(frozen=True)
class StreamEndpoint:
    """Streamed generations (SSE): pre-built requests, each asking for `expected_tokens[i]`
    output tokens, so a shorter stream is an error rather than a fast success."""

    host: str
    port: int
    requests: tuple[bytes, ...]
    expected_tokens: tuple[int, ...]


@dataclass(frozen=True)
class GrpcEndpoint:
    """Unary gRPC calls on one HTTP/2 channel; `requests` are serialized messages, cycled."""

    host: str
    port: int
    method: str  # "/package.Service/Method"
    requests: tuple[bytes, ...]


@dataclass(frozen=True)
class InProcessEndpoint:
    """The floor: the variant called directly in the load process, no network, no server."""

    variant_dir: str
    inputs: np.ndarray  # one instance per request, cycled
    threads: int = 1


Endpoint = HttpEndpoint | StreamEndpoint | GrpcEndpoint | InProcessEndpoint
