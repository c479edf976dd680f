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
- prompt cache: per slot and in host RAM, both on by default in llama-server; off here
  (`"cache_prompt": false` in every request, `--cache-ram 0`) unless the workload sets
  `prompt_cache: true`; its `prompt_tokens_cached` counter is a step column
- server view: Prometheus `/metrics` (tokens predicted and prompt tokens processed, with
  their seconds), scraped around each step: server-side decode and prefill time per request
- sentence embeddings (minilm eager = f32, bf16): a GGUF of the encoder written by
  llama.cpp's own `convert_hf_to_gguf.py` (from the same sdist, cached per variant), served
  with `--embeddings --pooling mean` (normalized answers) on OpenAI `/v1/embeddings`;
  llama.cpp tokenizes. It does not truncate: a text longer than the variant's `max_length`
  would be embedded whole (the corpus stays under it; fidelity would show it otherwise)
- container: `ghcr.io/ggml-org/llama.cpp:server` (`:server-cuda` with GPUs), the variant
  folder mounted read-only at /model
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt

from adapters import _llamacpp_build as build
from harness.adapter import (
    THREADS,
    AdapterConfig,
    Availability,
    ContainerSpec,
    OpenAIAdapter,
    ProcessSpec,
    Server,
    token_breakdown,
)
from harness.cache import cached_build, recipe_hash
from harness.errors import LaunchError, UnavailableError
from harness.llm.gguf_export import PRECISIONS
from harness.llm.variants import gguf_file
from harness.prometheus import MetricsPage, Sample
from harness.protocols.base import Client
from harness.protocols.openai_embeddings import OpenAIEmbeddingsClient
from harness.stack import binary_version
from harness.tunables import IntRange, Tunable
from harness.variants import BuiltVariant

IMAGE = "ghcr.io/ggml-org/llama.cpp:{tag}"
# the sentence encoder's variants, as the GGUF type the converter writes
EMBED_TYPES = {"eager": "f32", "bf16": "bf16"}
EMBED_MODEL = "minilm"


class LlamaCppConfig(AdapterConfig):
    kind: Literal["llamacpp"]
    slots: PositiveInt = Field(4, description="parallel sequences decoded together (-np)")
    ctx_per_slot: PositiveInt = Field(1024, description="KV cache tokens per slot")
    threads: PositiveInt | None = Field(None, description="-t (default: the server's CPU count)")
    batch_size: PositiveInt | None = Field(None, description="-b logical batch (default 2048)")
    gpu_layers: int = Field(0, ge=0, description="-ngl: layers offloaded to a GPU build")
    # Repacking quantized weights for the CPU's extra kernels (AMX on this CPU) dies with
    # SIGILL on this kind of VM: the CPU reports AMX, the hypervisor does not enable it.
    repack: bool = Field(False, description="weight repacking for AMX/extra CPU kernels")
    extra_args: list[str] = Field(
        default_factory=list, description="more llama-server flags, passed as argv (no shell)"
    )


