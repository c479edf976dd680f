"""A standard Triton model repository for one variant: `<root>/<model>/config.pbtxt` and
`<root>/<model>/1/<file>`. Written for the local server and for the official image alike
(only the paths inside `config.pbtxt` differ). Not an adapter module: the leading
underscore keeps the registry from scanning it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.variants import BuiltVariant

# The file each backend loads from the version folder, and which variant formats it takes.
BACKEND_FILES = {"python": "model.py", "onnxruntime": "model.onnx", "tensorrt": "model.onnx",
                 "pytorch": "model.pt"}  # fmt: skip
BACKEND_VARIANTS = {
    "python": frozenset({"eager", "torchscript", "onnx", "onnx-int8"}),
    "onnxruntime": frozenset({"onnx", "onnx-int8"}),
    "tensorrt": frozenset({"onnx"}),  # FP16 engines from the fp32 export
    "pytorch": frozenset({"torchscript"}),
}
# libtorch models have no tensor names of their own: the pytorch backend's convention
TENSOR_NAMES = {"pytorch": ("input__0", "output__0")}


def tensor_names(backend: str) -> tuple[str, str]:
    return TENSOR_NAMES.get(backend, ("input", "output"))


@dataclass(frozen=True)
class RepoSpec:
    model: str
    backend: str
    max_batch_size: int
    instance_count: int
    instance_kind: str
    queue_delay_us: int | None  # None: no dynamic batching
    preferred_batch_sizes: tuple[int, ...] = ()


def write_repository(
    root: Path, spec: RepoSpec, variant: BuiltVariant, variant_dir: str, project_root: str
) -> Path:
    """Write the repository under `root` (replacing an older one); return the model folder.

    `variant_dir` and `project_root` are the paths the *server* sees (the python backend
    reads them from config.pbtxt), which differ from ours inside a container."""
    folder = root / spec.model
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)
    info = json.loads((variant.path / "variant.json").read_text())
    text_input = info.get("input_dtype") == "text"  # a sentence encoder: one string each
    input_dims = [1] if text_input else [int(d) for d in info["input_shape"]]
    output_dims = [int(d) for d in variant.outputs_test().shape[1:]]
    text = config_pbtxt(spec, input_dims, output_dims, variant_dir, project_root,
                        input_type="TYPE_STRING" if text_input else "TYPE_FP32")  # fmt: skip
    (folder / "config.pbtxt").write_text(text)
    target = folder / "1" / BACKEND_FILES[spec.backend]
    if spec.backend == "python":
        target.write_text(PYTHON_MODEL)
    else:
        shutil.copyfile(variant.path / variant.artifact, target)
    return folder


def config_pbtxt(
    spec: RepoSpec,
    input_dims: list[int],
    output_dims: list[int],
    variant_dir: str,
    project_root: str,
    input_type: str = "TYPE_FP32",
) -> str:
    """config.pbtxt in protobuf text format. max_batch_size is always >= 1, so the batch
    axis exists and dims are per instance; batching *across requests* is dynamic_batching."""
    inp, out = tensor_names(spec.backend)
    backend = "onnxruntime" if spec.backend == "tensorrt" else spec.backend
    lines = [
        f'name: "{spec.model}"',
        f'backend: "{backend}"',
        f"max_batch_size: {spec.max_batch_size}",
        f'input [ {{ name: "{inp}" data_type: {input_type} dims: {_list(input_dims)} }} ]',
        f'output [ {{ name: "{out}" data_type: TYPE_FP32 dims: {_list(output_dims)} }} ]',
        f"instance_group [ {{ count: {spec.instance_count} kind: {spec.instance_kind} }} ]",
    ]
    if spec.queue_delay_us is not None:
        preferred = (
            f" preferred_batch_size: {_list(list(spec.preferred_batch_sizes))}"
            if spec.preferred_batch_sizes
            else ""
        )
        lines.append(
            f"dynamic_batching {{ max_queue_delay_microseconds: {spec.queue_delay_us}{preferred} }}"
        )
    if spec.backend == "tensorrt":
        lines.append(TENSORRT_OPTIMIZATION)
    if spec.backend == "python":
        params = {"variant_dir": variant_dir, "servingbench_root": project_root,
                  "input_name": inp, "output_name": out}  # fmt: skip
        lines += [_parameter(k, v) for k, v in params.items()]
    return "\n".join(lines) + "\n"


def _list(values: list[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def _parameter(key: str, value: Any) -> str:
    return f'parameters: {{ key: "{key}" value: {{ string_value: {json.dumps(str(value))} }} }}'


# ONNX Runtime's TensorRT execution provider builds FP16 engines on first load: a TensorRT
# variant without a hand-built engine (Triton's onnxruntime backend documents the option).
TENSORRT_OPTIMIZATION = """\
optimization { execution_accelerators { gpu_execution_accelerator: [ {
  name: "tensorrt"
  parameters { key: "precision_mode" value: "FP16" }
} ] } }"""


PYTHON_MODEL = '''\
"""servingbench's Triton python-backend model: one variant through `harness.runtime`.

