"""LLM workloads: how long prompts and outputs are, and the requests made from them.

Prompt lengths are exact when we have the model's tokenizer: prompts are windows of a
tokenized synthetic text, sent as token ids to `/v1/completions` (both vLLM and llama.cpp
accept them), so every stack prefills the same tokens. Chat requests need text: the same
windows decoded, and the server's `usage` tells the real count. Output lengths are forced
(`max_tokens` with `ignore_eos`), so every stack decodes the same number of tokens.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from harness.config import StrictModel
from harness.llm.traces import TraceRow, TraceSpec
from harness.protocols.base import GenRequest


class FixedLength(StrictModel):
    kind: Literal["fixed"]
    value: PositiveInt

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, np.int64)


class UniformLength(StrictModel):
    kind: Literal["uniform"]
    min: PositiveInt
    max: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.max < self.min:
            raise ValueError("max must be at least min")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.min, self.max + 1, n)


class NormalLength(StrictModel):
    kind: Literal["normal"]
    mean: PositiveFloat
    std: PositiveFloat
    min: PositiveInt = 1
    max: PositiveInt | None = None

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        values = np.rint(rng.normal(self.mean, self.std, n))
        return np.clip(values, self.min, self.max or np.inf).astype(np.int64)


Length = Annotated[FixedLength | UniformLength | NormalLength, Field(discriminator="kind")]


class ConversationSpec(StrictModel):
    """Multi-turn chat: each conversation sends `turns` user messages (of `prompt_tokens`
    each) and waits for each answer (of `output_tokens`) plus `think_time_s` before the next;
    every turn carries the whole history, the server's own earlier answers included."""

    turns: Length = FixedLength(kind="fixed", value=3)
    think_time_s: NonNegativeFloat = Field(1.0, le=3600, description="between an answer "
                                           "and the user's next turn")  # fmt: skip
    system_prompt_tokens: int = Field(
        0, ge=0, description="a system prompt every conversation shares (a cacheable prefix)"
    )


class WorkloadSpec(StrictModel):
    """What each generation asks for (LLM models only)."""

    api: Literal["completions", "chat"] = "completions"
    prompt_tokens: Length = FixedLength(kind="fixed", value=64)
    output_tokens: Length = FixedLength(kind="fixed", value=32)
    shared_prefix_tokens: int = Field(
        0, ge=0, description="tokens every prompt starts with (tests prefix caching)"
    )
    samples: PositiveInt = Field(
        2048, description="distinct requests, cycled by the load (unique prompts per request "
        "until a step sends more than this)",
    )  # fmt: skip
    conversation: ConversationSpec | None = Field(
        None,
        description="multi-turn conversations (chat API): an open-loop arrival or a "
        "closed-loop user is one conversation; `samples` is how many distinct ones",
    )
    trace: TraceSpec | None = Field(
        None,
        description="requests from a trace file (lengths, shared prompt blocks, arrival "
        "times for `load.profile: {kind: trace}`) instead of the lengths above",
    )
    prompt_cache: bool = Field(
        False,
        description="let servers reuse cached prompt tokens (prefix caching); off: every "
        "request prefills its whole prompt, and a step served from a cache is not ranked",
    )


