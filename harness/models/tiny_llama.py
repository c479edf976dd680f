"""`tiny-llama`: a random-initialised Llama model and a byte-level BPE tokenizer, made here.

No model hub: the tokenizer is trained with `tokenizers` on a seeded synthetic corpus and
the weights are drawn from a seeded normal (a few million parameters), so every machine
builds the same bytes. It is written as a Hugging Face folder (`hf/`: config.json,
model.safetensors, tokenizer.json, tokenizer_config.json) that vLLM loads; the GGUF files
llama.cpp loads are variants (harness/llm/variants.py). A random model says nothing
useful, but it does exactly the work a real one of its shape does, which is what serving
stacks are compared on; requests force their output length (`ignore_eos`).

`path:` serves your own model instead: a Hugging Face folder or a `.gguf` file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt, model_validator

from harness.cache import cached_build, file_sha256, recipe_hash, source_of
from harness.config import StrictModel

SPECIAL_TOKENS = ("<s>", "</s>", "<|im_start|>", "<|im_end|>")
# ChatML: a template llama.cpp recognises without --jinja and vLLM renders with jinja2
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_WORDS = (
    "the",
    "model",
    "serves",
    "tokens",
    "fast",
    "slow",
    "request",
    "batch",
    "queue",
    "latency",
    "server",
    "client",
    "stream",
    "prompt",
    "output",
    "cache",
    "memory",
    "kernel",
    "thread",
    "core",
    "load",
    "test",
    "bench",
    "result",
    "report",
    "token",
    "time",
    "first",
    "inter",
    "per",
    "second",
    "rate",
    "goodput",
    "error",
    "retry",
    "slot",
    "prefix",
    "decode",
    "prefill",
    "attention",
    "layer",
    "norm",
    "weight",
    "value",
    "key",
    "query",
    "rotary",
    "embedding",
    "vocabulary",
    "merge",
    "byte",
)


class TinyLlamaConfig(StrictModel):
    name: Literal["tiny-llama"]
    path: str | None = Field(
        None, description="serve this Hugging Face folder or .gguf file instead of building"
    )
    hidden_size: PositiveInt = 256
    layers: PositiveInt = 4
    heads: PositiveInt = 4
    kv_heads: PositiveInt = 4
    intermediate_size: PositiveInt = Field(768, description="a multiple of 32 (q8_0 blocks)")
    vocab_size: PositiveInt = Field(4096, ge=512)
    context_length: PositiveInt = 2048
    init_std: float = Field(0.02, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _shapes(self) -> TinyLlamaConfig:
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 2:
            raise ValueError("hidden_size must split into heads of an even size")
        if self.heads % self.kv_heads:
            raise ValueError("heads must be a multiple of kv_heads")
        if self.hidden_size % 32 or self.intermediate_size % 32:
            raise ValueError("hidden_size and intermediate_size must be multiples of 32")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads


@dataclass
class LlmBundle:
    """A built (or given) causal LM: where its files are and what it is."""

    name: str
    key: str
    path: Path  # the cache folder (or the user's path)
    hf_dir: Path | None  # Hugging Face folder (vLLM)
    gguf_file: Path | None  # a given .gguf (llama.cpp); built models make GGUF per variant
    config: TinyLlamaConfig | None  # None: a user's model of unknown make-up
    meta: dict[str, Any] = field(default_factory=dict)

    def tokenizer(self) -> Any:
        """The `tokenizers.Tokenizer` (None for a bare GGUF: the server counts for us)."""
        from tokenizers import Tokenizer

        if self.hf_dir is None or not (self.hf_dir / "tokenizer.json").exists():
            return None
        return Tokenizer.from_file(str(self.hf_dir / "tokenizer.json"))

    def weights(self) -> dict[str, np.ndarray]:
        """Hugging Face tensor names -> float32 arrays (built models only)."""
        from safetensors.numpy import load_file

        assert self.hf_dir is not None
        return load_file(str(self.hf_dir / "model.safetensors"))


def corpus(seed: int, lines: int = 4000) -> list[str]:
    """A seeded synthetic text: words, numbers and punctuation, enough for BPE merges."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(lines):
        n = int(rng.integers(4, 16))
        words = [
            _WORDS[int(i)] if rng.random() < 0.85 else str(int(rng.integers(0, 10_000)))
            for i in rng.integers(0, len(_WORDS), n)
        ]
        out.append(" ".join(words).capitalize() + str(rng.choice([".", "?", "!", ","])))
    return out


