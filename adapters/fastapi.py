"""FastAPI on uvicorn: the plain-JSON protocol over a hand-tuned Python server.

Recipe
- serves: eager, torchscript, onnx, onnx-int8 (through `harness.runtime`); for a sentence
  encoder (minilm) also bf16, text in: the server tokenizes (harness/embedding.py)
- files: none (the app loads the variant folder directly)
- starts: `python -m adapters.fastapi` -> uvicorn (uvloop + httptools, access log off),
  `workers` processes, model loaded before the port opens
- ready: `GET /health` answers 200 once the model is loaded
- protocol: plain-json, `POST /predict`; `GET /metrics`: a sentence encoder's time split
  (tokenize, infer, pool, serialize: the step's `server_*_ms` columns)
- inference never blocks the event loop: it runs on a single-thread executor, optionally
  behind a dynamic batcher (max batch size, max delay) for a fair fight with batching servers
- text generation (tiny-llama f32, f16, bf16, int8): `python -m adapters._fastapi_llm`, the
  OpenAI completions/chat API streamed as SSE from transformers `generate` with a streamer
  (harness/llm/serving.py: one sequence at a time, no prompt cache, both recorded); its
  `/metrics` page carries the engine's token, prefill, decode and queue counters
"""

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt

from harness import embedding
from harness.adapter import (
    Adapter,
    AdapterConfig,
    ContainerSpec,
    ProcessSpec,
    Server,
    token_breakdown,
)
from harness.config import StrictModel
from harness.environments import PYTHON
from harness.llm import serving
from harness.prometheus import MetricsPage
from harness.protocols.base import Client
from harness.protocols.openai import OpenAIClient
from harness.tunables import Choice, FloatRange, IntRange, Tunable, without_batch_of_one
from harness.variants import BuiltVariant


class BatchingConfig(StrictModel):
    max_batch_size: PositiveInt = 16
    max_delay_ms: NonNegativeFloat = 2.0


class FastapiConfig(AdapterConfig):
    kind: Literal["fastapi"]
    workers: PositiveInt = Field(1, description="uvicorn worker processes")
    batching: BatchingConfig | None = None


class FastapiAdapter(Adapter[FastapiConfig]):
    kind: ClassVar[str] = "fastapi"
    config_class = FastapiConfig
    workloads = frozenset({"tensor", "generate", "embed"})
    variants = frozenset({"eager", "torchscript", "onnx", "onnx-int8"}) | serving.SERVED_VARIANTS
    description = "FastAPI + uvicorn, plain JSON, optional dynamic batching; OpenAI SSE for LLMs"
    stack_packages = ("fastapi", "starlette", "uvicorn", "uvloop", "onnxruntime", "torch",
                      "transformers")  # fmt: skip
    requires = ("fastapi", "uvicorn", "uvloop", "httptools")
    tunables = (
        Tunable("workers", IntRange(1, 8), "uvicorn worker processes", limit="server_cpus"),
        Tunable("batching.max_batch_size", Choice((1, 2, 4, 8, 16, 32)),
                "dynamic batcher's largest batch (1: no batcher)"),
        Tunable("batching.max_delay_ms", FloatRange(0.5, 4.0, log=True, grid_points=4),
                "how long the batcher waits to fill a batch"),
    )  # fmt: skip

    @classmethod
    def tuned_config(cls, base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return without_batch_of_one(super().tuned_config(base, params))

    @property
    def generates(self) -> bool:
        return self.workload == "generate"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **(serving.SETTINGS if self.generates else {})}

    def client(self, server: Server) -> Client:
        if self.generates:
            assert server.base_url is not None
            return OpenAIClient(server.base_url, "tiny-llama")
        return super().client(server)

    def metrics_page(self, server: Server) -> MetricsPage | None:
        if self.workload == "embed":  # the pipeline's split: tokenize, infer, pool, serialize
            return embedding.engine_metrics()
        return serving.engine_metrics() if self.generates else None

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, float]:
        if self.workload == "embed":
            return embedding.breakdown(before, after, requests)
        return token_breakdown(before, after, requests, serving.TIMES_MS)

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        env = {"SB_VARIANT_DIR": str(variant.path)}
        if self.generates:  # one process: the engine decodes one sequence at a time
            argv = [PYTHON, "-m", "adapters._fastapi_llm", "--host", host,
                    "--port", str(ports["http"])]  # fmt: skip
            return ProcessSpec(argv=argv, env=env)
        if self.config.batching:
            env["SB_MAX_BATCH"] = str(self.config.batching.max_batch_size)
            env["SB_MAX_DELAY_MS"] = str(self.config.batching.max_delay_ms)
        argv = [
            PYTHON,
            "-m",
            "adapters.fastapi",
            "--host",
            host,
            "--port",
            str(ports["http"]),
            "--workers",
            str(self.config.workers),
        ]
        return ProcessSpec(argv=argv, env=env)

    def container_spec(
        self, variant: BuiltVariant, workdir: Path, gpus: bool = False
    ) -> ContainerSpec:
        env = {"SB_VARIANT_DIR": "/model"}
        if self.config.batching:
            env["SB_MAX_BATCH"] = str(self.config.batching.max_batch_size)
            env["SB_MAX_DELAY_MS"] = str(self.config.batching.max_delay_ms)
        # 0.0.0.0 inside the container; the launcher publishes the port on 127.0.0.1 only
        command = ["python", "-m", "adapters.fastapi", "--host", "0.0.0.0", "--port", "8000",
                   "--workers", str(self.config.workers)]  # fmt: skip
        return ContainerSpec(
            image=f"servingbench/fastapi:{'cuda' if gpus else 'cpu'}",
            command=command,
            ports={"http": 8000},
            mounts={str(variant.path): "/model"},
            read_only=frozenset({"/model"}),
            env=env,
            gpus=gpus,
        )


