"""Text-encoder variants (the `embed` family): one backbone format of the sentence encoder.

- `eager`        the fp32 transformers model (`hf/`)
- `torchscript`  the backbone traced (input ids, attention mask -> last hidden state)
- `onnx`         the backbone exported to ONNX, batch and sequence axes dynamic
- `onnx-int8`    that export quantized by ONNX Runtime, dynamic and per channel (per tensor
                 loses far more on this model: cosine ~0.95 against ~0.99)
- `bf16`         the transformers model cast to bfloat16

Every folder also holds the tokenizer and a `variant.json` that harness/embedding.py runs.
Each build is validated on the held-out sentences against the fp32 reference: cosine of
each embedding (mean and minimum), max abs diff, and nearest-neighbour agreement (does
each sentence's closest other sentence stay the same). An fp32 format must match the
reference (minimum cosine 0.9999); a reduced precision must keep the scenario's
`variants.min_cosine` on average.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import cached_build, file_sha256, recipe_hash, source_of
from harness.fidelity import cosines
from harness.variants import BuiltVariant, Validation, _in_tempdir

EMBED_VARIANT_NAMES = ("eager", "torchscript", "onnx", "onnx-int8", "bf16")
FP32_MIN_COSINE = 0.9999
# a variant's own outputs are computed one text at a time, as the fidelity check and an
# unbatched server send them (bf16 results depend a little on the batch's padding)
BATCH = 1


def _link(source: Path, target: Path) -> None:
    """The model's files into a variant folder: hard links where the cache allows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _with_hf(bundle: Any, out: Path, spec: Any) -> None:
    """The model folder (`hf/`: weights, tokenizer, pooling config) for transformers and vLLM."""
    source = bundle.path / "hf"
    for path in source.rglob("*"):
        if path.is_file():
            _link(path, out / "hf" / path.relative_to(source))


class _Backbone:
    """The transformers BertModel as (ids, mask) -> last hidden state, for export."""

    @staticmethod
    def load(bundle: Any) -> Any:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging

        logging.disable_progress_bar()
        model = AutoModel.from_pretrained(str(bundle.path / "hf"), attn_implementation="eager")
        model.eval()

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
                return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]

        return Wrapped().eval()

    @staticmethod
    def example(bundle: Any, count: int = 4) -> tuple[Any, Any]:
        import torch

        from harness.embedding import load_tokenizer, tokenize

        max_length = bundle.meta["config"]["max_length"]
        tokenizer = load_tokenizer(bundle.path / "tokenizer.json", max_length)
        ids, mask = tokenize(tokenizer, bundle.x_train[:count])
        return torch.from_numpy(ids), torch.from_numpy(mask)


def _build_torchscript(bundle: Any, out: Path, spec: Any) -> None:
    import torch

    module = _Backbone.load(bundle)
    with torch.no_grad():
        traced = torch.jit.trace(module, _Backbone.example(bundle), check_trace=False)
    traced.save(str(out / "model.torchscript.pt"))


def _export_onnx(bundle: Any, path: Path) -> None:
    import torch

    module = _Backbone.load(bundle)
    batch = torch.export.Dim("batch", min=1, max=1024)
    tokens = torch.export.Dim("tokens", min=2, max=512)
    with torch.no_grad():
        torch.onnx.export(
            module,
            _Backbone.example(bundle),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_shapes=({0: batch, 1: tokens}, {0: batch, 1: tokens}),
            external_data=False,
            dynamo=True,
            opset_version=18,
            verbose=False,
        )


def _build_onnx(bundle: Any, out: Path, spec: Any) -> None:
    _export_onnx(bundle, out / "model.onnx")


