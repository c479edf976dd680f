"""Any OpenAI-compatible LLM server already running somewhere, measured as the others are.

Recipe
- serves: whatever it serves; `variant` names the tiny-llama build whose greedy answers it
  is checked against (a server of another model fails that check: use `model.path` with
  the same model, or accept the fidelity flag)
- starts: never (use `launcher: {kind: external, url: ...}`; only loopback is a load target)
- ready: `GET <health_path>` answers 200
- protocol: OpenAI completions / chat completions, streamed, with `model` set to `model`
- server view: `metrics: {path: /metrics}` scrapes its Prometheus page around each step,
  reading the counters of the servers we know (vLLM, llama.cpp, servingbench's own
  transformers engine; `counters: auto` picks the one the page shows): tokens, prefill and
  decode time, and prompt-cache hits, so a cache serving the prompts of an external
  server is seen (and its steps judged) as for a server started here
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from harness.adapter import AdapterConfig, OpenAIAdapter, ProcessSpec, Server, token_breakdown
from harness.config import StrictModel
from harness.errors import UnavailableError
from harness.net import http
from harness.prometheus import MetricsPage, page_url
from harness.variants import BuiltVariant

# step column -> our key, for whichever of these timing counters the page has
TIMES_MS = {"server_queue_ms": "queue_s", "server_prefill_ms": "prefill_s",
            "server_decode_ms": "decode_s"}  # fmt: skip


def known_pages() -> dict[str, MetricsPage]:
    """The counters of each server we know, as its own adapter declares them."""
    from adapters.llamacpp import LlamaCppAdapter
    from adapters.vllm import VllmAdapter
    from harness.llm.serving import engine_metrics

    pages = {"vllm": VllmAdapter.metrics, "llamacpp": LlamaCppAdapter.metrics,
             "servingbench": engine_metrics()}  # fmt: skip
    return {name: page for name, page in pages.items() if page is not None}


class MetricsSpec(StrictModel):
    path: str = Field("/metrics", pattern=r"^/", description="the Prometheus page's path")
    counters: Literal["auto", "vllm", "llamacpp", "servingbench"] = Field(
        "auto", description="whose counter names the page uses (auto: the one it shows)"
    )


class OpenAIHttpConfig(AdapterConfig):
    kind: Literal["openai-http"]
    model: str = Field("tiny-llama", description="the `model` field the server expects")
    health_path: str = "/health"
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="more request fields this server needs"
    )
    metrics: MetricsSpec | None = Field(
        None, description="its Prometheus page: the server's own counters for each step"
    )


class OpenAIHttpAdapter(OpenAIAdapter[OpenAIHttpConfig]):
    kind: ClassVar[str] = "openai-http"
    config_class = OpenAIHttpConfig
    description = "an already-running OpenAI-compatible LLM endpoint (external launcher only)"

    def __init__(self, config: OpenAIHttpConfig) -> None:
        super().__init__(config)
        self._whose_page: dict[str, str | None] = {}

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        raise UnavailableError(
            "adapter 'openai-http' describes a server that is already running: "
            "use `launcher: {kind: external, url: ...}`"
        )

    def health_route(self) -> str:
        return self.config.health_path

    def extra_body(self) -> dict[str, Any]:
        return dict(self.config.extra_body)

    def model_name(self) -> str:
        return self.config.model

    def metrics_page(self, server: Server) -> MetricsPage | None:
        spec = self.config.metrics
        if spec is None:
            return None
        if spec.counters != "auto":
            name: str | None = spec.counters
        else:  # looked up once per server: the page's names do not change while it runs
            key = server.base_url or ""
            if key not in self._whose_page:
                self._whose_page[key] = self._whose(server, spec.path)
            name = self._whose_page[key]
        if name is None:
            return None
        page = known_pages()[name]
        return MetricsPage(page.samples, path=spec.path, series=page.series)

    def _whose(self, server: Server, path: str) -> str | None:
        """The known server whose output-token counter the page shows (None: none)."""
        url = page_url(server, MetricsPage({}, path=path))
        if url is None:
            return None
        try:
            text = http().get(url, timeout=5.0).text
        except Exception:  # an unreadable page: no server view, said by its absence
            return None
        for name, page in known_pages().items():
            counter = page.samples["output_tokens"].name
            if counter.removesuffix("_total") in text:
                return name
        return None

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, float]:
        times = {column: key for column, key in TIMES_MS.items() if key in after}
        return token_breakdown(before, after, requests, times)
