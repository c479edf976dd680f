"""What an LLM adapter adds to the adapter contract: an OpenAI-compatible endpoint.

An LLM server is driven with streamed generations instead of tensors; the runner asks the
adapter for an `OpenAIClient` (base URL, the model name the server answers to, extra
request fields it needs) and leaves the rest — workload, fidelity, token metrics — to
`harness/llm/`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from harness.adapter import Adapter, C, Server
from harness.load.endpoints import Endpoint
from harness.protocols.openai import OpenAIClient
from harness.variants import LLM_VARIANT_NAMES, BuiltVariant


class LlmAdapter(Adapter[C]):
    variants: ClassVar[frozenset[str]] = frozenset(LLM_VARIANT_NAMES)
    served_model_name: ClassVar[str] = "tiny-llama"

    def openai_client(
        self, server: Server, api: Literal["completions", "chat"] = "completions"
    ) -> OpenAIClient:
        assert server.base_url is not None
        return OpenAIClient(server.base_url, self.served_model_name, api, self.extra_body())

    def extra_body(self) -> dict[str, Any]:
        """Fields this server needs in every request (beyond the OpenAI ones we send)."""
        return {}

    def endpoint(self, server: Server, variant: BuiltVariant, instances: np.ndarray) -> Endpoint:
        raise TypeError(f"{self.kind} serves generations: the runner uses openai_client()")

    def infer(self, server: Server, variant: BuiltVariant, batch: np.ndarray) -> np.ndarray:
        raise TypeError(f"{self.kind} serves generations: the runner uses openai_client()")
