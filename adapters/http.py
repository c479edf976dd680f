"""Any HTTP server already running somewhere, measured through a known protocol.

Recipe
- serves: whatever it serves; `variant` in the scenario names the reference its answers
  are checked against
- starts: never (use `launcher: {kind: external, url: ...}`)
- ready: `GET <health_path>` answers 200
- protocol: `protocol` (plain-json) at `path`
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from harness.adapter import Adapter, AdapterConfig, ProcessSpec, Server
from harness.errors import UnavailableError
from harness.protocols import PROTOCOLS, ProtocolClient
from harness.variants import VARIANT_NAMES, BuiltVariant


class HttpConfig(AdapterConfig):
    kind: Literal["http"]
    protocol: Literal["plain-json"] = "plain-json"
    path: str = "/predict"
    health_path: str = "/health"


class HttpAdapter(Adapter[HttpConfig]):
    kind: ClassVar[str] = "http"
    config_class = HttpConfig
    variants = frozenset(VARIANT_NAMES)
    description = "an already-running HTTP endpoint (external launcher only)"

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        raise UnavailableError(
            "adapter 'http' describes a server that is already running: "
            "use `launcher: {kind: external, url: ...}`"
        )

    def client(self, server: Server) -> ProtocolClient:
        assert server.base_url is not None
        return PROTOCOLS[self.config.protocol](server.base_url, self.config.path)

    def health_route(self) -> str:
        return self.config.health_path
