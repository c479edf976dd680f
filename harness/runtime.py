"""Run a built variant: the one piece of inference code every server and the floor share.

`load_predictor(variant_dir)` reads the variant's `variant.json` and returns a callable
taking a float32 batch (N, ...) and returning float32 outputs (N, classes); a sentence
encoder's variant (`format: text-encoder`, harness/embedding.py) takes N strings instead and
tokenizes them itself, so every stack runs its tokenizer on the server. `as_batch` turns
what a protocol carried into the predictor's input (or says what is wrong with it) and
`warmup_batch` is a first call's input. Servers call the predictor off their event loop; the
in-process floor calls it directly. Thread counts come from the
environment the launcher sets (same for every target), never from a framework default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]


def thread_count() -> int:
    for name in ("SERVINGBENCH_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_variant(variant_dir: Path) -> dict[str, Any]:
    return json.loads((Path(variant_dir) / "variant.json").read_text())


def takes_text(info: dict[str, Any]) -> bool:
    return info.get("input_dtype") == "text"


def as_batch(values: Any, info: dict[str, Any]) -> np.ndarray:
    """The predictor's input from a request's values: float32 (N, *input_shape), or N
    strings for a text variant. ValueError saying what was expected otherwise."""
    if takes_text(info):
        from harness.embedding import as_texts

        return as_texts(values)
    shape = tuple(int(d) for d in info["input_shape"])
    try:
        batch = np.asarray(values, np.float32)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"inputs are not numbers: {exc}") from exc
    if batch.ndim == 0 or batch.shape[1:] != shape:
        raise ValueError(
            f"expected instances of shape {list(shape)}, got a batch of shape {list(batch.shape)}"
        )
    if not batch.flags.writeable:  # e.g. gRPC's raw bytes: torch warns on read-only input
        batch = batch.copy()
    return batch


def warmup_batch(info: dict[str, Any]) -> np.ndarray:
    """One instance to call a fresh predictor with (its first call allocates)."""
    if takes_text(info):
        return np.asarray(["a first call allocates what later calls reuse"], dtype=object)
    return np.zeros((1, *info["input_shape"]), np.float32)


def load_predictor(variant_dir: str | Path, threads: int | None = None) -> Predictor:
    variant_dir = Path(variant_dir)
    info = read_variant(variant_dir)
    threads = threads or thread_count()
    fmt = info["format"]
    if fmt == "text-encoder":
        from harness.embedding import load_encoder

        return load_encoder(variant_dir, info, threads)
    artifact = variant_dir / info["artifact"]
    if fmt == "onnx":
        return _onnx_predictor(artifact, threads)
    if fmt in ("eager", "torchscript"):
        return _torch_predictor(fmt, artifact, info, threads)
    raise ValueError(f"{variant_dir}: unknown variant format {fmt!r}")


def onnx_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session on `threads` intra-op threads (one inter-op), quiet."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _onnx_predictor(path: Path, threads: int) -> Predictor:
    session = onnx_session(path, threads)
    input_name = session.get_inputs()[0].name

    def predict(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(batch, np.float32)})[0]

    return predict


def _torch_predictor(fmt: str, path: Path, info: dict[str, Any], threads: int) -> Predictor:
    import torch

    torch.set_num_threads(threads)
    if fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
    else:
        from harness.models import MODELS

        entry = MODELS[info["model"]]
        module = entry.make_module(entry.config_class.model_validate(info["model_config"]))
        module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    module.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        return out.numpy()

    return predict
