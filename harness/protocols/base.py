"""Protocol clients: what an adapter hands the harness for one started server.

A client pre-builds the load engine's requests (`endpoint`) and offers a slow-but-simple
path for fidelity checks and probes (through httpx). Each workload family expects its own
kind of client:

- `TensorClient` (tensor inference): `infer(batch)` and `endpoint(instances)`; the wire
  protocols derive from `ProtocolClient`, which turns a batch into a request body and a
  response body back into outputs;
- `GenerationClient` (text generation): `generate(request)` and `endpoint(requests)`, with
  `GenRequest` the request every generative protocol carries.

Bodies are encoded once before the load starts: the engine only writes bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
import numpy as np

from harness.errors import ProtocolError
from harness.load.endpoints import AnswerCheck, Endpoint, HttpEndpoint
from harness.load.http import build_request
from harness.net import http


def is_text(batch: Any) -> bool:
    """A batch of strings (a sentence encoder's requests) rather than numbers."""
    return isinstance(batch, np.ndarray) and batch.dtype.kind in "OUS"


def texts_of(batch: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in batch.ravel()]


def bytes_tensor(batch: np.ndarray) -> bytes:
    """The Open Inference protocol's BYTES serialization: each element as a 4-byte
    little-endian length and its UTF-8 bytes."""
    parts = []
    for text in texts_of(batch):
        raw = text.encode()
        parts += [len(raw).to_bytes(4, "little"), raw]
    return b"".join(parts)


class Client(ABC):
    """What the load engine is handed for one served target."""

    name: ClassVar[str]

    @abstractmethod
    def endpoint(self, payloads: Any) -> Endpoint:
        """Pre-built requests for the load engine, one per payload, cycled."""


class TensorClient(Client):
    """Tensors in, tensors out: the tensor-inference family's client."""

    @abstractmethod
    def infer(self, batch: np.ndarray, timeout_s: float = 30.0) -> np.ndarray:
        """Outputs (N, ...) for `batch` (N instances), sent as one request."""

    @abstractmethod
    def endpoint(self, instances: np.ndarray, expected: np.ndarray | None = None) -> Endpoint:
        """Pre-built requests, one instance each; with the `expected` outputs, the load
        engine also checks the shape of the answers while it runs."""


class ProtocolClient(TensorClient):
    """A tensor protocol on the wire: a batch becomes a body, a body becomes outputs."""

    method: ClassVar[str] = "POST"
    content_type: ClassVar[str] = "application/json"

    def __init__(self, base_url: str, path: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.path = path

    @abstractmethod
    def encode(self, batch: np.ndarray) -> bytes:
        """Body of one request carrying `batch` (N instances)."""

    @abstractmethod
    def decode(self, body: bytes) -> np.ndarray:
        """Outputs (N, ...) from a response body; ProtocolError if malformed."""

    def extra_headers(self, body: bytes) -> dict[str, str]:
        """Headers a request needs besides Content-Type/Length (e.g. a binary split point)."""
        return {}

    def infer(self, batch: np.ndarray, timeout_s: float = 30.0) -> np.ndarray:
        body = self.encode(batch)
        try:
            response = http().request(
                self.method,
                self.base_url + self.path,
                content=body,
                headers={"Content-Type": self.content_type, **self.extra_headers(body)},
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            raise ProtocolError(f"{self.base_url + self.path}: {exc}") from exc
        if response.status_code >= 400:
            raise ProtocolError(
                f"{self.base_url + self.path} answered HTTP {response.status_code}: "
                f"{response.text[:500]}"
            )
        return self.decode(response.content)

    # the first byte of every answer (JSON protocols: an object); b"" where it varies
    answer_starts: ClassVar[bytes] = b"{"

    def answer_bounds(self, values: int) -> tuple[int, int]:
        """The body size (bytes) of an answer of `values` numbers: a text protocol's (a
        binary one overrides it with its exact tensor size plus a header)."""
        return 2 * values, 64 * values + 1024

    def answer_check(self, expected: np.ndarray | None) -> AnswerCheck | None:
        """What the load engine checks in this protocol's answers to one instance."""
        if expected is None:
            return None
        shape = (1, *expected.shape[1:])
        low, high = self.answer_bounds(int(np.prod(shape)))
        return AnswerCheck(low, high, decoder=self, shape=shape, starts=self.answer_starts)

    def endpoint(self, instances: np.ndarray, expected: np.ndarray | None = None) -> Endpoint:
        """Pre-built requests, one instance each, for the load engine."""
        url = httpx.URL(self.base_url)
        host, port = url.host, url.port or 80
        bodies = [self.encode(instances[i : i + 1]) for i in range(len(instances))]
        requests = tuple(
            build_request(
                host, port, self.method, self.path, body, self.content_type,
                self.extra_headers(body),
            )
            for body in bodies
        )  # fmt: skip
        return HttpEndpoint(host, port, requests, self.answer_check(expected))


@dataclass(frozen=True)
class GenRequest:
    """One generation: a prompt (ids when known, and text) and the output length forced."""

    prompt_ids: tuple[int, ...] | None
    prompt_text: str
    max_tokens: int

    @property
    def prompt_len(self) -> int | None:
        return len(self.prompt_ids) if self.prompt_ids is not None else None


class GenerationClient(Client):
    """Text generation, streamed: the generative family's client."""

    api: Literal["completions", "chat"] = "completions"

    @abstractmethod
    def for_api(self, api: Literal["completions", "chat"]) -> GenerationClient:
        """The same server and model through another API (completions or chat)."""

    @abstractmethod
    def generate(
        self,
        req: GenRequest,
        stream: bool = True,
        max_tokens: int | None = None,
        timeout_s: float = 60.0,
    ) -> Any:
        """One generation by the slow path (fidelity checks): a `Generation`."""

    @abstractmethod
    def endpoint(self, requests: Sequence[GenRequest]) -> Endpoint:
        """Pre-built streamed requests, one per generation."""
