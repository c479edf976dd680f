"""Third-party noise that says nothing about the run, silenced in the CLI.

A first run printed a dozen warnings before its first line of its own: torch's ONNX
exporter logging that torchvision is not installed (for operators no model here uses),
deprecation notices of torch.jit and pytree, onnxruntime's quantizer suggesting a
pre-processing step through the root logger. They are filtered by module and message, so
anything else still shows; SERVINGBENCH_VERBOSE=1 keeps them all.
"""

from __future__ import annotations

import logging
import os
import warnings

# (category, module regex) of warnings raised inside libraries during model builds
_WARNINGS = (
    (FutureWarning, r"(torch|copyreg|onnx|onnxscript)(\.|$)"),
    (DeprecationWarning, r"(torch|onnx|onnxscript|onnxruntime)(\.|$)"),
    (UserWarning, r"(torch\.onnx|onnxscript|torch\.jit)(\.|$)"),
)
# loggers that narrate library internals at WARNING
_LOGGERS = ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnx_ir")


class _NoQuantizerHints(logging.Filter):
    """onnxruntime's quantizer logs advice on the root logger ("Please consider ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            record.name == "root" and "pre-process" in message.replace("processing", "process")
        )


def quiet() -> None:
    if os.environ.get("SERVINGBENCH_VERBOSE") == "1":
        return
    # torch resets its registered loggers when it is imported, so their level is asked of
    # torch itself: "-onnx" is its spelling of "the ONNX exporter at ERROR" (a user's own
    # TORCH_LOGS wins)
    os.environ.setdefault("TORCH_LOGS", "-onnx")
    for category, module in _WARNINGS:
        warnings.filterwarnings("ignore", category=category, module=module)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    if not any(isinstance(f, _NoQuantizerHints) for f in root.filters):
        root.addFilter(_NoQuantizerHints())