def make_requests(spec: WorkloadSpec, tokenizer: Any, seed: int, context: int) -> list[GenRequest]:
    """`spec.samples` requests; prompt + output never exceeds the model's `context`."""
    from harness.models.tiny_llama import corpus

    if spec.trace is not None:
        return trace_requests(spec.trace.read(), spec.trace, tokenizer, seed, context)[0]
    rng = np.random.default_rng(seed)
    n = spec.samples
    prompt_lens = spec.prompt_tokens.sample(rng, n)
    output_lens = spec.output_tokens.sample(rng, n)
    if int((prompt_lens + output_lens).max()) + spec.shared_prefix_tokens > context:
        raise ValueError(
            f"workload: shared prefix + prompt + output tokens reach "
            f"{int((prompt_lens + output_lens).max()) + spec.shared_prefix_tokens}, "
            f"over the model's context of {context}"
        )
    text = " ".join(corpus(seed + 17, lines=400 + int(prompt_lens.max()) // 4))
    if tokenizer is None:  # a bare GGUF: text prompts of about the right length
        words = text.split()
        out = []
        for p, o in zip(prompt_lens, output_lens, strict=True):
            start = int(rng.integers(0, max(1, len(words) - int(p))))
            prefix = words[: spec.shared_prefix_tokens]
            out.append(GenRequest(None, " ".join(prefix + words[start : start + int(p)]), int(o)))
        return out
    stream = tokenizer.encode(text).ids
    need = int(prompt_lens.max()) + spec.shared_prefix_tokens
    while len(stream) < need + 1:
        stream = stream + stream
    prefix = stream[: spec.shared_prefix_tokens]
    requests = []
    for p, o in zip(prompt_lens, output_lens, strict=True):
        start = int(rng.integers(0, len(stream) - int(p)))
        ids = tuple(prefix + stream[start : start + int(p)])
        requests.append(GenRequest(ids, tokenizer.decode(list(ids)), int(o)))
    return requests


def trace_requests(
    rows: list[TraceRow], spec: TraceSpec, tokenizer: Any, seed: int, context: int
) -> tuple[list[GenRequest], int]:
    """One request per trace row, in order, and how many rows were clipped to the context.

    A block id is always the same `block_tokens x scale` tokens (drawn from the corpus by
    the id), so requests that share leading ids share that prompt prefix, as in the trace;
    a row without ids gets a prompt of its own."""
    from harness.models.tiny_llama import corpus

    block = max(1, round(spec.block_tokens * spec.scale))
    longest = max(r.input_tokens for r in rows)
    text = " ".join(corpus(seed + 17, lines=400 + min(longest, 8 * context) // 4))
    stream: list[Any] = tokenizer.encode(text).ids if tokenizer is not None else text.split()
    while len(stream) < max(block, context) + 1:
        stream = stream + stream
    rng = np.random.default_rng(seed)

    def window(start: int, length: int) -> list[Any]:
        return stream[start : start + length]

    def block_tokens(block_id: int) -> list[Any]:
        at = int(np.random.default_rng([seed, block_id]).integers(0, len(stream) - block))
        return window(at, block)

    out, clipped = [], 0
    for row in rows:
        prompt_len = max(1, round(row.input_tokens * spec.scale))
        output_len = max(1, round(row.output_tokens * spec.scale))
        if prompt_len + output_len > context:
            clipped += 1
            output_len = min(output_len, context // 2)
            prompt_len = context - output_len
        if row.blocks:
            ids: list[Any] = []
            for block_id in row.blocks:
                if len(ids) >= prompt_len:
                    break
                ids.extend(block_tokens(block_id))
            ids = ids[:prompt_len]
            if len(ids) < prompt_len:  # the trace's blocks cover less than its length
                ids.extend(window(int(rng.integers(0, len(stream) - prompt_len)),
                                  prompt_len - len(ids)))  # fmt: skip
        else:
            ids = window(int(rng.integers(0, len(stream) - prompt_len)), prompt_len)
        if tokenizer is None:
            out.append(GenRequest(None, " ".join(ids), output_len))
        else:
            out.append(GenRequest(tuple(ids), tokenizer.decode(list(ids)), output_len))
    return out, clipped


def conversations(
    spec: WorkloadSpec, tokenizer: Any, seed: int, context: int
) -> tuple[list[Any], str]:
    """`spec.samples` conversations and the shared system prompt; the longest possible
    history (system prompt, every turn and answer) must fit the model's context."""
    from harness.load.sessions import Conversation
    from harness.models.tiny_llama import corpus

    talk = spec.conversation
    assert talk is not None
    rng = np.random.default_rng(seed + 101)
    n = spec.samples
    turns = talk.turns.sample(rng, n)
    text = " ".join(corpus(seed + 23, lines=800))
    words = text.split()
    stream: list[Any] = tokenizer.encode(text).ids if tokenizer is not None else words

    def piece(length: int) -> str:
        start = int(rng.integers(0, max(1, len(stream) - length)))
        chunk = stream[start : start + length]
        return tokenizer.decode(list(chunk)) if tokenizer is not None else " ".join(chunk)

    system = piece(talk.system_prompt_tokens) if talk.system_prompt_tokens else ""
    out = []
    longest = 0
    for count in turns.tolist():
        prompts = spec.prompt_tokens.sample(rng, count)
        answers = spec.output_tokens.sample(rng, count)
        # chat templates add a few tokens per message: 8 is generous for Llama's
        longest = max(longest, talk.system_prompt_tokens + int(prompts.sum() + answers.sum())
                      + 8 * (2 * count + 1))  # fmt: skip
        out.append(Conversation(tuple(piece(int(p)) for p in prompts),
                                tuple(int(a) for a in answers)))  # fmt: skip
    if longest > context:
        raise ValueError(
            f"a conversation's history reaches ~{longest} tokens, over the model's context of "
            f"{context}: fewer turns or shorter prompts/outputs"
        )
    return out, system
