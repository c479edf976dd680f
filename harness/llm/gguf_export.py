"""Write a Llama model as GGUF with the `gguf` package (no torch, no llama.cpp scripts).

What llama.cpp's own converter does for Llama, done here for our weights: tensor names
mapped to GGUF's, Q and K rows permuted from Hugging Face's rotate-half RoPE layout to
GGML's interleaved one, the byte-level BPE vocabulary and merges with the GPT-2
pre-tokenizer, and 2-D weights stored at the variant's precision (norms stay f32).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.models.tiny_llama import CHAT_TEMPLATE, SPECIAL_TOKENS, TinyLlamaConfig

PRECISIONS = ("f32", "f16", "bf16", "q8_0")

_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    base = hf_name.removesuffix(".weight")
    if base == "model.embed_tokens":
        return "token_embd.weight"
    if base == "model.norm":
        return "output_norm.weight"
    if base == "lm_head":
        return "output.weight"
    _, _, layer, rest = base.split(".", 3)  # model.layers.<i>.<rest>
    return f"blk.{layer}.{_NAMES[rest]}.weight"


def permute_rope(w: np.ndarray, heads: int) -> np.ndarray:
    """HF rotate-half rows -> GGML interleaved rows (as llama.cpp's convert script does)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _qtype(precision: str) -> Any:
    import gguf

    return {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[precision]


def stored(w: np.ndarray, precision: str) -> np.ndarray:
    """`w` as the GGUF file will hold it, read back as float32 (what the server computes with)."""
    from gguf import quants

    if w.ndim < 2 or precision == "f32":
        return w
    qtype = _qtype(precision)
    return quants.dequantize(quants.quantize(w, qtype), qtype).reshape(w.shape).astype(np.float32)


def write_gguf(
    path: Path,
    weights: dict[str, np.ndarray],
    c: TinyLlamaConfig,
    tokenizer_json: Path,
    precision: str,
) -> None:
    import gguf
    from gguf import quants

    tok = json.loads(tokenizer_json.read_text())
    vocab: dict[str, int] = tok["model"]["vocab"]
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(c.context_length)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.heads)
    writer.add_head_count_kv(c.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[precision]
    )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<s>"])
    writer.add_eos_token_id(vocab["</s>"])
    writer.add_add_bos_token(False)  # as the HF tokenizer: both servers count the same tokens
    writer.add_chat_template(CHAT_TEMPLATE)

    for hf_name, w in weights.items():
        if hf_name.endswith("q_proj.weight"):
            w = permute_rope(w, c.heads)
        elif hf_name.endswith("k_proj.weight"):
            w = permute_rope(w, c.kv_heads)
        if w.ndim < 2 or precision == "f32":
            writer.add_tensor(gguf_name(hf_name), np.ascontiguousarray(w, np.float32))
        elif precision == "f16":
            writer.add_tensor(gguf_name(hf_name), w.astype(np.float16))
        else:
            qtype = _qtype(precision)
            writer.add_tensor(gguf_name(hf_name), quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
