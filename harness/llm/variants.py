"""LLM variants: one precision of the model, as the files each stack loads.

A variant folder holds `model.gguf` (llama.cpp) at that precision and, for f32/f16/bf16,
`hf/` (vLLM loads it with `--dtype <precision>`). `int8` holds only `hf/`: the f32 weights,
their Linear layers quantized dynamically to int8 when a transformers stack loads them
(harness/llm/serving.py `quantize`); it is validated by running that same model. Each
build is validated like the other variants: next-token logits of the weights *as
stored* (quantized and read back) against the f32 reference on held-out prompts — max abs
diff and greedy agreement — and it keeps the expected greedy next token of each check
prompt, which the fidelity check asks every server for. A user's own model (`model.path`)
is served as given, without a reference.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import cached_build, file_sha256, recipe_hash, source_of
from harness.llm import gguf_export, serving
from harness.models.tiny_llama import LlmBundle
from harness.variants import LLM_VARIANT_NAMES, BuiltVariant, Validation

HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
INT8 = "int8"
CHECK_PROMPTS = 32
CHECK_PROMPT_TOKENS = 24
F32_MAX_ABS_DIFF = 1e-3


def hf_dir(variant: BuiltVariant) -> Path | None:
    """The Hugging Face folder a vLLM-like server loads (None: this variant has none)."""
    local = variant.path / "hf"
    if local.is_dir():
        return local
    given = _given(variant).get("hf_dir")
    return Path(given) if given else None


def gguf_file(variant: BuiltVariant) -> Path | None:
    local = variant.path / "model.gguf"
    if local.exists():
        return local
    given = _given(variant).get("gguf_file")
    return Path(given) if given else None


def checks(variant: BuiltVariant) -> list[dict[str, Any]]:
    """Check prompts with the greedy next token the variant's own weights predict."""
    path = variant.path / "checks.json"
    return json.loads(path.read_text()) if path.exists() else []


def _given(variant: BuiltVariant) -> dict[str, Any]:
    path = variant.path / "given.json"
    return json.loads(path.read_text()) if path.exists() else {}


def build_llm_variant(name: str, bundle: LlmBundle, spec: Any) -> BuiltVariant:
    if name not in LLM_VARIANT_NAMES:
        raise ValueError(f"{name} is not an LLM variant (expected one of {LLM_VARIANT_NAMES})")
    if bundle.config is None:
        return _given_variant(name, bundle)
    key = recipe_hash(
        bundle.key,
        name,
        source_of(sys.modules[__name__]),
        source_of(gguf_export),
        source_of(serving) if name == INT8 else "",  # its validation runs the engine's load
    )
    path = cached_build("variants/tiny-llama", key, lambda out: _build(name, bundle, out))
    info = json.loads((path / "variant.json").read_text())
    validation = Validation(**info["validation"])
    threshold = spec.llm_min_agreement
    if name == "f32" and validation.max_abs_diff > F32_MAX_ABS_DIFF:
        validation.status, validation.reason = (
            "failed",
            f"f32 GGUF drifts from the reference by {validation.max_abs_diff:.2e}",
        )
    elif validation.agreement < threshold:
        validation.status = "failed"
        validation.reason = (
            f"greedy next-token agreement {validation.agreement:.3f} with the f32 reference "
            f"is under variants.llm_min_agreement={threshold}"
        )
    return BuiltVariant(name, path, name, artifact(name), info["sha256"], validation)


def _build(name: str, bundle: LlmBundle, out: Path) -> None:
    from harness.llm.gguf_export import stored, write_gguf
    from harness.llm.reference import next_token_logits

    assert bundle.config is not None and bundle.hf_dir is not None
    weights = bundle.weights()
    if name != INT8:
        write_gguf(out / "model.gguf", weights, bundle.config, bundle.hf_dir / "tokenizer.json",
                   name)  # fmt: skip
    if name in HF_DTYPES or name == INT8:
        shutil.copytree(bundle.hf_dir, out / "hf")
        config = json.loads((out / "hf" / "config.json").read_text())
        config["torch_dtype"] = HF_DTYPES.get(name, "float32")
        if name == INT8:
            config[serving.QUANTIZATION_KEY] = serving.DYNAMIC_INT8
        (out / "hf" / "config.json").write_text(json.dumps(config, indent=2))
    logits = _int8_logits(out / "hf") if name == INT8 else None
    as_stored = {} if logits else {k: stored(v, name) for k, v in weights.items()}
    tok = bundle.tokenizer()
    from harness.models.tiny_llama import corpus

    ids = tok.encode(" ".join(corpus(bundle.config.seed + 991, lines=200))).ids
    rng = np.random.default_rng(bundle.config.seed + 991)
    starts = rng.integers(0, len(ids) - CHECK_PROMPT_TOKENS, CHECK_PROMPTS)
    diffs, agree, rows = [], 0, []
    for s in starts:
        prompt = ids[int(s) : int(s) + CHECK_PROMPT_TOKENS]
        ref = next_token_logits(weights, bundle.config, prompt)
        got = logits(prompt) if logits else next_token_logits(as_stored, bundle.config, prompt)
        diffs.append(float(np.abs(ref - got).max()))
        agree += int(ref.argmax() == got.argmax())
        top2 = np.sort(got)[-2:]
        rows.append(
            {
                "prompt_ids": prompt,
                "next_token": int(got.argmax()),
                "next_text": tok.decode([int(got.argmax())]),
                "margin": float(top2[1] - top2[0]),
            }
        )
    (out / "checks.json").write_text(json.dumps(rows))
    validation = {
        "accuracy": agree / len(starts),
        "reference_accuracy": 1.0,
        "max_abs_diff": max(diffs),
        "agreement": agree / len(starts),
    }
    (out / "variant.json").write_text(
        json.dumps({"validation": validation, "sha256": file_sha256(out / artifact(name))})
    )


def artifact(name: str) -> str:
    """The file that names this variant (its hash is the variant's)."""
    return "hf/model.safetensors" if name == INT8 else "model.gguf"


def _int8_logits(hf: Path) -> Any:
    """Next-token logits of the model exactly as a transformers stack serves the int8
    variant (the same load and `quantize` call, on one thread: what the servers get)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    config = json.loads((hf / "config.json").read_text())
    model = serving.quantize(
        AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval(),
        config[serving.QUANTIZATION_KEY],
    )

    def logits(prompt: list[int]) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.tensor([prompt])).logits[0, -1]
        return out.float().numpy()

    return logits


def _given_variant(name: str, bundle: LlmBundle) -> BuiltVariant:
    """A user's model: nothing to build; the folder records where its files are."""

    def write(out: Path) -> None:
        (out / "given.json").write_text(
            json.dumps(
                {
                    "hf_dir": str(bundle.hf_dir) if bundle.hf_dir else None,
                    "gguf_file": str(bundle.gguf_file) if bundle.gguf_file else None,
                }
            )
        )

    path = cached_build("variants/given-llm", recipe_hash(bundle.key, name), write)
    validation = Validation(
        math.nan,
        math.nan,
        math.nan,
        math.nan,
        "ok",
        "your model, served as given: no reference to validate against",
    )
    artifact = bundle.gguf_file or bundle.hf_dir
    sha = file_sha256(bundle.gguf_file) if bundle.gguf_file else bundle.key
    return BuiltVariant(name, path, name, str(artifact), sha, validation)
