"""The adapter contract: how one serving framework serves a variant.

An adapter *describes* a server; launchers run it. Each adapter module holds a typed
config (`kind: Literal[...]`, unknown keys rejected) and a short recipe:

- `variants`            which variant names it can serve
- `availability()`      can it run here, and if not, why (missing package, binary, ...)
- `prepare()`           write the files it needs (app config, model repository, archive)
- `process_spec()`      argv + env to run it as a local process (None: nothing to launch)
- `probe()`             is it ready (model loaded, not just the port open)
- `client()`            the protocol client that encodes requests for it

The runner is the only place that joins an adapter with a variant and a launcher.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import httpx
import numpy as np

from harness.config import StrictModel
from harness.environments import Environment
from harness.load.endpoints import Endpoint
from harness.protocols import PlainJsonClient, ProtocolClient
from harness.variants import BuiltVariant


class AdapterConfig(StrictModel):
    kind: str


C = TypeVar("C", bound=AdapterConfig)


@dataclass(frozen=True)
class ProcessSpec:
    """How to run a server as a local process. `{port:<name>}` ports are already filled in."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """How to run the server in a container (the docker launcher's input)."""

    image: str
    command: list[str]
    ports: dict[str, int]  # port name -> port inside the container
    mounts: dict[str, str] = field(default_factory=dict)  # host path -> container path
    read_only: frozenset[str] = frozenset()  # container paths mounted read-only
    env: dict[str, str] = field(default_factory=dict)
    shm_size: str | None = None
    gpus: bool = False


@dataclass
class Server:
    """A server as the runner sees it once launched (or reached, for external targets)."""

    base_url: str | None  # None: nothing listens, the load engine calls the model itself
    ports: dict[str, int] = field(default_factory=dict)
    pid: int | None = None
    log_path: Path | None = None
    startup_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""


class Adapter(ABC, Generic[C]):
    kind: ClassVar[str]
    config_class: ClassVar[type[AdapterConfig]]
    variants: ClassVar[frozenset[str]]
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules needed to serve
    ports: ClassVar[tuple[str, ...]] = ("http",)
    health_path: ClassVar[str] = "/health"
    baseline: ClassVar[bool] = False  # a reference point (the floor), never a "winner"
    # a virtual environment of its own when its pins clash with the harness's (else None)
    environment: ClassVar[Environment | None] = None
    # log lines that mean the server will never become ready: fail fast, show the line
    fatal_log_patterns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: C) -> None:
        self.config = config

    @classmethod
    def availability(cls) -> Availability:
        if cls.environment is not None:  # `requires` are checked inside that environment
            if cls.environment.ready:
                return Availability(True, f"own environment {cls.environment.path}")
            return Availability(
                True, f"own environment, created on first use ({cls.environment.name})"
            )
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(False, f"missing Python package(s): {', '.join(missing)}")
        return Availability(True)

    def supports(self, variant: str) -> bool:
        return variant in self.variants

    def prepare(self, variant: BuiltVariant, workdir: Path) -> None:
        """Write the files the server needs into `workdir` (default: none)."""

    @abstractmethod
    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec | None:
        """How to start the server locally; None when there is no server to start."""

    def cleanup(self, workdir: Path) -> None:
        """Remove scratch files the server left in `workdir` once it is stopped."""

    def container_spec(
        self, variant: BuiltVariant, workdir: Path, gpus: bool = False
    ) -> ContainerSpec | None:
        """How to run it in a container; None where the adapter has no container recipe."""
        return None

    def server_metrics(self, server: Server) -> dict[str, float]:
        """Cumulative server-side counters (read before and after each step); {} if none."""
        return {}

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, float]:
        """Per-step server view from two `server_metrics` readings: any of
        `server_queue_ms`, `server_compute_ms` (per request) and `server_batch_avg`."""
        return {}

    def base_url(self, host: str, ports: dict[str, int]) -> str:
        return f"http://{host}:{ports['http']}"

    def probe(self, server: Server) -> bool:
        """True once the server answers inference (model loaded), not merely listens."""
        try:
            url = f"{server.base_url}{self.health_route()}"
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def health_route(self) -> str:
        """The path `probe` polls (a class constant unless the config chooses it)."""
        return self.health_path

    def client(self, base_url: str) -> ProtocolClient:
        return PlainJsonClient(base_url)

    def endpoint(self, server: Server, variant: BuiltVariant, instances: np.ndarray) -> Endpoint:
        assert server.base_url is not None
        return self.client(server.base_url).endpoint(instances)

    def infer(self, server: Server, variant: BuiltVariant, batch: np.ndarray) -> np.ndarray:
        assert server.base_url is not None
        return self.client(server.base_url).infer(batch)

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump()
