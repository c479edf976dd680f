"""A protocol client turns model inputs into request bodies and response bodies into outputs.

Bodies are encoded once before the load starts (the engine only writes bytes); `infer`
is the slow-but-simple path used for fidelity checks and probes, through httpx.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import httpx
import numpy as np

from harness.errors import ProtocolError
from harness.load.endpoints import Endpoint, HttpEndpoint
from harness.load.http import build_request


class ProtocolClient(ABC):
    name: ClassVar[str]
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
            response = httpx.request(
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

    def endpoint(self, instances: np.ndarray) -> Endpoint:
        """Pre-built requests, one instance each, for the load engine."""
        url = httpx.URL(self.base_url)
        host, port = url.host, url.port or 80
        bodies = [self.encode(x[None]) for x in instances]
        requests = tuple(
            build_request(
                host, port, self.method, self.path, body, self.content_type,
                self.extra_headers(body),
            )
            for body in bodies
        )  # fmt: skip
        return HttpEndpoint(host=host, port=port, requests=requests)
