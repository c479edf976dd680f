"""TorchServe: the .mar archive, a batching handler, the Java frontend.

Recipe
- serves: eager, torchscript, onnx, onnx-int8 (the handler runs `harness.runtime`); a
  sentence encoder (minilm, also bf16) takes plain-JSON strings, the handler's tokenizer
  and pooling as its pre- and postprocess (harness/embedding.py)
- files (in the target's workdir): `handler.py`, `model-store/model.mar` built by
  `torch-model-archiver` (artifact + variant.json), `config.properties`, `log4j2.xml`
  (WARN: TorchServe's default DEBUG logging costs 1-2 KB per request; the workers' own
  startup lines and errors are kept), a private temp folder (short: it holds unix sockets)
- starts: `torchserve --foreground` with every port explicit (inference, management,
  metrics, two gRPC ports, `initial_worker_port`), token auth off, a private TMPDIR and
  java.io.tmpdir, so instances never share sockets, PID files or unpacked models
- ready: every worker READY in the management API (`/ping` says Healthy before that)
- protocol: plain-json at `POST /predictions/model`; batches of requests are answered one
  entry per request
- server view: Prometheus counters `ts_queue_latency_microseconds` and
  `ts_inference_latency_microseconds`, scraped around each step
- text generation (tiny-llama f32, f16, bf16, int8): a streaming handler (`LLM_HANDLER`) runs the
  transformers engine of harness/llm/serving.py and sends each token as an intermediate
  response (`send_intermediate_predict_response`: one HTTP chunk each), the OpenAI SSE events
  as its body, at `POST /predictions/model` (completions, or chat when the body has
  `messages`); batch size 1 (one sequence per handler call); the engine's counters on a
  port of their own served by the first worker (`llm_metrics`)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, NonNegativeInt, PositiveInt

from harness import embedding
from harness.adapter import (
    Adapter,
    AdapterConfig,
    Availability,
    ContainerSpec,
    ProcessSpec,
    Server,
    token_breakdown,
)
from harness.errors import LaunchError
from harness.k8s_spec import PROTOCOL_V1, KServePredictor
from harness.launchers.base import TEMP_PREFIX, owned
from harness.llm import serving
from harness.net import http
from harness.prometheus import MetricsPage, Sample, page_url, scrape
from harness.protocols import PlainJsonClient
from harness.protocols.base import Client
from harness.protocols.openai import OpenAIClient
from harness.stack import binary_version
from harness.tunables import IntRange, Tunable
from harness.variants import BuiltVariant

MODEL = "model"
IMAGE = "pytorch/torchserve:0.12.0-{flavour}"


class TorchserveConfig(AdapterConfig):
    kind: Literal["torchserve"]
    workers: PositiveInt = Field(1, description="backend worker processes for the model")
    batch_size: PositiveInt = Field(1, description="max requests per handler call")
    max_batch_delay_ms: NonNegativeInt = Field(2, description="wait to fill a batch")
    response_timeout_s: PositiveInt = 60
    jvm_heap_mb: PositiveInt = 512
    netty_threads: PositiveInt = Field(2, description="frontend I/O threads (default: 1/CPU)")


class TorchserveAdapter(Adapter[TorchserveConfig]):
    kind: ClassVar[str] = "torchserve"
    config_class = TorchserveConfig
    tunables = (
        Tunable("workers", IntRange(1, 8), "backend worker processes", limit="server_cpus"),
        Tunable("batch_size", IntRange(1, 32, log=True), "max requests per handler call"),
        Tunable("max_batch_delay_ms", IntRange(0, 8), "wait to fill a batch"),
    )
    workloads = frozenset({"tensor", "generate", "embed"})
    variants = frozenset({"eager", "torchscript", "onnx", "onnx-int8"}) | serving.SERVED_VARIANTS
    description = "TorchServe 0.12 (Java frontend, Python workers), optional batching"
    stack_packages = ("torchserve", "torch-model-archiver", "torch", "onnxruntime", "transformers")

    @property
    def generates(self) -> bool:
        return self.workload == "generate"

    def settings(self) -> dict[str, Any]:
        settings = super().settings()
        if self.generates:  # the streaming handler takes one sequence per call
            settings |= {"batch_size": 1, "max_batch_delay_ms": 0, **serving.SETTINGS}
        return settings

    def metrics_page(self, server: Server) -> MetricsPage | None:
        return serving.engine_metrics(port="llm_metrics") if self.generates else self.metrics

    def server_metrics(self, server: Server) -> dict[str, float]:
        """TorchServe's own page, and for a sentence encoder the pipeline's counters, which
        the first worker serves on a port of their own (`llm_metrics`)."""
        found = super().server_metrics(server)
        if self.workload == "embed":
            page = embedding.engine_metrics(port="llm_metrics")
            url = page_url(server, page)
            found |= scrape(url, page.samples) if url else {}
        return found

    def own_versions(self, server: Server) -> dict[str, str | None]:
        return {"java": binary_version(["java", "-version"])}  # its frontend's JVM

    requires = ("ts", "model_archiver", "yaml")
    ports = ("http", "management", "metrics", "grpc", "grpc_management", "worker", "llm_metrics")
    # TorchServe keeps retrying dead workers and its launcher exits 0 on a bind failure:
    # these lines in its log mean it will never become ready.
    fatal_log_patterns = (
        "Failed to bind",
        "Address already in use",
        "ModuleNotFoundError",
        "Load model failed",
        "Backend worker process died",
    )
    metrics = MetricsPage({
        "queue_us": Sample("ts_queue_latency_microseconds"),
        "inference_us": Sample("ts_inference_latency_microseconds"),
        "requests": Sample("ts_inference_requests_total"),
    }, port="metrics")  # fmt: skip

    @classmethod
    def availability(cls) -> Availability:
        found = super().availability()
        if found.available and shutil.which("java") is None:
            return Availability(False, "Java 17 not found on PATH (TorchServe's frontend)")
        return found

    def prepare(self, variant: BuiltVariant, workdir: Path) -> None:
        store = workdir / "model-store"
        store.mkdir(parents=True, exist_ok=True)
        handler = workdir / "handler.py"
        handler.write_text(LLM_HANDLER if self.generates else HANDLER)
        # the LLM and the sentence encoder load the variant folder (SB_VARIANT_DIR, with its
        # tokenizer and model folder), not archived weights
        weights = (
            [] if self.generates or self.workload == "embed"
            else ["--serialized-file", str(variant.path / variant.artifact)]
        )  # fmt: skip
        archive = subprocess.run(
            [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", MODEL,
             "--version", "1.0", *weights,
             "--handler", str(handler), "--extra-files", str(variant.path / "variant.json"),
             "--export-path", str(store), "--force"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if archive.returncode != 0:
            raise LaunchError("torch-model-archiver failed", archive.stderr[-3000:])
        (workdir / "log4j2.xml").write_text(LOG4J)

    def __init__(self, config: TorchserveConfig) -> None:
        super().__init__(config)
        self._tmp: dict[Path, Path] = {}

    def _private_tmp(self, workdir: Path) -> Path:
        # Worker sockets live here and a unix socket path is limited to 107 bytes, so this
        # is a short folder of its own under /tmp, not a subfolder of the run folder.
        if workdir not in self._tmp:
            self._tmp[workdir] = Path(tempfile.mkdtemp(prefix=owned(TEMP_PREFIX)))
        return self._tmp[workdir]

    def cleanup(self, workdir: Path) -> None:
        # worker sockets, the PID file and the unpacked model all live in the private tmp
        tmp = self._tmp.pop(workdir, None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def _properties(self, workdir: Path, host: str, ports: dict[str, int], tmp: Path) -> str:
        c = self.config
        batch, delay = (1, 0) if self.generates else (c.batch_size, c.max_batch_delay_ms)
        models = {MODEL: {"1.0": {
            "defaultVersion": True, "marName": f"{MODEL}.mar", "minWorkers": c.workers,
            "maxWorkers": c.workers, "batchSize": batch,
            "maxBatchDelay": delay, "responseTimeout": c.response_timeout_s,
        }}}  # fmt: skip
        lines = {
            "inference_address": f"http://{host}:{ports['http']}",
            "management_address": f"http://{host}:{ports['management']}",
            "metrics_address": f"http://{host}:{ports['metrics']}",
            "grpc_inference_address": host,
            "grpc_management_address": host,
            "grpc_inference_port": ports["grpc"],
            "grpc_management_port": ports["grpc_management"],
            "initial_worker_port": ports["worker"],
            "number_of_netty_threads": c.netty_threads,
            "netty_client_threads": c.netty_threads,
            "default_workers_per_model": c.workers,
            "disable_token_authorization": "true",
            "enable_envvars_config": "false",
            "install_py_dep_per_model": "false",
            "metrics_mode": "prometheus",
            "model_store": workdir / "model-store",
            "load_models": f"{MODEL}.mar",
            "models": json.dumps(models),
            "vmargs": f"-Xmx{c.jvm_heap_mb}m -Djava.io.tmpdir={tmp} "
            f"-Dlog4j.configurationFile=file://{workdir / 'log4j2.xml'}",
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        config = workdir / "config.properties"
        private = self._private_tmp(workdir)
        config.write_text(self._properties(workdir, host, ports, private))
        tmp = str(private)
        argv = [str(Path(sys.executable).with_name("torchserve")), "--start", "--foreground",
                "--ncs", "--disable-token-auth", "--ts-config", str(config),
                "--model-store", str(workdir / "model-store")]  # fmt: skip
        env = {"TMPDIR": tmp, "TEMP": tmp, "LOG_LOCATION": str(workdir / "logs"),
               "METRICS_LOCATION": str(workdir / "logs"), "PYTHONPATH": _pythonpath()}  # fmt: skip
        # the workers inherit these; the first one serves the engine's (or the sentence
        # encoder's) counters on a port of their own
        if self.generates or self.workload == "embed":
            env |= {"SB_VARIANT_DIR": str(variant.path), "SB_METRICS_HOST": host,
                    "SB_METRICS_PORT": str(ports["llm_metrics"])}  # fmt: skip
        return ProcessSpec(argv=argv, env=env, cwd=workdir)

    def container_spec(
        self, variant: BuiltVariant, workdir: Path, gpus: bool = False
    ) -> ContainerSpec:
        ports = {"http": 8080, "management": 8081, "metrics": 8082, "grpc": 7070,
                 "grpc_management": 7071, "worker": 9000}  # fmt: skip
        # inside the container: its own /tmp, nothing to create or clean on the host
        config = self._properties(
            Path("/home/model-server/work"), "0.0.0.0", ports, Path("/tmp/servingbench")
        )
        (workdir / "config.container.properties").write_text(config)
        return ContainerSpec(
            image=IMAGE.format(flavour="gpu" if gpus else "cpu"),
            command=["torchserve", "--start", "--foreground", "--ncs", "--disable-token-auth",
                     "--ts-config", "/home/model-server/work/config.container.properties"],
            ports=ports, mounts={str(workdir): "/home/model-server/work"}, shm_size="1g",
            gpus=gpus,
        )  # fmt: skip

    def probe(self, server: Server) -> bool:
        management = f"http://{httpx.URL(server.base_url or '').host}:{server.ports['management']}"
        try:
            answer = http().get(f"{management}/models/{MODEL}", timeout=2.0)
        except httpx.HTTPError:
            return False
        if answer.status_code != 200:
            return False
        workers = answer.json()[0].get("workers", [])
        return len(workers) == self.config.workers and all(
            w.get("status") == "READY" for w in workers
        )

    def client(self, server: Server) -> Client:
        assert server.base_url is not None
        if self.generates:  # the OpenAI bodies and events, at TorchServe's prediction path
            path = f"/predictions/{MODEL}"
            return OpenAIClient(server.base_url, "tiny-llama", paths={"completions": path,
                                                                      "chat": path})  # fmt: skip
        return PlainJsonClient(server.base_url, path=f"/predictions/{MODEL}")

    def kserve_predictor(
        self, variant: str, model_dir: str, http_port: int, grpc_port: int
    ) -> KServePredictor:
        """KServe's pytorch runtime (TorchServe): `config/config.properties` and
        `model-store/model.mar` at `storageUri`, answering KServe v1."""
        return KServePredictor("pytorch", PROTOCOL_V1)

    def breakdown(
        self, before: dict[str, float], after: dict[str, float], requests: int
    ) -> dict[str, float]:
        if "output_tokens" in after:  # the LLM engine's counters
            # requests wait in the Java frontend's queue, which the engine cannot see: no
            # queue column rather than a wrong one
            times = {k: v for k, v in serving.TIMES_MS.items() if k != "server_queue_ms"}
            return token_breakdown(before, after, requests, times)
        served = after.get("requests", 0) - before.get("requests", 0)
        if not before or served <= 0:  # no page before the step: no view (never a guess)
            return {}

        def per_request_ms(key: str) -> float:
            return (after.get(key, 0.0) - before.get(key, 0.0)) / served / 1000

        queue_ms, inference_ms = per_request_ms("queue_us"), per_request_ms("inference_us")
        # inference latency counts from the frontend's receipt: compute = that minus queueing
        split = embedding.breakdown(before, after, requests) if self.workload == "embed" else {}
        return {"server_queue_ms": queue_ms, "server_compute_ms": inference_ms - queue_ms,
                **split}  # fmt: skip


def _pythonpath() -> str:
    # the handler imports harness.runtime: make the project importable in the workers
    return str(Path(__file__).resolve().parent.parent)


HANDLER = '''\
"""servingbench's TorchServe handler: plain-JSON in, one answer per request of a batch.

