"""Triton python-backend model (decoupled) serving an LLM variant: copied into the model
repository as `1/model.py` by adapters/triton.py.

Each request is answered by a stream of responses, one per output token (`text_output`),
then a final one with `finish_reason` and the token counts, sent with the FINAL flag: what
Triton's `generate_stream` endpoint turns into SSE events. The model is the transformers
engine the other Python stacks serve (harness/llm/serving.py); its counters are Triton
custom metrics, so they appear on Triton's own metrics port.
"""

import json
import sys
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class _Metric:
    """A Triton custom metric behind the inc/dec interface the engine counts with."""

    def __init__(self, kind: str, name: str, doc: str) -> None:
        counter = kind == "counter"
        family = pb_utils.MetricFamily(
            name=f"{name}_total" if counter else name,
            description=doc,
            kind=pb_utils.MetricFamily.COUNTER if counter else pb_utils.MetricFamily.GAUGE,
        )
        self.metric = family.Metric(labels={})
        self.family = family  # the family must outlive its metric

    def inc(self, value: float = 1.0) -> None:
        self.metric.increment(value)

    def dec(self, value: float = 1.0) -> None:
        self.metric.increment(-value)


def _tensor(name: str, value: Any, dtype: Any) -> Any:
    return pb_utils.Tensor(name, np.array([value], dtype=dtype))


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = json.loads(args["model_config"])["parameters"]
        root = params["servingbench_root"]["string_value"]
        if root not in sys.path:
            sys.path.insert(0, root)
        from harness.llm.serving import Counters, Engine
        from harness.runtime import thread_count

        self.engine = Engine.load(
            params["variant_dir"]["string_value"], thread_count(), Counters(_Metric)
        )

    def execute(self, requests: list) -> None:
        from harness.llm.serving import BadRequest, Prompt

        for request in requests:
            sender = request.get_response_sender()
            try:
                prompt = self._prompt(request, Prompt)
            except BadRequest as exc:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)  # fmt: skip
                continue
            count = 0
            try:
                for piece in self.engine.generate(prompt):
                    count += 1
                    sender.send(pb_utils.InferenceResponse(output_tensors=[
                        _tensor("text_output", piece.encode(), np.object_),
                    ]))  # fmt: skip
            except RuntimeError as exc:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)  # fmt: skip
                continue
            finish = "length" if count >= prompt.max_tokens else "stop"
            sender.send(
                pb_utils.InferenceResponse(output_tensors=[
                    _tensor("text_output", b"", np.object_),
                    _tensor("finish_reason", finish.encode(), np.object_),
                    _tensor("prompt_tokens", len(prompt.ids), np.int32),
                    _tensor("completion_tokens", count, np.int32),
                ]),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )  # fmt: skip

    def _prompt(self, request: Any, prompt_class: type) -> Any:
        from harness.llm.serving import BadRequest

        def get(name: str) -> Any:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy().reshape(-1)

        ids = get("input_ids")
        text = get("text_input")
        if ids is not None and len(ids):
            prompt_ids = [int(t) for t in ids]
        elif text is not None and len(text):
            raw = text[0]
            prompt_ids = self.engine.encode(raw.decode() if isinstance(raw, bytes) else str(raw))
        else:
            raise BadRequest("give input_ids or text_input")
        max_tokens = get("max_tokens")
        ignore = get("ignore_eos")
        if max_tokens is None or not len(max_tokens) or int(max_tokens[0]) < 1:
            raise BadRequest("max_tokens: expected a positive integer")
        n = int(max_tokens[0])
        if len(prompt_ids) + n > self.engine.context:
            raise BadRequest(f"{len(prompt_ids)} prompt + {n} output tokens exceed the context")
        return prompt_class(prompt_ids, n, bool(ignore[0]) if ignore is not None else False,
                            False, "")  # fmt: skip

    def finalize(self) -> None:
        del self.engine  # its threads and weights go with the model instance
