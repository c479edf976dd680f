"""llama.cpp's `llama-server`: an OpenAI-compatible LLM server in C++, built here from source.

Recipe
- serves: the LLM variants f32, f16, bf16, q8_0 as GGUF files (harness/llm/variants.py)
- builds: `llama-server` once from the `llama-cpp-python` sdist's vendored llama.cpp with
  cmake + ninja (adapters/_llamacpp_build.py; ~8 min on 2 cores), cached per machine
- files: none; the variant's `model.gguf` is loaded where it is
- starts: `llama-server -m model.gguf --host 127.0.0.1 --port P -np <slots>
  -c <slots x ctx_per_slot> -t <threads> --metrics` (continuous batching is its default:
  `slots` requests decode together, more wait in its queue)
- ready: `GET /health` answers 200 once the model is loaded (503 while loading)
- protocol: OpenAI completions / chat completions, streamed; `ignore_eos` honoured
- server view: Prometheus `/metrics` (tokens predicted and prompt tokens processed, with
  their seconds), scraped around each step: server-side decode and prefill time per request
- container: `ghcr.io/ggml-org/llama.cpp:server` (`:server-cuda` with GPUs), the variant
  folder mounted read-only at /model
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from adapters import _llamacpp_build as build
from harness.adapter import AdapterConfig, Availability, ContainerSpec, ProcessSpec, Server
from harness.errors import UnavailableError
from harness.llm.adapter import LlmAdapter, counter_breakdown, prometheus_counters
from harness.llm.variants import gguf_file
from harness.runtime import thread_count
from harness.variants import BuiltVariant

IMAGE = "ghcr.io/ggml-org/llama.cpp:{tag}"


class LlamaCppConfig(AdapterConfig):
    kind: Literal["llamacpp"]
    slots: PositiveInt = Field(4, description="parallel sequences decoded together (-np)")
    ctx_per_slot: PositiveInt = Field(1024, description="KV cache tokens per slot")
    threads: PositiveInt | None = Field(None, description="-t (default: the server's CPUs)")
    batch_size: PositiveInt | None = Field(None, description="-b logical batch (default 2048)")
    gpu_layers: int = Field(0, ge=0, description="-ngl: layers offloaded to a GPU build")
    # Repacking quantized weights for the CPU's extra kernels (AMX on this CPU) dies with
    # SIGILL on this kind of VM: the CPU reports AMX, the hypervisor does not enable it.
    repack: bool = Field(False, description="weight repacking for AMX/extra CPU kernels")
    extra_args: list[str] = Field(
        default_factory=list, description="more llama-server flags, passed as argv (no shell)"
    )


class LlamaCppAdapter(LlmAdapter[LlamaCppConfig]):
    kind: ClassVar[str] = "llamacpp"
    config_class = LlamaCppConfig
    description = "llama.cpp llama-server (GGUF, OpenAI API, continuous batching)"
    fatal_log_patterns = (
        "failed to load model",
        "error loading model",
        "couldn't bind",
        "Address already in use",
        "error: invalid argument",
    )

    @classmethod
    def availability(cls) -> Availability:
        if build.is_built():
            return Availability(True, f"built: {build.server_binary()}")
        missing = build.missing_tools()
        if missing:
            return Availability(False, f"cannot build llama-server: missing {', '.join(missing)}")
        return Availability(True, "built from source on first use (~8 min on 2 cores)")

    def prepare(self, variant: BuiltVariant, workdir: Path) -> None:
        build.ensure_built(log=workdir / "llama-build.log")

    def _args(self, model: str, host: str, port: int) -> list[str]:
        c = self.config
        args = [
            "-m",
            model,
            "--host",
            host,
            "--port",
            str(port),
            "-np",
            str(c.slots),
            "-c",
            str(c.slots * c.ctx_per_slot),
            "-t",
            str(c.threads or thread_count()),
            "--metrics",
            "--no-webui",
            "-ngl",
            str(c.gpu_layers),
        ]
        if c.batch_size:
            args += ["-b", str(c.batch_size)]
        if not c.repack:
            args.append("--no-repack")
        return args + list(c.extra_args)

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        model = gguf_file(variant)
        if model is None:
            raise UnavailableError(f"variant {variant.name} has no GGUF file for llama.cpp")
        return ProcessSpec(
            argv=[str(build.server_binary()), *self._args(str(model), host, ports["http"])]
        )

    def container_spec(
        self, variant: BuiltVariant, workdir: Path, gpus: bool = False
    ) -> ContainerSpec:
        model = gguf_file(variant)
        if model is None:
            raise UnavailableError(f"variant {variant.name} has no GGUF file for llama.cpp")
        return ContainerSpec(
            image=IMAGE.format(tag="server-cuda" if gpus else "server"),
            command=self._args(f"/model/{model.name}", "0.0.0.0", 8080),
            ports={"http": 8080},
            mounts={str(model.parent): "/model"},
            read_only=frozenset({"/model"}),
            gpus=gpus,
        )

    def server_metrics(self, server: Server) -> dict[str, float]:
        return prometheus_counters(f"{server.base_url}/metrics", "llamacpp")

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, Any]:
        return counter_breakdown(
            before,
            after,
            requests,
            ("tokens_predicted_total", "prompt_tokens_total"),
            {
                "server_decode_ms": "tokens_predicted_seconds_total",
                "server_prefill_ms": "prompt_seconds_total",
            },
        )
