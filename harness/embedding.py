"""Run a text-encoder variant: text in, a normalized sentence embedding out.

Every stack serves a sentence encoder through this one pipeline, inside its own server
process, so where the tokenizer runs is the same everywhere (on the server):

    Request -> tokenize (tokenizers, the model's tokenizer.json) -> infer (the variant's
    backbone: eager / torchscript / onnx / bf16) -> pool (mean over real tokens) and
    L2-normalize -> Response

`load_encoder(variant_dir)` returns a predictor of the same shape as the tensor family's
(`harness.runtime`): an array of N strings in, float32 (N, dim) out. A variant folder holds
`variant.json` (`format: text-encoder`, `backbone`, `max_length`), `tokenizer.json`, and
the backbone's files (`hf/` for eager and bf16, `model.torchscript.pt`, `model.onnx`).
A server that publishes Prometheus counters gives its encoder `Counters()`, to which each
call adds its time split (tokenize / infer / pool; the server adds the time it spends
writing answers, `serialize`), and its adapter reads them with `engine_metrics` and
`breakdown` as the step's `server_tokenize_ms`, `server_infer_ms`, ... per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.prometheus import MetricsPage, Sample

TIMES = ("tokenize", "infer", "pool", "serialize")
PREFIX = "servingbench_embed"
SAMPLES = {
    "texts": Sample(f"{PREFIX}_texts_total"),
    "tokens": Sample(f"{PREFIX}_tokens_total"),
    **{f"{part}_s": Sample(f"{PREFIX}_{part}_seconds_total") for part in TIMES},
}


def engine_metrics(path: str = "/metrics", port: str = "http") -> MetricsPage:
    """The pipeline's counters on a stack's page."""
    return MetricsPage(SAMPLES, path=path, port=port)


def breakdown(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """A step's server view from two readings: ms per request in each part, tokens per text."""
    texts = after.get("texts", 0.0) - before.get("texts", 0.0)
    if not requests or texts <= 0:
        return {}
    view = {}
    for part in TIMES:  # a part the server does not time (its own serializer) is left out
        spent = after.get(f"{part}_s", 0.0) - before.get(f"{part}_s", 0.0)
        if spent > 0:
            view[f"server_{part}_ms"] = spent * 1000 / requests
    view["server_tokens_mean"] = (after.get("tokens", 0.0) - before.get("tokens", 0.0)) / texts
    return view


class Counters:
    """The pipeline's Prometheus counters in this process: prometheus_client's registry,
    unless a stack brings its own `make(kind, name, doc)` (Triton's custom metrics)."""

    def __init__(self, make: Callable[[str, str, str], Any] | None = None) -> None:
        def counter(name: str, doc: str) -> Any:
            if make is not None:
                return make("counter", f"{PREFIX}_{name}", doc)
            import prometheus_client

            return prometheus_client.Counter(f"{PREFIX}_{name}", doc)

        self.texts = counter("texts", "texts embedded")
        self.tokens = counter("tokens", "tokens embedded, [CLS] and [SEP] included")
        self.seconds = {
            part: counter(f"{part}_seconds", f"seconds spent: {part}") for part in TIMES
        }

    def add(self, texts: int, tokens: int, seconds: dict[str, float]) -> None:
        self.texts.inc(texts)
        self.tokens.inc(tokens)
        for part, value in seconds.items():
            self.seconds[part].inc(value)


def as_texts(values: Any) -> np.ndarray:
    """A flat array of N strings from what a protocol carried (JSON strings, v2 BYTES as
    bytes, a (N, 1) tensor); ValueError naming what was wrong."""
    array = np.asarray(values, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"expected a list of strings, got an array of shape {list(array.shape)}")
    out = np.empty(len(array), dtype=object)
    for i, value in enumerate(array):
        if isinstance(value, bytes | np.bytes_):
            value = bytes(value).decode("utf-8")
        if not isinstance(value, str):
            raise ValueError(f"instance {i} is a {type(value).__name__}, expected a string")
        out[i] = value
    return out


def load_tokenizer(path: Path, max_length: int, pad_id: int = 0) -> Any:
    """The model's fast tokenizer, truncating at `max_length`, padding a batch to its
    longest sentence."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=pad_id)
    return tokenizer


def tokenize(tokenizer: Any, texts: Any) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, attention mask), int64 (N, longest)."""
    encodings = tokenizer.encode_batch([str(t) for t in texts])
    ids = np.asarray([e.ids for e in encodings], np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], np.int64)
    return ids, mask


class Encoder:
    """tokenize -> backbone -> mean pool -> normalize, with the time of each part."""

    def __init__(self, variant_dir: Path, info: dict[str, Any], threads: int) -> None:
        self.tokenizer = load_tokenizer(variant_dir / "tokenizer.json", int(info["max_length"]))
        self.counters: Counters | None = None  # set by a server that publishes them
        self._run = _BACKBONE_LOADERS[info["backbone"]](variant_dir, info, threads)

    def __call__(self, texts: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        ids, mask = tokenize(self.tokenizer, as_texts(texts))
        t1 = time.perf_counter()
        hidden = self._run(ids, mask)
        t2 = time.perf_counter()
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        t3 = time.perf_counter()
        if self.counters is not None:
            seconds = {"tokenize": t1 - t0, "infer": t2 - t1, "pool": t3 - t2}
            self.counters.add(len(ids), int(mask.sum()), seconds)
        return out


def load_encoder(variant_dir: str | Path, info: dict[str, Any], threads: int) -> Encoder:
    return Encoder(Path(variant_dir), info, threads)


# ---------------------------------------------------------------- backbones
# each returns run(ids, mask) -> last hidden state, float32 (N, T, dim)


def _torch_backbone(module: Any) -> Any:
    import torch

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(ids), torch.from_numpy(mask))
        hidden = out if isinstance(out, torch.Tensor) else out[0]
        return hidden.to(torch.float32).numpy()

    return run


def _eager(variant_dir: Path, info: dict[str, Any], threads: int, dtype: str = "float32") -> Any:
    import torch
    from transformers import AutoModel
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar per load on the server's stderr
    torch.set_num_threads(threads)
    # loaded in float32 and cast: the keyword for a dtype differs between transformers 4 and 5
    module = AutoModel.from_pretrained(str(variant_dir / "hf"), attn_implementation="eager")
    module.to(getattr(torch, dtype)).eval()
    return _torch_backbone(module)


def _bf16(variant_dir: Path, info: dict[str, Any], threads: int) -> Any:
    return _eager(variant_dir, info, threads, dtype="bfloat16")


def _torchscript(variant_dir: Path, info: dict[str, Any], threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    module = torch.jit.load(str(variant_dir / info["artifact"]), map_location="cpu")
    module.eval()
    return _torch_backbone(module)


def _onnx(variant_dir: Path, info: dict[str, Any], threads: int) -> Any:
    from harness.runtime import onnx_session

    session = onnx_session(variant_dir / info["artifact"], threads)

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        return np.asarray(session.run(["last_hidden_state"], feeds)[0], np.float32)

    return run


_BACKBONE_LOADERS = {"eager": _eager, "bf16": _bf16, "torchscript": _torchscript, "onnx": _onnx}