Numbers for a tensor model (its archived weights), strings for a sentence encoder (the
variant folder in SB_VARIANT_DIR: preprocess is its tokenizer, postprocess its pooling)."""
import json
import os

import numpy as np

from harness.runtime import as_batch, load_predictor, read_variant

_predict = None
_info = None


def _publish(encoder):
    """The encoder's time split on a port of its own, served by the first worker (the
    others count unseen: the split per request is the same)."""
    import prometheus_client

    from harness.embedding import Counters

    encoder.counters = Counters()
    try:
        prometheus_client.start_http_server(int(os.environ["SB_METRICS_PORT"]),
                                            addr=os.environ["SB_METRICS_HOST"])
    except OSError:
        pass


def handle(data, context):
    global _predict, _info
    if _predict is None:
        folder = os.environ.get("SB_VARIANT_DIR") or context.system_properties["model_dir"]
        _info = read_variant(folder)
        _predict = load_predictor(folder)
        if _info.get("input_dtype") == "text" and os.environ.get("SB_METRICS_PORT"):
            _publish(_predict)
    if data is None:
        return None
    batches = []
    for request in data:
        body = request.get("body") if request.get("body") is not None else request.get("data")
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        batches.append(as_batch(body["inputs"], _info))
    outputs = _predict(np.concatenate(batches))
    answers, start = [], 0
    for x in batches:
        answers.append({"outputs": outputs[start : start + len(x)].tolist(),
                        "batch_size": len(data)})
        start += len(x)
    return answers
'''

LLM_HANDLER = '''\
"""servingbench's TorchServe streaming handler: OpenAI bodies in, one chunk per token out."""
import json
import os

