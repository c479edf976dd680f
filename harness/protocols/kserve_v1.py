"""KServe's V1 protocol (the TensorFlow Serving style predict API).

    POST /v1/models/<m>:predict   {"instances": [<instance>, ...]}  -> {"predictions": [...]}

An instance is the model input without the batch axis, as nested lists of numbers (or a
string); one
prediction per instance, in order. KServe answers errors with {"error": "..."} and a 4xx/5xx.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

import numpy as np

from harness.errors import ProtocolError
from harness.protocols.base import ProtocolClient, is_text, texts_of

_PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+):predict$")


class KServeV1Client(ProtocolClient):
    name: ClassVar[str] = "kserve-v1"

    def __init__(self, base_url: str, path: str = "/v1/models/model:predict") -> None:
        found = _PREDICT_PATH.match(path)
        if found is None:
            raise ValueError(f"{path!r} is not a KServe v1 predict path (/v1/models/<m>:predict)")
        super().__init__(base_url, path)
        self.model = found.group(1)

    def encode(self, batch: np.ndarray) -> bytes:
        # float32 values printed as float32 (tolist of a float32 array): shortest exact text
        rows = texts_of(batch) if is_text(batch) else np.asarray(batch, np.float32).tolist()
        return json.dumps({"instances": rows}, separators=(",", ":")).encode()

    def decode(self, body: bytes) -> np.ndarray:
        try:
            predictions = json.loads(body)["predictions"]
            return np.asarray(predictions, np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"not a KServe v1 answer ({exc}): {body[:200]!r}") from exc