# ---------------------------------------------------------------- the server itself


def create_app() -> Any:
    """The ASGI app; configured from the environment so uvicorn workers can build it."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    from harness.batching import DynamicBatcher
    from harness.runtime import as_batch, load_predictor, read_variant, warmup_batch

    variant_dir = Path(os.environ["SB_VARIANT_DIR"])
    info = read_variant(variant_dir)
    max_batch = int(os.environ.get("SB_MAX_BATCH", "0"))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        predict = load_predictor(variant_dir)
        predict(warmup_batch(info))  # the first call allocates; not on a request
        if isinstance(predict, embedding.Encoder):  # counted from here: requests only
            predict.counters = state["counters"] = embedding.Counters()
        state.update(predict=predict, executor=executor)
        if max_batch > 0:
            batcher = DynamicBatcher(
                predict, executor, max_batch, float(os.environ.get("SB_MAX_DELAY_MS", "2")) / 1000
            )
            batcher.start()
            state["batcher"] = batcher
        yield
        if "batcher" in state:
            await state["batcher"].stop()
        executor.shutdown(wait=False)

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ready", "variant": info["variant"], "batching": max_batch > 0}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        batcher = state.get("batcher")
        return {"batches": batcher.batches, "items": batcher.items} if batcher else {}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        try:
            values = json.loads(await request.body())["inputs"]
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad request body: {exc}"}, status_code=400)
        try:  # numbers of the variant's input shape, or strings for a text encoder
            inputs = as_batch(values, info)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        if "batcher" in state:
            outputs = await state["batcher"].submit(inputs)
        else:
            loop = __import__("asyncio").get_running_loop()
            outputs = await loop.run_in_executor(state["executor"], state["predict"], inputs)
        started = time.perf_counter()
        body = json.dumps({"outputs": outputs.tolist()}, separators=(",", ":"))
        if "counters" in state:
            state["counters"].seconds["serialize"].inc(time.perf_counter() - started)
        return Response(body, media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        import prometheus_client

        return Response(prometheus_client.generate_latest(), media_type="text/plain")

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="servingbench FastAPI server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    uvicorn.run(
        "adapters.fastapi:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
