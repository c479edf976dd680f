"""The adapter contract: how one serving framework serves a variant.

An adapter *describes* a server; launchers run it. Each adapter module holds a typed
config (`kind: Literal[...]`, unknown keys rejected) and a short recipe:

- `workloads`, `variants` which model families (tensor inference, text generation) and
                          which of their variants it can serve
- `availability()`      can it run here, and if not, why (missing package, binary, ...)
- `prepare()`           write the files it needs (app config, model repository, archive)
- `process_spec()`      argv + env to run it as a local process (None: nothing to launch)
- `container_spec()`    the same server in a container
- `probe()`             is it ready (model loaded, not just the port open)
- `client(server)`      the protocol client for the started server (all its ports)
- `metrics`, `breakdown()`  what its Prometheus page says about each step, declared as data
- `kserve_predictor()`  how KServe would serve it on Kubernetes (None: no recipe)
- `tunables`, `tuned_config()`, `tuning_problem()`  what `servingbench tune` may change
                          (typed ranges), how a trial's values land in the config, and
                          which combinations are invalid or unsafe on this machine

The runner is the only place that joins an adapter with a variant and a launcher; the
engine never asks which framework an adapter is, only what the adapter says.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import httpx

from harness.config import StrictModel
from harness.environments import Environment
from harness.k8s_spec import K8sSpec, KServePredictor
from harness.net import http
from harness.prometheus import MetricsPage, page_url, scrape
from harness.protocols import PlainJsonClient
from harness.protocols.base import Client
from harness.protocols.openai import OpenAIClient
from harness.tunables import Machine, Tunable, get_path, set_path
from harness.variants import LLM_VARIANT_NAMES, BuiltVariant


class AdapterConfig(StrictModel):
    kind: str


# Placeholders an adapter may write in a ProcessSpec or ContainerSpec (argv, command, env
# values); the launcher fills them in: the server's thread count (from its CPU set, the
# same for every target) and its CPU set ("0,1", or "all" where none is given).
THREADS = "{threads}"
CPUS = "{cpus}"


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
    variant: BuiltVariant | None = None  # what it serves
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
    # the workload families it serves (harness/workloads: "tensor", "generate")
    workloads: ClassVar[frozenset[str]] = frozenset({"tensor"})
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
    # its Prometheus page and the samples read there around each step (None: no page)
    metrics: ClassVar[MetricsPage | None] = None
    # the distributions whose versions name the served stack (read in its environment)
    stack_packages: ClassVar[tuple[str, ...]] = ()
    # what `servingbench tune` may change (harness/tunables.py): () = nothing to tune
    tunables: ClassVar[tuple[Tunable, ...]] = ()
    # why its stack listens beyond loopback on ports other than the served ones, where the
    # stack has no way to bind them to loopback (Ray's control plane); "" = it never does.
    # The conformance suite holds the served ports to loopback regardless.
    listens_beyond_loopback: ClassVar[str] = ""

    def __init__(self, config: C) -> None:
        self.config = config
        self.workload_settings: dict[str, Any] = {}
        # the family this run serves (the runner says so before launching), for an adapter
        # that serves several: which server program to start, which client to hand over
        self.workload: str = "tensor" if "tensor" in self.workloads else sorted(self.workloads)[0]

    def use(self, settings: dict[str, Any]) -> None:
        """What the run's workload asks of every server (e.g. `{"prompt_cache": False}`),
        told before the launch; an adapter applies what its stack can do. Recorded with the
        target's settings."""
        self.workload_settings = dict(settings)

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

    def own_environment(self) -> Environment | None:
        """The environment this target's server runs in, for the workload it serves (an
        adapter whose workloads need different pins overrides this); default: `environment`."""
        return self.environment

    def supports(self, variant: str) -> bool:
        return variant in self.variants

    def stack_versions(self, server: Server) -> dict[str, str]:
        """What served: its packages' versions (from its own environment where it has one)
        and the server's or its binary's own word (`own_versions`), where it gave one."""
        from harness.stack import package_versions

        own = {k: v for k, v in self.own_versions(server).items() if v}
        return {**package_versions(self.stack_packages, self.own_environment()), **own}

    def own_versions(self, server: Server) -> dict[str, str | None]:
        """Versions the running server or its binary reports (e.g. `GET /v2`); none here."""
        return {}

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

    def metrics_page(self, server: Server) -> MetricsPage | None:
        """The Prometheus page of this started server: the declared `metrics` unless the
        config or the served workload chooses another (a user's path, an LLM engine's)."""
        return self.metrics

    def server_metrics(self, server: Server) -> dict[str, float]:
        """Cumulative server-side counters (read before and after each step); {} if none.
        The default scrapes the `metrics_page`."""
        page = self.metrics_page(server)
        url = page_url(server, page) if page is not None else None
        return scrape(url, page.samples) if url and page else {}

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
            return http().get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def health_route(self) -> str:
        """The path `probe` polls (a class constant unless the config chooses it)."""
        return self.health_path

    def client(self, server: Server) -> Client:
        """The protocol client for a started server: its base URL, every named port in
        `server.ports` (a gRPC port, a metrics port) and the variant it serves."""
        assert server.base_url is not None
        return PlainJsonClient(server.base_url)

    def settings(self) -> dict[str, Any]:
        return {**self.config.model_dump(), **self.workload_settings}

    @classmethod
    def tuned_config(cls, base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The config mapping a trial runs with: `base` (the hand-set target's) with each
        tuned value set at its dotted path. Override where one value switches a section
        (FastAPI: a batch size of 1 is no batcher)."""
        config = dict(base)
        for path, value in params.items():
            config = set_path(config, path, value)
        return config

    @classmethod
    def tuning_problem(cls, config: dict[str, Any], machine: Machine) -> str | None:
        """Why a trial's config must not run here: a constraint between settings, or a
        value the machine cannot take (default: each `limit`ed tunable within its bound).
        None: it may run. Judged before anything is launched."""
        for tunable in cls.tunables:
            value = get_path(config, tunable.path)
            bound = machine.bound(tunable.limit)
            if isinstance(value, int | float) and value > bound:
                return f"{tunable.path}={value} is over this machine's {tunable.limit} ({bound:g})"
        return None

    def k8s_settings(self) -> K8sSpec:
        """Its KServe deployment settings (`servingbench k8s manifest`); the defaults unless
        its config has a `k8s:` block."""
        return K8sSpec()

    def kserve_predictor(
        self, variant: str, model_dir: str, http_port: int, grpc_port: int
    ) -> KServePredictor | None:
        """How KServe serves this target: a built-in runtime (TorchServe, Triton, vLLM's
        Hugging Face server) or a custom container. None: no recipe."""
        return None


class OpenAIAdapter(Adapter[C]):
    """A server of the OpenAI completions/chat API: streamed generations of an LLM variant.

    The client carries the model name the server answers to and any extra request fields it
    needs; the generate workload (harness/workloads/generate.py) does the rest."""

    workloads: ClassVar[frozenset[str]] = frozenset({"generate"})
    variants: ClassVar[frozenset[str]] = frozenset(LLM_VARIANT_NAMES)
    served_model_name: ClassVar[str] = "tiny-llama"

    def __init__(self, config: C) -> None:
        super().__init__(config)
        # generation until the runner says otherwise, also for a server that embeds too
        self.workload = "generate"

    def client(self, server: Server) -> OpenAIClient:
        assert server.base_url is not None
        return OpenAIClient(server.base_url, self.model_name(), extra_body=self.extra_body())

    def model_name(self) -> str:
        """What requests put in `"model"` (the name the server answers to)."""
        return self.served_model_name

    def extra_body(self) -> dict[str, Any]:
        """Fields this server needs in every request (beyond the OpenAI ones we send)."""
        return {}

    @property
    def prompt_cache(self) -> bool:
        """Whether the workload lets the server reuse cached prompt tokens (default: no)."""
        return bool(self.workload_settings.get("prompt_cache", False))


def token_breakdown(
    before: dict[str, float],
    after: dict[str, float],
    requests: int,
    times_ms: dict[str, str],
) -> dict[str, float]:
    """An LLM server's step view from two counter readings: the `output_tokens` and
    `prompt_tokens` deltas, the prompt tokens its cache served (`cached_tokens`, out of
    `cache_queries` tokens looked up where the server counts those, else out of cached +
    prompt), and per-request milliseconds of each timing counter (seconds) named in
    `times_ms` (step column -> our key)."""
    if not requests or "output_tokens" not in after:
        return {}

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    view = {"server_output_tokens": delta("output_tokens"),
            "server_prompt_tokens": delta("prompt_tokens")}  # fmt: skip
    if "cached_tokens" in after:
        cached = delta("cached_tokens")
        looked = delta("cache_queries") if "cache_queries" in after else cached + delta(
            "prompt_tokens")  # fmt: skip
        view["server_cached_prompt_tokens"] = cached
        if looked > 0:
            view["server_cache_hit_fraction"] = cached / looked
    return view | {column: 1000 * delta(name) / requests for column, name in times_ms.items()}
