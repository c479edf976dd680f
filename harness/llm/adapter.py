"""What an LLM adapter adds to the adapter contract: an OpenAI-compatible endpoint.

An LLM server is driven with streamed generations instead of tensors; the runner asks the
adapter for an `OpenAIClient` (base URL, the model name the server answers to, extra
request fields it needs) and leaves the rest — workload, fidelity, token metrics — to
`harness/llm/`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import httpx
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
        return OpenAIClient(server.base_url, self.model_name(), api, self.extra_body())

    def model_name(self) -> str:
        """What requests put in `"model"` (the name the server answers to)."""
        return self.served_model_name

    def extra_body(self) -> dict[str, Any]:
        """Fields this server needs in every request (beyond the OpenAI ones we send)."""
        return {}

    def endpoint(self, server: Server, variant: BuiltVariant, instances: np.ndarray) -> Endpoint:
        raise TypeError(f"{self.kind} serves generations: the runner uses openai_client()")

    def infer(self, server: Server, variant: BuiltVariant, batch: np.ndarray) -> np.ndarray:
        raise TypeError(f"{self.kind} serves generations: the runner uses openai_client()")


def prometheus_counters(url: str, prefix: str) -> dict[str, float]:
    """`<prefix>:<name>{labels} <value>` lines of a metrics page, summed over labels
    ({} when the page cannot be read: the step then simply has no server view)."""
    try:
        text = httpx.get(url, timeout=2.0).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    pattern = rf"^{re.escape(prefix)}:(\w+)(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$"
    for m in re.finditer(pattern, text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def counter_breakdown(
    before: dict[str, float],
    after: dict[str, float],
    requests: int,
    tokens: tuple[str, str],
    times_ms: dict[str, str],
) -> dict[str, Any]:
    """A step's server view from two counter readings: output and prompt tokens (`tokens`
    names the two counters) and per-request milliseconds of each timing counter (seconds)."""
    if not requests or tokens[0] not in after:
        return {}

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    view = {"server_output_tokens": delta(tokens[0]), "server_prompt_tokens": delta(tokens[1])}
    return view | {column: 1000 * delta(name) / requests for column, name in times_ms.items()}
