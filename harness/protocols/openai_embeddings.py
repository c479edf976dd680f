"""OpenAI's embeddings API, as vLLM's pooling runner (and llama-server) serve it.

    POST /v1/embeddings   {"model": m, "input": ["text", ...], "encoding_format": "float"}
        -> {"data": [{"index": i, "embedding": [...]}, ...], "usage": {...}}

One embedding per input, matched by `index` (a server may answer in any order).
"""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np

from harness.errors import ProtocolError
from harness.protocols.base import ProtocolClient, is_text, texts_of


class OpenAIEmbeddingsClient(ProtocolClient):
    name: ClassVar[str] = "openai-embeddings"

    def __init__(
        self,
        base_url: str,
        model: str,
        path: str = "/v1/embeddings",
        extra_body: dict[str, object] | None = None,
    ) -> None:
        super().__init__(base_url, path)
        self.model = model
        self.extra_body = dict(extra_body or {})  # e.g. vLLM's truncate_prompt_tokens

    def encode(self, batch: np.ndarray) -> bytes:
        if not is_text(batch):
            raise ProtocolError("the OpenAI embeddings API takes text, not tensors")
        body = {"model": self.model, "input": texts_of(batch), "encoding_format": "float",
                **self.extra_body}  # fmt: skip
        return json.dumps(body, separators=(",", ":")).encode()

    def decode(self, body: bytes) -> np.ndarray:
        try:
            data = sorted(json.loads(body)["data"], key=lambda d: int(d["index"]))
            return np.asarray([d["embedding"] for d in data], np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"not an OpenAI embeddings answer ({exc}): {body[:200]!r}") from exc
