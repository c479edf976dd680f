"""A plain numpy Llama forward pass: the reference every served variant is checked against.

Hugging Face layout (rotate-half RoPE, SwiGLU MLP, RMSNorm, grouped KV heads). It computes
next-token logits for a prompt; the fidelity check compares a server's greedy first token
with this one, which catches a wrong weight layout (GGUF's permuted Q/K) or tokenizer.
"""

from __future__ import annotations

import numpy as np

from harness.models.tiny_llama import TinyLlamaConfig


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, theta: float = 10000.0) -> np.ndarray:
    """x: (heads, seq, head_dim), rotate-half convention."""
    _, seq, dim = x.shape
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = np.outer(np.arange(seq, dtype=np.float64), inv)  # (seq, dim/2)
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1).astype(np.float32)
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1).astype(np.float32)
    half = dim // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def next_token_logits(
    weights: dict[str, np.ndarray], c: TinyLlamaConfig, tokens: list[int]
) -> np.ndarray:
    """Logits for the token after `tokens` (float32, vocabulary-sized)."""
    w = weights
    x = w["model.embed_tokens.weight"][np.asarray(tokens)].astype(np.float32)
    seq, hd = len(tokens), c.head_dim
    group = c.heads // c.kv_heads
    mask = np.triu(np.full((seq, seq), -np.inf, np.float32), k=1)
    for i in range(c.layers):
        p = f"model.layers.{i}."
        h = _rms_norm(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(seq, c.heads, hd).transpose(1, 0, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(seq, c.kv_heads, hd).transpose(1, 0, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(seq, c.kv_heads, hd).transpose(1, 0, 2)
        q, k = _rope(q), _rope(k)
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attn = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        x = x + attn.transpose(1, 0, 2).reshape(seq, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = _rms_norm(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    x = _rms_norm(x[-1:], w["model.norm.weight"])
    return (x @ w["lm_head.weight"].T)[0]