def _build_onnx_int8(bundle: Any, out: Path, spec: Any) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _export_onnx(bundle, out / "fp32.onnx")
    with _in_tempdir():  # the quantizer writes scratch files into the working directory
        quantize_dynamic(
            str(out / "fp32.onnx"),
            str(out / "model.int8.onnx"),
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    (out / "fp32.onnx").unlink()


# name: (precision, backbone, artifact, build)
RECIPES: dict[str, tuple[str, str, str, Callable[[Any, Path, Any], None]]] = {
    "eager": ("fp32", "eager", "hf/model.safetensors", _with_hf),
    "torchscript": ("fp32", "torchscript", "model.torchscript.pt", _build_torchscript),
    "onnx": ("fp32", "onnx", "model.onnx", _build_onnx),
    "onnx-int8": ("int8", "onnx", "model.int8.onnx", _build_onnx_int8),
    "bf16": ("bf16", "bf16", "hf/model.safetensors", _with_hf),  # cast when loaded
}
assert tuple(RECIPES) == EMBED_VARIANT_NAMES


def embed_outputs(variant_dir: Path, texts: np.ndarray, threads: int = 1) -> np.ndarray:
    """The variant's embeddings of `texts`, in batches as a server would see them."""
    from harness.embedding import load_encoder

    info = json.loads((variant_dir / "variant.json").read_text())
    encoder = load_encoder(variant_dir, info, threads)
    return np.concatenate([encoder(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])


def build_embed_variant(name: str, bundle: Any, spec: Any) -> BuiltVariant:
    """Build (or fetch from cache) one encoder variant and gate it with `spec`."""
    import onnxruntime
    import torch
    import transformers

    from harness import embedding

    if name not in RECIPES:
        raise ValueError(f"{name} is not an encoder variant (one of {EMBED_VARIANT_NAMES})")
    precision, backbone, artifact, build_files = RECIPES[name]
    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                "transformers": transformers.__version__}  # fmt: skip
    key = recipe_hash(
        bundle.key, name, source_of(sys.modules[__name__]), source_of(embedding), versions
    )

    def build(out: Path) -> None:
        build_files(bundle, out, spec)
        _link(bundle.path / "tokenizer.json", out / "tokenizer.json")
        info = {
            "variant": name,
            "format": "text-encoder",
            "backbone": backbone,
            "precision": precision,
            "artifact": artifact,
            "model": bundle.name,
            "model_key": bundle.key,
            "model_config": bundle.meta["config"],
            "max_length": bundle.meta["config"]["max_length"],
            "input_dtype": "text",
            "input_shape": [],
            "dimension": bundle.meta["dimension"],
            "versions": versions,
        }
        (out / "variant.json").write_text(json.dumps(info, indent=2))
        outputs = embed_outputs(out, bundle.x_test)
        np.save(out / "outputs_test.npy", outputs.astype(np.float32))

    path = cached_build(f"variants/{bundle.name}/{name}", key, build)
    outputs = np.load(path / "outputs_test.npy")
    return BuiltVariant(
        name=name,
        path=path,
        precision=precision,
        artifact=artifact,
        sha256=file_sha256(path / artifact),
        validation=validate_embeddings(outputs, bundle.reference_test, precision, spec.min_cosine),
    )


def nearest(embeddings: np.ndarray) -> np.ndarray:
    """Each row's most similar other row (cosine: the rows are normalized)."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return np.asarray(similarity.argmax(axis=1))


def validate_embeddings(
    outputs: np.ndarray, reference: np.ndarray, precision: str, min_cosine: float
) -> Validation:
    cosine = cosines(outputs, reference)
    agreement = float((nearest(outputs) == nearest(reference)).mean())
    mean, least = float(cosine.mean()), float(cosine.min())
    result = Validation(
        accuracy=agreement,
        reference_accuracy=1.0,
        max_abs_diff=float(np.abs(outputs - reference).max()),
        agreement=agreement,
        cosine_mean=mean,
        cosine_min=least,
    )
    if precision == "fp32" and least < FP32_MIN_COSINE:
        result.status = "failed"
        result.reason = (
            f"fp32 build's embeddings differ from the reference: minimum cosine "
            f"{least:.5f} (required {FP32_MIN_COSINE})"
        )
    elif mean < min_cosine:
        result.status = "failed"
        result.reason = (
            f"mean cosine with the fp32 reference {mean:.4f} is below "
            f"variants.min_cosine {min_cosine:g} (minimum {least:.4f})"
        )
    return result