from ts.handler_utils.utils import send_intermediate_predict_response

from harness.llm.serving import BadRequest, Engine, openai_stream, openai_whole
from harness.runtime import thread_count

_engine = None


def _load():
    global _engine
    _engine = Engine.load(os.environ["SB_VARIANT_DIR"], thread_count())
    try:  # the first worker serves the engine's counters; the others count unseen
        import prometheus_client

        prometheus_client.start_http_server(int(os.environ["SB_METRICS_PORT"]),
                                            addr=os.environ["SB_METRICS_HOST"])
    except OSError:
        pass


def handle(data, context):
    if _engine is None:
        _load()
    if data is None:
        return None
    request = data[0]  # batch size 1: one sequence per call
    body = request.get("body") if request.get("body") is not None else request.get("data")
    try:
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        prompt = _engine.prompt(body, chat="messages" in body)
    except (ValueError, TypeError, BadRequest) as exc:
        context.set_response_status(400, "bad request")
        return [json.dumps({"error": {"message": str(exc)}})]
    if not prompt.stream:
        return [json.dumps(openai_whole(prompt, _engine.generate(prompt)))]
    last = None
    for event in openai_stream(prompt, _engine.generate(prompt)):
        if last is not None:
            send_intermediate_predict_response([last], context.request_ids, "streamed", 200,
                                               context)
        last = event
    return [last]  # the final chunk closes the response
'''

LOG4J = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="MODEL_LOG" level="info"/>
    <Logger name="TS_METRICS" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Root level="warn"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""
