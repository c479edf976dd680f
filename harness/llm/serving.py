"""The LLM engine the Python serving stacks share: transformers `generate`, streamed.

FastAPI, TorchServe, Triton's python backend and KServe all serve tiny-llama through this
one module, so what differs between them is the serving stack, not the model code:

- weights: the variant's Hugging Face folder (`hf/`, written by harness/llm/variants.py)
  loaded by `transformers` at the variant's precision (f32, f16 or bf16); the tokenizer is
  the folder's `tokenizer.json` (the same one vLLM and llama.cpp's GGUF carry)
- decoding: greedy (`do_sample=False`), output length forced by `min_new_tokens` when the
  request says `ignore_eos`, every token handed to a streamer as it is chosen
- batching: none. Sequences are decoded one at a time in arrival order; the others wait
  (`waiting` gauge). transformers has no continuous batching that runs on CPU here, and a
  padded static batch would change what each request computes: recorded as
  `batching: none` in the target's settings rather than faked
- prompt cache: none (every prompt is prefilled in full), recorded as such
- threads: `torch.set_num_threads` from the server's CPU set (harness.runtime)
- counters: Prometheus counters and gauges (`ENGINE_METRICS` names them) that the stacks
  publish on their metrics page: tokens, prefill and decode seconds, queue seconds,
  requests running and waiting

`openai_stream` turns one generation into OpenAI completions / chat-completions SSE
events (with a final `usage` chunk and `data: [DONE]`), which FastAPI, TorchServe and
KServe send as they are.
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.prometheus import MetricsPage, Sample

DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
# the variants a transformers server can load (q8_0 exists only as GGUF); int8 is the f32
# folder whose config asks for dynamic int8 quantization at load (`quantize`)
SERVED_VARIANTS = frozenset(DTYPES) | {"int8"}
QUANTIZATION_KEY = "servingbench_quantization"
DYNAMIC_INT8 = "dynamic-int8"
CHATML_END = "<|im_end|>"

# What the engine publishes, read by each stack's adapter as its `metrics` page.
PREFIX = "servingbench_llm"
SAMPLES = {
    "output_tokens": Sample(f"{PREFIX}_generation_tokens_total"),
    "prompt_tokens": Sample(f"{PREFIX}_prompt_tokens_total"),
    "prefill_s": Sample(f"{PREFIX}_prefill_seconds_total"),
    "decode_s": Sample(f"{PREFIX}_decode_seconds_total"),
    "queue_s": Sample(f"{PREFIX}_queue_seconds_total"),
}
SERIES = {
    "running": Sample(f"{PREFIX}_requests_running"),
    "waiting": Sample(f"{PREFIX}_requests_waiting"),
    "queue_s": Sample(f"{PREFIX}_queue_seconds_total"),
}
TIMES_MS = {
    "server_queue_ms": "queue_s",
    "server_prefill_ms": "prefill_s",
    "server_decode_ms": "decode_s",
}
SETTINGS = {
    "batching": "none (one sequence at a time, in arrival order)",
    "prompt_cache": "none (every prompt prefilled in full)",
    "decoding": "greedy, transformers generate + streamer",
}


def engine_metrics(path: str = "/metrics", port: str = "http") -> MetricsPage:
    """The engine's counters on a stack's page (`port` names the server's port serving it)."""
    return MetricsPage(SAMPLES, path=path, port=port, series=SERIES)


def quantize(model: Any, how: str | None) -> Any:
    """The model as its variant asks to be served: `dynamic-int8` swaps every Linear for
    torch's dynamically quantized one (int8 weights per tensor, activations quantized per
    batch at run time; fbgemm kernels on x86). The variant's build validates the same call."""
    if how is None:
        return model
    if how != DYNAMIC_INT8:
        raise ValueError(f"config.json {QUANTIZATION_KEY}: expected {DYNAMIC_INT8!r}, got {how!r}")
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice, once per load
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class Counters:
    """The engine's counters; prometheus_client's default registry unless a stack brings
    its own (Triton's python backend publishes through `pb_utils.MetricFamily`)."""

    def __init__(self, make: Callable[[str, str, str], Any] | None = None) -> None:
        make = make or _prometheus_metric
        self.output_tokens = make("counter", f"{PREFIX}_generation_tokens", "output tokens")
        self.prompt_tokens = make("counter", f"{PREFIX}_prompt_tokens", "prompt tokens")
        self.prefill_s = make("counter", f"{PREFIX}_prefill_seconds", "prefill seconds")
        self.decode_s = make("counter", f"{PREFIX}_decode_seconds", "decode seconds")
        self.queue_s = make("counter", f"{PREFIX}_queue_seconds", "seconds waiting to start")
        self.running = make("gauge", f"{PREFIX}_requests_running", "requests decoding")
        self.waiting = make("gauge", f"{PREFIX}_requests_waiting", "requests queued")


def _prometheus_metric(kind: str, name: str, doc: str) -> Any:
    import prometheus_client

    if kind == "counter":
        return prometheus_client.Counter(name, doc)
    return prometheus_client.Gauge(name, doc)


@dataclass
class Prompt:
    """A request's prompt as token ids, and how it asked to be answered."""

    ids: list[int]
    max_tokens: int
    ignore_eos: bool
    chat: bool
    model: str
    include_usage: bool = True
    stream: bool = True


class BadRequest(ValueError):
    """A request body the engine cannot serve: the stack answers 400 with this message."""


@dataclass
class Engine:
    """One loaded variant. `generate` yields text pieces, one per output token."""

    variant_dir: Path
    threads: int
    counters: Counters | None = None
    model: Any = None
    tokenizer: Any = None
    eos_id: int | None = None
    context: int = 2048
    _decoder: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="decode")
    )

    @classmethod
    def load(cls, variant_dir: str | Path, threads: int, counters: Counters | None = None
             ) -> Engine:  # fmt: skip
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging

        logging.disable_progress_bar()  # a bar per load in the server's log, not news
        logging.set_verbosity_error()

        variant = Path(variant_dir)
        hf = variant / "hf"
        if not hf.is_dir():
            raise FileNotFoundError(f"{variant}: no Hugging Face folder (hf/) to serve")
        torch.set_num_threads(threads)
        config = json.loads((hf / "config.json").read_text())
        dtype = getattr(torch, config.get("torch_dtype") or "float32")
        model = quantize(AutoModelForCausalLM.from_pretrained(str(hf), dtype=dtype).eval(),
                         config.get(QUANTIZATION_KEY))  # fmt: skip
        tokenizer = Tokenizer.from_file(str(hf / "tokenizer.json"))
        context = int(config.get("max_position_embeddings", 2048))
        engine = cls(variant, threads, counters or Counters(), model, tokenizer,
                     config.get("eos_token_id"), context)  # fmt: skip
        for _ in engine.generate(Prompt(engine.encode("warm up"), 2, True, False, "")):
            pass  # first call allocates and picks kernels: not on a measured request
        return engine

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """ChatML, as tiny-llama's chat template renders it (vLLM and llama.cpp agree)."""
        text = "".join(
            f"<|im_start|>{m.get('role', 'user')}\n{m.get('content', '')}{CHATML_END}\n"
            for m in messages
        )
        return self.encode(text + "<|im_start|>assistant\n")

    def prompt(self, body: dict[str, Any], chat: bool) -> Prompt:
        """The prompt of an OpenAI completions or chat-completions body."""
        try:
            if chat:
                messages = body["messages"]
                if not isinstance(messages, list) or not messages:
                    raise BadRequest("messages: expected a non-empty list")
                ids = self.chat_ids(messages)
            else:
                given = body["prompt"]
                if isinstance(given, str):
                    ids = self.encode(given)
                elif isinstance(given, list) and all(isinstance(t, int) for t in given):
                    ids = list(given)
                else:
                    raise BadRequest("prompt: expected a string or a list of token ids")
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        except KeyError as exc:
            raise BadRequest(f"missing field {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise BadRequest(str(exc)) from exc
        if not ids:
            raise BadRequest("empty prompt")
        if len(ids) + max_tokens > self.context:
            raise BadRequest(f"{len(ids)} prompt + {max_tokens} output tokens exceed the "
                             f"context of {self.context}")  # fmt: skip
        if body.get("temperature") not in (None, 0, 0.0):
            raise BadRequest("only greedy decoding (temperature 0) is served")
        usage = (body.get("stream_options") or {}).get("include_usage", False)
        ignore_eos, stream = bool(body.get("ignore_eos", False)), bool(body.get("stream", False))
        return Prompt(ids, max_tokens, ignore_eos, chat, str(body.get("model", "")),
                      bool(usage), stream)  # fmt: skip

    def submit(self, prompt: Prompt, sink: Callable[[Any], object]) -> None:
        """Queue one generation; `sink` then gets each token's text piece as it is decoded,
        and finally `None` (done) or the exception that ended it. Sequences are decoded
        one at a time on the engine's own thread, in the order they were submitted."""
        counters = self.counters
        assert counters is not None
        counters.waiting.inc()
        queued = time.perf_counter()

        def job() -> None:
            counters.waiting.dec()
            counters.queue_s.inc(time.perf_counter() - queued)
            counters.running.inc()
            try:
                self._decode(prompt, sink)
            except BaseException as exc:  # the stream must end: hand the reason over
                sink(exc)
            else:
                sink(None)
            finally:
                counters.running.dec()

        self._decoder.submit(job)

    def generate(self, prompt: Prompt) -> Iterator[str]:
        """The pieces of one generation, blocking (stacks that call from threads)."""
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.submit(prompt, items.put)
        while (item := items.get()) is not None:
            if isinstance(item, BaseException):
                raise RuntimeError(f"generation failed: {item}") from item
            yield item

    async def pieces(self, prompt: Prompt) -> AsyncIterator[str]:
        """The pieces of one generation on an event loop (FastAPI, KServe): the decode
        thread hands each to the loop as it is made."""
        import asyncio

        loop = asyncio.get_running_loop()
        got: asyncio.Queue[Any] = asyncio.Queue()
        self.submit(prompt, lambda item: loop.call_soon_threadsafe(got.put_nowait, item))
        while (item := await got.get()) is not None:
            if isinstance(item, BaseException):
                raise RuntimeError(f"generation failed: {item}")
            yield item

    async def events(self, prompt: Prompt) -> AsyncIterator[bytes]:
        """One generation's OpenAI SSE events on an event loop."""
        stream = OpenAIEvents(prompt)
        if head := stream.head():
            yield head
        try:
            async for piece in self.pieces(prompt):
                yield stream.token(piece)
        except RuntimeError as exc:
            yield stream.error(str(exc))
            return
        yield stream.tail()

    def _decode(self, prompt: Prompt, sink: Callable[[Any], object]) -> None:
        import torch

        counters = self.counters
        assert counters is not None
        ids = torch.tensor([prompt.ids], dtype=torch.long)
        streamer = _Streamer(self, sink)
        kwargs: dict[str, Any] = {
            "max_new_tokens": prompt.max_tokens,
            "do_sample": False,
            "streamer": streamer,
            "attention_mask": torch.ones_like(ids),
            "pad_token_id": self.eos_id,
        }
        if prompt.ignore_eos:
            kwargs["min_new_tokens"] = prompt.max_tokens
        counters.prompt_tokens.inc(len(prompt.ids))
        streamer.start = time.perf_counter()
        with torch.inference_mode():
            self.model.generate(ids, **kwargs)
        if streamer.first:
            counters.decode_s.inc(time.perf_counter() - streamer.first)


class _Streamer:
    """transformers' streamer interface (put/end): the prompt comes first, then one tensor
    per step holding the token chosen; each token's text piece goes to the sink at once."""

    def __init__(self, engine: Engine, sink: Callable[[Any], object]) -> None:
        self.engine = engine
        self.sink = sink
        self.prompt_seen = False
        self.out: list[int] = []
        self.text = ""
        self.start = 0.0
        self.first = 0.0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        counters = self.engine.counters
        assert counters is not None
        if not self.first:
            self.first = time.perf_counter()
            counters.prefill_s.inc(self.first - self.start)
        for token in value.reshape(-1).tolist():
            self.out.append(int(token))
            counters.output_tokens.inc()
            # decode the whole answer so far: a piece is what this token added (byte-level
            # BPE can split a character over two tokens: the first then adds "")
            now = self.engine.tokenizer.decode(self.out, skip_special_tokens=False)
            piece, self.text = now[len(self.text) :], now
            self.sink(piece)

    def end(self) -> None:
        pass


class OpenAIEvents:
    """The OpenAI SSE events of one generation, made as its tokens come: `head()` (chat's
    role chunk), `token(piece)` per token, then `tail()` (a finishing chunk, usage when
    asked for, `[DONE]`) or `error(message)`."""

    def __init__(self, prompt: Prompt) -> None:
        self.prompt = prompt
        self.count = 0
        self.ident = f"{'chatcmpl' if prompt.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.kind = "chat.completion.chunk" if prompt.chat else "text_completion"

    def _chunk(self, choice: dict[str, Any] | None, usage: dict[str, int] | None = None
               ) -> bytes:  # fmt: skip
        body: dict[str, Any] = {"id": self.ident, "object": self.kind, "created": self.created,
                                "model": self.prompt.model,
                                "choices": [choice] if choice else []}  # fmt: skip
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def _choice(self, text: str, finish: str | None = None) -> dict[str, Any]:
        if self.prompt.chat:
            return {"index": 0, "delta": {"content": text} if text else {},
                    "finish_reason": finish}  # fmt: skip
        return {"index": 0, "text": text, "finish_reason": finish}

    def head(self) -> bytes:
        if not self.prompt.chat:
            return b""
        return self._chunk({"index": 0, "delta": {"role": "assistant"}, "finish_reason": None})

    def token(self, piece: str) -> bytes:
        self.count += 1
        return self._chunk(self._choice(piece))

    def tail(self) -> bytes:
        prompt, count = self.prompt, self.count
        out = self._chunk(self._choice("", "length" if count >= prompt.max_tokens else "stop"))
        if prompt.include_usage:
            usage = {"prompt_tokens": len(prompt.ids), "completion_tokens": count,
                     "total_tokens": len(prompt.ids) + count}  # fmt: skip
            out += self._chunk(None, usage)
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error(message: str) -> bytes:
        return b"data: " + json.dumps({"error": {"message": message}}).encode() + b"\n\n"


def openai_stream(prompt: Prompt, pieces: Iterator[str]) -> Iterator[bytes]:
    """The events of one generation, from a blocking iterator of its pieces."""
    events = OpenAIEvents(prompt)
    if head := events.head():
        yield head
    try:
        for piece in pieces:
            yield events.token(piece)
    except RuntimeError as exc:
        yield events.error(str(exc))
        return
    yield events.tail()


def openai_whole(prompt: Prompt, pieces: Iterator[str]) -> dict[str, Any]:
    """A non-streamed OpenAI answer (fidelity probes ask for one token this way)."""
    parts = list(pieces)
    text = "".join(parts)
    usage = {"prompt_tokens": len(prompt.ids), "completion_tokens": len(parts),
             "total_tokens": len(prompt.ids) + len(parts)}  # fmt: skip
    finish = "length" if len(parts) >= prompt.max_tokens else "stop"
    if prompt.chat:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish,
                                  "message": {"role": "assistant", "content": text}}  # fmt: skip
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish}
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "object": "chat.completion" if prompt.chat else "text_completion",
            "model": prompt.model, "choices": [choice], "usage": usage}  # fmt: skip
