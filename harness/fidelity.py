"""Fidelity: before any load, a target's answers are compared with the reference.

The reference for a target is its variant's own output computed offline: a server must
reproduce what its variant computes (an INT8 variant is judged against INT8 outputs; its
accuracy loss is the variant's validation, not the server's fault). A target that answers
wrong is flagged in the results and the report, and never crowned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from harness.errors import ServingBenchError


@dataclass
class FidelityResult:
    passed: bool
    samples: int
    max_abs_diff: float
    agreement: float
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_fidelity(
    infer: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    expected: np.ndarray,
    atol: float,
    rtol: float,
    min_agreement: float,
) -> FidelityResult:
    """Send each input on its own (as the load will) and compare with `expected`."""
    got: list[np.ndarray] = []
    for x in inputs:
        try:
            out = np.asarray(infer(x[None]), np.float32)
        except ServingBenchError as exc:
            return FidelityResult(
                False, len(got), float("nan"), float("nan"), f"request {len(got)} failed: {exc}"
            )
        if out.shape != (1, *expected.shape[1:]):
            return FidelityResult(
                False,
                len(got),
                float("nan"),
                float("nan"),
                f"request {len(got)}: answer has shape {list(out.shape)}, expected "
                f"{[1, *expected.shape[1:]]}",
            )
        got.append(out[0])
    answers = np.stack(got)
    diff = np.abs(answers - expected)
    max_abs = float(diff.max())
    agreement = float((answers.argmax(1) == expected.argmax(1)).mean())
    bad = int((diff > atol + rtol * np.abs(expected)).any(axis=1).sum())
    problems = []
    if bad:
        problems.append(
            f"{bad}/{len(answers)} answers differ from the reference "
            f"(max abs diff {max_abs:.3g} > atol {atol:g})"
        )
    if agreement < min_agreement:
        problems.append(f"top-1 agreement {agreement:.1%} < required {min_agreement:.1%}")
    return FidelityResult(not problems, len(answers), max_abs, agreement, "; ".join(problems))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, dim) arrays."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(axis=1) / np.maximum(norms, 1e-12))


def check_embeddings(
    infer: Callable[[np.ndarray], np.ndarray],
    texts: np.ndarray,
    expected: np.ndarray,
    min_cosine: float,
) -> FidelityResult:
    """Send each text on its own (as the load will): every answer is an embedding of the
    expected size whose cosine with the variant's own embedding is at least `min_cosine`.
    `agreement` is the share of answers that hold."""
    got: list[np.ndarray] = []
    for i, text in enumerate(texts):
        try:
            out = np.asarray(infer(np.asarray([text], dtype=object)), np.float32)
        except ServingBenchError as exc:
            return FidelityResult(False, i, float("nan"), float("nan"), f"text {i} failed: {exc}")
        if out.shape != (1, expected.shape[1]):
            return FidelityResult(
                False, i, float("nan"), float("nan"),
                f"text {i}: answer has shape {list(out.shape)}, expected [1, {expected.shape[1]}]",
            )  # fmt: skip
        got.append(out[0])
    answers = np.stack(got)
    reference = expected[: len(answers)]
    cosine = cosines(answers, reference)
    holding = float((cosine >= min_cosine).mean())
    max_abs = float(np.abs(answers - reference).max())
    message = ""
    if holding < 1.0:
        message = (
            f"{int((cosine < min_cosine).sum())}/{len(answers)} embeddings differ from the "
            f"variant's own (cosine down to {cosine.min():.4f} < fidelity.min_cosine "
            f"{min_cosine:g})"
        )
    return FidelityResult(holding == 1.0, len(answers), max_abs, holding, message)
