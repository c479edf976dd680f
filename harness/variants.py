"""Variants: builds of the reference model in one format/precision, each validated.

A build is cached by recipe hash (model key, variant, options, this file's source, library
versions). Every build records its validation on the held-out split: accuracy, max abs diff
vs the fp32 reference and top-1 agreement. The gate is applied with the scenario's
tolerance: a reduced-precision build that loses more accuracy than allowed (or an fp32
export that drifts from the reference) is marked failed, and its targets do not run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import cached_build, file_sha256, recipe_hash, source_of

VARIANT_NAMES = ("eager", "torchscript", "onnx", "onnx-int8")
# LLM precisions (harness/llm/variants.py): int8 is torch dynamic quantization of the
# f32 weights, for the transformers stacks; q8_0 is GGUF, for llama.cpp
LLM_VARIANT_NAMES = ("f32", "f16", "bf16", "q8_0", "int8")
FP32_MAX_ABS_DIFF = 1e-3  # an fp32 export that drifts more than this is broken, not "fast"


@dataclass
class Validation:
    accuracy: float
    reference_accuracy: float
    max_abs_diff: float
    agreement: float
    status: str = "ok"  # ok | failed
    reason: str = ""
    # sentence encoders (harness/embedding_variants.py): cosine with the fp32 reference
    cosine_mean: float | None = None
    cosine_min: float | None = None


@dataclass
class BuiltVariant:
    name: str
    path: Path
    precision: str
    artifact: str
    sha256: str
    validation: Validation

    @property
    def ok(self) -> bool:
        return self.validation.status == "ok"

    def outputs_test(self) -> np.ndarray:
        """This variant's own outputs on the test split (what a server must reproduce)."""
        return np.load(self.path / "outputs_test.npy")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


@dataclass(frozen=True)
class _Recipe:
    precision: str
    artifact: str
    fmt: str
    build: Callable[[Any, Path, Any], None]
    requires: tuple[str, ...] = ("torch",)


def _export_eager(bundle: Any, out: Path, spec: Any) -> None:
    import shutil

    shutil.copy(bundle.path / "weights.pt", out / "model.pt")


def _export_torchscript(bundle: Any, out: Path, spec: Any) -> None:
    import torch

    example = torch.from_numpy(bundle.x_test[:4])
    with torch.no_grad():
        traced = torch.jit.trace(bundle.module, example)
    traced.save(str(out / "model.torchscript.pt"))


def _export_onnx(bundle: Any, out: Path, spec: Any, name: str = "model.onnx") -> None:
    import torch

    example = torch.from_numpy(bundle.x_test[:4])
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        bundle.module,
        (example,),
        str(out / name),
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=({0: batch},),
        external_data=False,
        dynamo=True,
        opset_version=18,
        verbose=False,
    )


@contextlib.contextmanager
def _in_tempdir() -> Iterator[None]:
    # ORT's quantizer writes scratch files into the working directory.
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(cwd)


def _export_onnx_int8(bundle: Any, out: Path, spec: Any) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    calibration = calibration_inputs(bundle, spec)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {"input": batch}

    _export_onnx(bundle, out, spec, name="fp32.onnx")
    with _in_tempdir():
        quantize_static(
            str(out / "fp32.onnx"),
            str(out / "model.int8.onnx"),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    (out / "fp32.onnx").unlink()


def calibration_inputs(bundle: Any, spec: Any) -> np.ndarray:
    """Calibration draws from the training split only: the test split stays unseen."""
    override = getattr(spec, "calibration_override", None)
    if override is not None:
        return np.asarray(override, np.float32)
    rng = np.random.default_rng(0)
    count = min(spec.calibration_samples, len(bundle.x_train))
    return bundle.x_train[rng.choice(len(bundle.x_train), count, replace=False)]


RECIPES: dict[str, _Recipe] = {
    "eager": _Recipe("fp32", "model.pt", "eager", _export_eager),
    "torchscript": _Recipe("fp32", "model.torchscript.pt", "torchscript", _export_torchscript),
    "onnx": _Recipe(
        "fp32", "model.onnx", "onnx", _export_onnx, ("torch", "onnx", "onnxscript", "onnxruntime")
    ),
    "onnx-int8": _Recipe(
        "int8",
        "model.int8.onnx",
        "onnx",
        _export_onnx_int8,
        ("torch", "onnx", "onnxscript", "onnxruntime"),
    ),
}
assert tuple(RECIPES) == VARIANT_NAMES


def variant_availability(name: str) -> tuple[bool, str]:
    """Can this variant be built here, and if not, which packages are missing."""
    import importlib.util

    missing = [m for m in RECIPES[name].requires if importlib.util.find_spec(m) is None]
    return (not missing, f"missing Python package(s): {', '.join(missing)}" if missing else "")


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def build_variant(name: str, bundle: Any, spec: Any) -> BuiltVariant:
    """Build (or fetch from cache) one variant of `bundle` and gate it with `spec`."""
    from harness.runtime import load_predictor

    recipe = RECIPES[name]
    options: dict[str, Any] = {}
    if recipe.precision == "int8":
        options = {"calibration": file_hash_of_array(calibration_inputs(bundle, spec))}
    key = recipe_hash(bundle.key, name, options, source_of(sys.modules[__name__]), _versions())

    def build(out: Path) -> None:
        recipe.build(bundle, out, spec)
        info = {
            "variant": name,
            "format": recipe.fmt,
            "precision": recipe.precision,
            "artifact": recipe.artifact,
            "model": bundle.name,
            "model_key": bundle.key,
            "model_config": bundle.meta["config"],
            "input_shape": list(bundle.input_shape),
            "versions": _versions(),
        }
        (out / "variant.json").write_text(json.dumps(info, indent=2))
        outputs = load_predictor(out, threads=1)(bundle.x_test)
        np.save(out / "outputs_test.npy", outputs.astype(np.float32))

    path = cached_build(f"variants/{bundle.name}/{name}", key, build)
    outputs = np.load(path / "outputs_test.npy")
    validation = validate(outputs, bundle, recipe.precision, spec.accuracy_tolerance)
    return BuiltVariant(
        name=name,
        path=path,
        precision=recipe.precision,
        artifact=recipe.artifact,
        sha256=file_sha256(path / recipe.artifact),
        validation=validation,
    )


def file_hash_of_array(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def validate(outputs: np.ndarray, bundle: Any, precision: str, tolerance_pts: float) -> Validation:
    """Score a variant's test-split outputs against labels and the fp32 reference."""
    ref = bundle.reference_test
    accuracy = float((outputs.argmax(1) == bundle.y_test).mean())
    reference_accuracy = float((ref.argmax(1) == bundle.y_test).mean())
    result = Validation(
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        max_abs_diff=float(np.abs(outputs - ref).max()),
        agreement=float((outputs.argmax(1) == ref.argmax(1)).mean()),
    )
    drop = (reference_accuracy - accuracy) * 100
    if precision == "fp32" and result.max_abs_diff > FP32_MAX_ABS_DIFF:
        result.status = "failed"
        result.reason = (
            f"fp32 build differs from the reference by {result.max_abs_diff:.2e} "
            f"(allowed {FP32_MAX_ABS_DIFF:.0e})"
        )
    elif drop > tolerance_pts:
        result.status = "failed"
        result.reason = (
            f"test accuracy {accuracy:.2%} is {drop:.2f} points below the fp32 reference "
            f"{reference_accuracy:.2%} (tolerance {tolerance_pts:g} points)"
        )
    return result
