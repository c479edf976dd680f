"""Triton's generate extension: `POST /v2/models/<model>/generate_stream`, streamed as SSE.

The request is a JSON object whose fields are the model's inputs (`input_ids` for a prompt
of token ids, else `text_input`; `max_tokens`; `ignore_eos`); each response of the
decoupled model comes back as one `data:` event of its outputs (`text_output`, and in the
last one `finish_reason`, `prompt_tokens`, `completion_tokens`). The load engine reads
these events as its `triton` dialect (harness/load/sse.py). Triton's generate endpoint has
no chat API: a chat workload is refused with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from time import perf_counter_ns
from typing import Any, Literal

import httpx

from harness.errors import ConfigError, ProtocolError
from harness.load.endpoints import StreamEndpoint
from harness.net import http
from harness.protocols.base import GenerationClient, GenRequest
from harness.protocols.openai import Generation, sse_endpoint


def _one(value: Any) -> Any:
    """A [1]-shaped output as a scalar (the extension writes either)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


class TritonGenerateClient(GenerationClient):
    name = "triton-generate"

    def __init__(self, base_url: str, model: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.path = f"/v2/models/{model}/generate_stream"

    def for_api(self, api: Literal["completions", "chat"]) -> TritonGenerateClient:
        if api == "chat":
            why = "Triton's generate endpoint has no chat API: use workload.api: completions"
            raise ConfigError("scenario", [("workload.api", why)])
        return self

    def body(self, req: GenRequest, max_tokens: int | None = None) -> bytes:
        payload: dict[str, Any] = {"max_tokens": max_tokens or req.max_tokens, "ignore_eos": True}
        if req.prompt_ids:
            payload["input_ids"] = list(req.prompt_ids)
        else:
            payload["text_input"] = req.prompt_text
        return json.dumps(payload, separators=(",", ":")).encode()

    def endpoint(self, requests: Sequence[GenRequest]) -> StreamEndpoint:
        bodies = [self.body(r) for r in requests]
        return sse_endpoint(self.base_url, self.path, bodies, requests, dialect="triton")

    def generate(
        self,
        req: GenRequest,
        stream: bool = True,
        max_tokens: int | None = None,
        timeout_s: float = 60.0,
    ) -> Generation:
        """Always streamed: a decoupled model answers `generate_stream` (the unary endpoint
        takes one response only)."""
        url = self.base_url + self.path
        start = perf_counter_ns()
        gen = Generation("", None, None, None)
        parts: list[str] = []
        try:
            with http().stream("POST", url, content=self.body(req, max_tokens),
                               headers={"Content-Type": "application/json"},
                               timeout=timeout_s) as response:  # fmt: skip
                if response.status_code >= 400:
                    response.read()
                    raise ProtocolError(
                        f"{url} answered HTTP {response.status_code}: {response.text[:500]}"
                    )
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    try:
                        obj = json.loads(line[5:].strip())
                    except ValueError as exc:
                        raise ProtocolError(f"bad stream event: {line[:200]}") from exc
                    if "error" in obj:
                        raise ProtocolError(f"error event in stream: {str(obj['error'])[:300]}")
                    text = _one(obj.get("text_output"))
                    if text:
                        if gen.ttft_ms is None:
                            gen.ttft_ms = (perf_counter_ns() - start) / 1e6
                        gen.events += 1
                        parts.append(str(text))
                    if _one(obj.get("finish_reason")):
                        gen.finish_reason = str(_one(obj["finish_reason"]))
                        gen.prompt_tokens = int(_one(obj.get("prompt_tokens")) or 0)
                        gen.completion_tokens = int(_one(obj.get("completion_tokens")) or 0)
                        gen.done = True
        except httpx.HTTPError as exc:
            raise ProtocolError(f"{url}: {exc}") from exc
        gen.text = "".join(parts)
        gen.e2e_ms = (perf_counter_ns() - start) / 1e6
        return gen