Triton hands execute() every request its dynamic batcher gathered: they are run as one
concatenated batch and the outputs split back, one response per request, in order.
"""

import json
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        # The stub's embedded Python ignores PYTHONPATH: the project comes from the config.
        sys.path.insert(0, params["servingbench_root"])
        from harness.runtime import load_predictor, read_variant, warmup_batch

        self.input_name = params["input_name"]
        self.output_name = params["output_name"]
        # a text encoder takes the (N, 1) strings as they come (bytes) and tokenizes them
        self.predict = load_predictor(params["variant_dir"])
        info = read_variant(params["variant_dir"])
        self.predict(warmup_batch(info))  # the first call allocates: not on a request
        if info.get("input_dtype") == "text":  # the encoder's time split, as custom metrics
            from adapters._triton_llm_model import _Metric
            from harness.embedding import Counters

            self.predict.counters = Counters(_Metric)

    def execute(self, requests):
        inputs = [
            pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
        ]
        try:
            outputs = self.predict(np.concatenate(inputs))
        except Exception as exc:  # every request of the batch gets the error, none hangs
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for x in inputs:
            part = np.ascontiguousarray(outputs[start : start + len(x)], np.float32)
            tensor = pb_utils.Tensor(self.output_name, part)
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start += len(x)
        return responses
'''


LLM_MODEL_SOURCE = Path(__file__).with_name("_triton_llm_model.py")


def write_llm_repository(
    root: Path, model: str, instance_count: int, variant_dir: str, project_root: str
) -> Path:
    """A decoupled python-backend model generating from an LLM variant (one response per
    token), for Triton's generate_stream endpoint. No batch axis (max_batch_size 0):
    each request is one sequence, decoded as it arrives by one of `instance_count`
    instances."""
    folder = root / model
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)
    shutil.copyfile(LLM_MODEL_SOURCE, folder / "1" / "model.py")

    def tensor(name: str, dtype: str, dims: str, optional: bool = False) -> str:
        return (f'{{ name: "{name}" data_type: {dtype} dims: {dims}'
                f'{" optional: true" if optional else ""} }}')  # fmt: skip

    inputs = [tensor("input_ids", "TYPE_INT64", "[ -1 ]", True),
              tensor("text_input", "TYPE_STRING", "[ 1 ]", True),
              tensor("max_tokens", "TYPE_INT32", "[ 1 ]"),
              tensor("ignore_eos", "TYPE_BOOL", "[ 1 ]", True)]  # fmt: skip
    outputs = [tensor("text_output", "TYPE_STRING", "[ 1 ]"),
               tensor("finish_reason", "TYPE_STRING", "[ 1 ]"),
               tensor("prompt_tokens", "TYPE_INT32", "[ 1 ]"),
               tensor("completion_tokens", "TYPE_INT32", "[ 1 ]")]  # fmt: skip
    lines = [
        f'name: "{model}"',
        'backend: "python"',
        "max_batch_size: 0",
        "model_transaction_policy { decoupled: true }",
        "input [ " + ", ".join(inputs) + " ]",
        "output [ " + ", ".join(outputs) + " ]",
        f"instance_group [ {{ count: {instance_count} kind: KIND_CPU }} ]",
        _parameter("variant_dir", variant_dir),
        _parameter("servingbench_root", project_root),
    ]
    (folder / "config.pbtxt").write_text("\n".join(lines) + "\n")
    return folder
