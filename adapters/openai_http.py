"""Any OpenAI-compatible LLM server already running somewhere, measured as the others are.

Recipe
- serves: whatever it serves; `variant` names the tiny-llama build whose greedy answers it
  is checked against (a server of another model fails that check: use `model.path` with
  the same model, or accept the fidelity flag)
- starts: never (use `launcher: {kind: external, url: ...}`; only loopback is a load target)
- ready: `GET <health_path>` answers 200
- protocol: OpenAI completions / chat completions, streamed, with `model` set to `model`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from harness.adapter import AdapterConfig, OpenAIAdapter, ProcessSpec
from harness.errors import UnavailableError
from harness.variants import BuiltVariant


class OpenAIHttpConfig(AdapterConfig):
    kind: Literal["openai-http"]
    model: str = Field("tiny-llama", description="the `model` field the server expects")
    health_path: str = "/health"
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="more request fields this server needs"
    )


class OpenAIHttpAdapter(OpenAIAdapter[OpenAIHttpConfig]):
    kind: ClassVar[str] = "openai-http"
    config_class = OpenAIHttpConfig
    description = "an already-running OpenAI-compatible LLM endpoint (external launcher only)"

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