def train_tokenizer(config: TinyLlamaConfig) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # GPT-2's byte-level pre-tokenizer (regex included): llama.cpp's "gpt-2" pre-type
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(config.seed), trainer=trainer)
    return tok


def hf_tensor_shapes(c: TinyLlamaConfig, vocab: int) -> dict[str, tuple[int, ...]]:
    h, kv = c.hidden_size, c.kv_heads * c.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(c.layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (c.intermediate_size, h),
            p + "mlp.up_proj.weight": (c.intermediate_size, h),
            p + "mlp.down_proj.weight": (h, c.intermediate_size),
        }
    return shapes | {"model.norm.weight": (h,), "lm_head.weight": (vocab, h)}


def random_weights(c: TinyLlamaConfig, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(c.seed)
    return {
        name: (
            np.ones(shape, np.float32)
            if name.endswith("norm.weight")
            else rng.normal(0.0, c.init_std, shape).astype(np.float32)
        )
        for name, shape in hf_tensor_shapes(c, vocab).items()
    }


def hf_config(c: TinyLlamaConfig, vocab: int, bos: int, eos: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": vocab,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }


def _build(c: TinyLlamaConfig, out: Path) -> None:
    from safetensors.numpy import save_file

    hf = out / "hf"
    hf.mkdir()
    tok = train_tokenizer(c)
    vocab = tok.get_vocab_size()
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.save(str(hf / "tokenizer.json"))
    weights = random_weights(c, vocab)
    save_file(weights, str(hf / "model.safetensors"), metadata={"format": "pt"})
    (hf / "config.json").write_text(json.dumps(hf_config(c, vocab, bos, eos), indent=2))
    (hf / "generation_config.json").write_text(
        json.dumps({"bos_token_id": bos, "eos_token_id": eos, "do_sample": False}, indent=2)
    )
    (hf / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "add_bos_token": False,
                "model_max_length": c.context_length,
                "chat_template": CHAT_TEMPLATE,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
    )
    meta = {
        "model": "tiny-llama",
        "config": c.model_dump(),
        "vocab_size": vocab,
        "parameters": int(sum(w.size for w in weights.values())),
        "weights_sha256": file_sha256(hf / "model.safetensors"),
        "tokenizer_sha256": file_sha256(hf / "tokenizer.json"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


class TinyLlama:
    name: ClassVar[str] = "tiny-llama"
    workload: ClassVar[str] = "generate"
    config_class: ClassVar[type[StrictModel]] = TinyLlamaConfig

    def make_module(self, config: Any) -> Any:
        raise NotImplementedError("tiny-llama is served from files, not a torch module")

    def build(self, config: Any) -> LlmBundle:
        if config.path:
            return _given(config.path)
        import tokenizers

        key = recipe_hash(
            config.model_dump(), source_of(sys.modules[__name__]), tokenizers.__version__
        )
        path = cached_build("models/tiny-llama", key, lambda out: _build(config, out))
        return LlmBundle(
            name=self.name,
            key=key,
            path=path,
            hf_dir=path / "hf",
            gguf_file=None,
            config=config,
            meta=json.loads((path / "meta.json").read_text()),
        )


def _given(text: str) -> LlmBundle:
    """A user's model: a Hugging Face folder (config.json) or a GGUF file, used as it is."""
    from harness.errors import ConfigError

    path = Path(text).expanduser().resolve()
    if path.is_file() and path.suffix == ".gguf":
        return LlmBundle(
            "tiny-llama",
            file_sha256(path)[:16],
            path,
            None,
            path,
            None,
            {"model": str(path), "format": "gguf"},
        )
    if path.is_dir() and (path / "config.json").exists():
        key = recipe_hash(str(path), (path / "config.json").read_text())
        gguf = sorted(path.glob("*.gguf"))
        return LlmBundle(
            "tiny-llama",
            key,
            path,
            path,
            gguf[0] if gguf else None,
            None,
            {"model": str(path), "format": "hf"},
        )
    raise ConfigError(
        "model.path",
        [(text, "expected a Hugging Face model folder (with config.json) or a .gguf file")],
    )
