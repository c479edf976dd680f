"""The model zoo: models built by code, with no downloads."""

from __future__ import annotations

from typing import Any

from harness.models.base import ModelBundle, ModelEntry
from harness.models.digits_cnn import DigitsCnn
from harness.models.minilm import Minilm
from harness.models.tiny_llama import LlmBundle, TinyLlama

MODELS: dict[str, ModelEntry] = {
    entry.name: entry for entry in (DigitsCnn(), TinyLlama(), Minilm())
}


def build_model(config: Any) -> ModelBundle | LlmBundle:
    return MODELS[config.name].build(config)


__all__ = ["MODELS", "LlmBundle", "ModelBundle", "ModelEntry", "build_model"]
