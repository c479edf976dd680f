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
