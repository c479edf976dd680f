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
Each call's time split (tokenize / infer / pool) is added to `Encoder.totals`, which a
server may expose as counters.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

BACKBONES = ("eager", "torchscript", "onnx", "bf16")
TIMES = ("tokenize", "infer", "pool")


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
        self.max_length = int(info["max_length"])
        self.tokenizer = load_tokenizer(variant_dir / "tokenizer.json", self.max_length)
        self.backbone = info["backbone"]
        self.totals = dict.fromkeys(TIMES, 0.0)  # seconds, summed over calls
        self.calls = 0
        self.tokens = 0
        self._run = _BACKBONE_LOADERS[self.backbone](variant_dir, info, threads)

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
        self.totals["tokenize"] += t1 - t0
        self.totals["infer"] += t2 - t1
        self.totals["pool"] += t3 - t2
        self.calls += 1
        self.tokens += int(mask.sum())
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
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        str(variant_dir / info["artifact"]), opts, providers=["CPUExecutionProvider"]
    )

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        return np.asarray(session.run(["last_hidden_state"], feeds)[0], np.float32)

    return run


_BACKBONE_LOADERS = {"eager": _eager, "bf16": _bf16, "torchscript": _torchscript, "onnx": _onnx}
