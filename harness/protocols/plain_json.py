"""The plain-JSON protocol every in-tree server speaks (documented in docs/protocol.md).

    POST /predict   {"inputs": [<instance>, ...]}   -> 200 {"outputs": [<row>, ...]}

An instance is the model input without the batch axis, as nested lists of numbers (or a
string, for a sentence encoder); one
output row per instance, in order. Errors answer 4xx/5xx with {"error": "..."}.
"""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np

from harness.errors import ProtocolError
from harness.protocols.base import ProtocolClient, is_text, texts_of


class PlainJsonClient(ProtocolClient):
    name: ClassVar[str] = "plain-json"

    def __init__(self, base_url: str, path: str = "/predict") -> None:
        super().__init__(base_url, path)

    def encode(self, batch: np.ndarray) -> bytes:
        # Rounded to float32's precision: identical values, a third of the bytes.
        rows = texts_of(batch) if is_text(batch) else np.asarray(batch, np.float32).tolist()
        return json.dumps({"inputs": rows}, separators=(",", ":")).encode()

    def decode(self, body: bytes) -> np.ndarray:
        try:
            data = json.loads(body)
            outputs = np.asarray(data["outputs"], np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"not a plain-json answer ({exc}): {body[:200]!r}") from exc
        return outputs
