"""Fidelity for generations: before load, does the server compute what the variant does,
and does it count tokens honestly?

1. Greedy next token: for the variant's check prompts (sent as token ids), the server's
   one-token greedy answer must equal the token the variant's own weights predict
   (harness/llm/variants.py). Only prompts whose top-2 logit margin is at least
   `MIN_MARGIN` are compared: below it, a server's different-but-correct arithmetic
   (fused kernels, bf16 activations) may legitimately pick the runner-up.
2. Token accounting: streamed workload requests must end with `[DONE]`, report usage,
   return exactly the forced number of output tokens, count the prompt as our tokenizer
   does, and have time to first token <= end-to-end latency.
"""

from __future__ import annotations

import math
from typing import Any

from harness.errors import ServingBenchError
from harness.fidelity import FidelityResult
from harness.protocols.base import GenerationClient, GenRequest

MIN_MARGIN = 0.01
ACCOUNTING_REQUESTS = 4


def check_generation(
    client: GenerationClient,
    check_prompts: list[dict[str, Any]],
    requests: list[GenRequest],
    samples: int,
    min_agreement: float,
) -> FidelityResult:
    compared = agreed = 0
    mismatches: list[str] = []
    # greedy probes go to completions (token-id prompts) whatever API the workload uses
    completions = client.for_api("completions")
    try:
        for row in check_prompts[:samples]:
            if row["margin"] < MIN_MARGIN or "\ufffd" in row["next_text"] or not row["next_text"]:
                continue
            probe = GenRequest(tuple(row["prompt_ids"]), "", 1)
            got = completions.generate(probe, stream=False)
            compared += 1
            if got.text == row["next_text"]:
                agreed += 1
            elif len(mismatches) < 3:
                mismatches.append(f"expected {row['next_text']!r}, got {got.text!r}")
        problems = []
        for req in requests[:ACCOUNTING_REQUESTS]:
            gen = client.generate(req, stream=True)
            if not gen.done:
                problems.append("stream ended without [DONE]")
            if gen.completion_tokens != req.max_tokens:
                problems.append(
                    f"asked for {req.max_tokens} tokens, usage says {gen.completion_tokens}"
                )
            if (
                req.prompt_len is not None
                and client.api == "completions"
                and (gen.prompt_tokens != req.prompt_len)
            ):
                problems.append(
                    f"sent {req.prompt_len} prompt tokens, usage says {gen.prompt_tokens}"
                )
            if gen.ttft_ms is None or gen.ttft_ms > gen.e2e_ms:
                problems.append(f"time to first token {gen.ttft_ms} ms vs e2e {gen.e2e_ms:.1f} ms")
    except ServingBenchError as exc:
        return FidelityResult(False, compared, math.nan, math.nan, f"request failed: {exc}")
    agreement = agreed / compared if compared else math.nan
    message = []
    if compared and agreement < min_agreement:
        message.append(
            f"greedy next-token agreement {agreement:.2f} < {min_agreement} "
            f"({'; '.join(mismatches)})"
        )
    if problems:
        message.append("token accounting: " + "; ".join(dict.fromkeys(problems)))
    if not compared and check_prompts:
        message.append("no check prompt had a clear enough greedy winner to compare")
    passed = not problems and (not compared or agreement >= min_agreement)
    note = f"{agreed}/{compared} greedy next tokens agree" if compared else "no reference"
    return FidelityResult(
        passed, compared, math.nan, agreement, "; ".join(message) if message else note
    )
