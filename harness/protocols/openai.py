"""OpenAI-compatible generation: `/v1/completions` and `/v1/chat/completions`, streamed.

Every request forces its output length (`max_tokens` + `ignore_eos`, greedy) and asks for
usage in the stream (`stream_options.include_usage`), so every stack does the same work and
reports how many tokens it did. Bodies are built once; the load engine streams them
(`harness/load/sse.py`); `generate` is the slow path for fidelity checks, through httpx.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Literal

import httpx

from harness.errors import ProtocolError
from harness.load.endpoints import StreamEndpoint
from harness.load.http import build_request
from harness.load.sessions import ChatBuilder
from harness.load.sse import chunk_text
from harness.net import http
from harness.protocols.base import GenerationClient, GenRequest


def sse_endpoint(
    base_url: str,
    path: str,
    bodies: Sequence[bytes],
    requests: Sequence[GenRequest],
    dialect: str = "openai",
) -> StreamEndpoint:
    """Pre-built streaming POSTs for the load engine, one per request body, in any SSE
    dialect (OpenAI's, Triton's generate_stream)."""
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    built = tuple(
        build_request(host, port, "POST", path, body, headers={"Accept": "text/event-stream"})
        for body in bodies
    )
    return StreamEndpoint(host, port, built, tuple(r.max_tokens for r in requests), dialect=dialect)


PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass
class Generation:
    """What one request returned, as the fidelity check sees it."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    ttft_ms: float | None = None
    e2e_ms: float = 0.0
    events: int = 0
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class OpenAIClient(GenerationClient):
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api: Literal["completions", "chat"] = "completions",
        extra_body: dict[str, Any] | None = None,
        paths: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        # a stack may serve the API elsewhere (KServe under /openai, TorchServe's handler)
        self.paths = paths or PATHS
        self.path = self.paths[api]
        self.extra_body = extra_body or {}

    def for_api(self, api: Literal["completions", "chat"]) -> OpenAIClient:
        return OpenAIClient(self.base_url, self.model, api, self.extra_body, self.paths)

    def body(self, req: GenRequest, stream: bool = True, max_tokens: int | None = None) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens or req.max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,  # a random model stops at once otherwise: equal work for all
            "stream": stream,
            **self.extra_body,
        }
        if stream:
            payload["stream_options"] = {"include_usage": True}
        if self.api == "chat":
            payload["messages"] = [{"role": "user", "content": req.prompt_text}]
        else:
            payload["prompt"] = list(req.prompt_ids) if req.prompt_ids else req.prompt_text
        return json.dumps(payload, separators=(",", ":")).encode()

    def endpoint(self, requests: Sequence[GenRequest]) -> StreamEndpoint:
        return sse_endpoint(self.base_url, self.path, [self.body(r) for r in requests], requests)

    def chat_builder(self, system: str = "") -> ChatBuilder:
        """What the load engine needs to build each turn of a conversation as it is sent."""
        url = httpx.URL(self.base_url)
        return ChatBuilder(url.host, url.port or 80, self.paths["chat"], self.model,
                           dict(self.extra_body), system)  # fmt: skip

    def generate(
        self,
        req: GenRequest,
        stream: bool = True,
        max_tokens: int | None = None,
        timeout_s: float = 60.0,
    ) -> Generation:
        url = self.base_url + self.path
        body = self.body(req, stream, max_tokens)
        headers = {"Content-Type": "application/json"}
        start = perf_counter_ns()
        try:
            if not stream:
                response = http().post(url, content=body, headers=headers, timeout=timeout_s)
                _check(url, response.status_code, response.text)
                return self._whole(response.json(), start)
            with http().stream(
                "POST", url, content=body, headers=headers, timeout=timeout_s
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _check(url, response.status_code, response.text)
                return self._streamed(response.iter_lines(), start)
        except httpx.HTTPError as exc:
            raise ProtocolError(f"{url}: {exc}") from exc

    def _whole(self, data: dict[str, Any], start: int) -> Generation:
        try:
            choice = data["choices"][0]
            text = choice.get("text") if self.api == "completions" else choice["message"]["content"]
            usage = data.get("usage") or {}
        except (KeyError, IndexError, TypeError) as exc:
            raise ProtocolError(f"not an OpenAI completion ({exc}): {str(data)[:300]}") from exc
        return Generation(
            text=text or "",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            e2e_ms=(perf_counter_ns() - start) / 1e6,
            done=True,
        )

    def _streamed(self, lines: Any, start: int) -> Generation:
        gen = Generation("", None, None, None)
        parts: list[str] = []
        for line in lines:
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                gen.done = True
                continue
            try:
                obj = json.loads(payload)
            except ValueError as exc:
                raise ProtocolError(f"bad stream event: {payload[:200]}") from exc
            if "error" in obj:
                raise ProtocolError(f"error event in stream: {str(obj['error'])[:300]}")
            if obj.get("usage"):
                gen.prompt_tokens = obj["usage"].get("prompt_tokens")
                gen.completion_tokens = obj["usage"].get("completion_tokens")
            for choice in obj.get("choices") or ():
                text = chunk_text(choice)
                if text:
                    if gen.ttft_ms is None:
                        gen.ttft_ms = (perf_counter_ns() - start) / 1e6
                    gen.events += 1
                    parts.append(text)
                if choice.get("finish_reason"):
                    gen.finish_reason = choice["finish_reason"]
        gen.text = "".join(parts)
        gen.e2e_ms = (perf_counter_ns() - start) / 1e6
        return gen


def _check(url: str, status: int, text: str) -> None:
    if status >= 400:
        raise ProtocolError(f"{url} answered HTTP {status}: {text[:500]}")