class LlamaCppAdapter(OpenAIAdapter[LlamaCppConfig]):
    kind: ClassVar[str] = "llamacpp"
    config_class = LlamaCppConfig
    workloads = frozenset({"generate", "embed"})
    # GGUF files (int8 is a transformers-only variant); the encoder's f32 and bf16
    variants = frozenset(PRECISIONS) | frozenset(EMBED_TYPES)
    tunables = (
        Tunable("slots", IntRange(1, 32, log=True), "parallel sequences decoded together"),
        Tunable("threads", IntRange(1, 64), "decode threads", limit="server_cpus"),
        Tunable("batch_size", IntRange(64, 2048, log=True), "logical batch (-b)"),
    )
    description = "llama.cpp llama-server (GGUF, OpenAI API, continuous batching)"

    def own_versions(self, server: Server) -> dict[str, str | None]:
        # "version: 0.5.0-dev (build 1, commit 0c1e570)": the binary that served
        argv = [str(build.server_binary()), "--version"]
        return {"llama-server": binary_version(argv, r"version:\s*([^\n]+)")}

    fatal_log_patterns = (
        "failed to load model",
        "error loading model",
        "couldn't bind",
        "Address already in use",
        "error: invalid argument",
    )
    metrics = MetricsPage({
        "output_tokens": Sample("llamacpp:tokens_predicted_total"),
        "prompt_tokens": Sample("llamacpp:prompt_tokens_total"),  # processed, cache hits aside
        "cached_tokens": Sample("llamacpp:prompt_tokens_cached_total"),
        "decode_s": Sample("llamacpp:tokens_predicted_seconds_total"),
        "prefill_s": Sample("llamacpp:prompt_seconds_total"),
    }, series={  # gauges over each step (this build publishes no KV-cache gauge)
        "running": Sample("llamacpp:requests_processing"),
        "waiting": Sample("llamacpp:requests_deferred"),
        "prefix_cache_hits": Sample("llamacpp:prompt_tokens_cached_total"),
    })  # fmt: skip

    @classmethod
    def availability(cls) -> Availability:
        if build.is_built():
            return Availability(True, f"built: {build.server_binary()}")
        missing = build.missing_tools()
        if missing:
            return Availability(False, f"cannot build llama-server: missing {', '.join(missing)}")
        return Availability(True, "built from source on first use (~8 min on 2 cores)")

    def __init__(self, config: LlamaCppConfig) -> None:
        super().__init__(config)
        self._encoder_gguf: Path | None = None

    @property
    def embeds(self) -> bool:
        return self.workload == "embed"

    def supports(self, variant: str) -> bool:
        return variant in (EMBED_TYPES if self.embeds else PRECISIONS)

    def prepare(self, variant: BuiltVariant, workdir: Path) -> None:
        build.ensure_built(log=workdir / "llama-build.log")
        if self.embeds:
            self._encoder_gguf = self._convert(variant, workdir)

    def _convert(self, variant: BuiltVariant, workdir: Path) -> Path:
        """The encoder's GGUF, written once per variant by llama.cpp's own converter."""
        script = build.ensure_converter(workdir / "llama-convert.log")
        outtype = EMBED_TYPES[variant.name]
        key = recipe_hash(variant.sha256, outtype, build.SDIST)

        def convert(out: Path) -> None:
            # the harness's own Python: it has torch, transformers and numpy the script needs
            argv = [sys.executable, str(script), str(variant.path / "hf"), "--outfile",
                    str(out / "model.gguf"), "--outtype", outtype]  # fmt: skip
            env = {
                **os.environ,
                "PYTHONPATH": str(script.parent / "gguf-py"),
                "HF_HUB_OFFLINE": "1",
            }
            try:
                done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                      timeout=600, check=False)  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise LaunchError(f"convert_hf_to_gguf.py could not run: {exc}") from exc
            if done.returncode != 0:
                raise LaunchError("convert_hf_to_gguf.py failed", done.stderr[-3000:])

        return cached_build("variants/minilm-gguf", key, convert) / "model.gguf"

    def client(self, server: Server) -> Client:  # type: ignore[override]
        if not self.embeds:
            return super().client(server)
        assert server.base_url is not None
        return OpenAIEmbeddingsClient(server.base_url, EMBED_MODEL)

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
            "-t",  # the server's CPU set, not servingbench's own (a pinned core: -t 1)
            str(c.threads) if c.threads else THREADS,
            "--metrics",
            "--no-webui",
            "-ngl",
            str(c.gpu_layers),
        ]
        if c.batch_size:
            args += ["-b", str(c.batch_size)]
        if not c.repack:
            args.append("--no-repack")
        if not self.prompt_cache:  # no host-RAM prompt cache either (8 GiB by default)
            args += ["--cache-ram", "0"]
        if self.embeds:  # an encoder sees a whole text at once: one physical batch holds it
            args += ["--embeddings", "--pooling", "mean", "-ub", "512"]
            args += [] if c.batch_size else ["-b", "512"]
        return args + list(c.extra_args)

    def extra_body(self) -> dict[str, Any]:
        # its per-slot prompt cache is on by default: every request says whether to use it
        return {"cache_prompt": self.prompt_cache}

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        model = self._encoder_gguf if self.embeds else gguf_file(variant)
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

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, float]:
        if self.embeds:  # no generation counters to read
            return {}
        times = {"server_decode_ms": "decode_s", "server_prefill_ms": "prefill_s"}
        return token_breakdown(before, after, requests, times)
