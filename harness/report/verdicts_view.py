"""Pairwise verdicts for the report: read verdicts.csv (or compute it), look pairs up.

`verdicts.csv` (see `harness.verdicts`) says, per step label, pair of targets and metric,
whether target_a is faster, slower or not significantly different from target_b, with the
95% interval of the ratio a/b. A run folder written before verdicts existed (or one whose
run stopped before the end) has none: they are computed from the records here, in
memory, and nothing is written to the folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.report.fmt import finite, ratio
from harness.results import RunData

METRICS = ("p50_ms", "p99_ms", "throughput_rps")
LLM_METRICS = ("ttft_p50_ms", "output_tokens_per_s")  # streamed generations only
HEADINGS = {
    "p50_ms": "p50",
    "p99_ms": "p99",
    "throughput_rps": "throughput",
    "ttft_p50_ms": "TTFT p50",
    "output_tokens_per_s": "output tok/s",
}
TEXT = ("label", "target_a", "target_b", "metric", "verdict")
NUMBERS = ("value_a", "value_b", "ratio", "ci_low", "ci_high")
COLUMNS = (*TEXT[:4], *NUMBERS, "verdict", "trusted")
NO_VERDICT = "no verdict"
SAME = "no significant difference"
INSUFFICIENT = "insufficient data"
WORD_CLASS = {
    "faster": "v-faster",
    "slower": "v-slower",
    SAME: "v-same",
    INSUFFICIENT: "v-insufficient",
}
UNTRUSTED_UNEXPLAINED = (
    "marked untrusted by the verdicts: a step not recorded as valid, "
    "or a target that did not finish ok with its fidelity check passed"
)
_FLIP = {"faster": "slower", "slower": "faster"}


@dataclass(frozen=True)
class Cell:
    """One verdict: `a` is <word> than `b`, ratio a/b with its 95% interval."""

    ratio: float
    low: float
    high: float
    word: str
    trusted: bool = True

    @property
    def css(self) -> str:
        return WORD_CLASS.get(self.word, "v-none")

    @property
    def text(self) -> str:
        return ratio(self.ratio, self.low, self.high)

    def flipped(self) -> Cell:
        """The same verdict seen from `b`'s side (b/a)."""

        def inv(x: float) -> float:
            return 1.0 / x if finite(x) and x != 0 else float("nan")

        word = _FLIP.get(self.word, self.word)
        return Cell(inv(self.ratio), inv(self.high), inv(self.low), word, self.trusted)


MISSING = Cell(float("nan"), float("nan"), float("nan"), NO_VERDICT, False)


@dataclass(frozen=True)
class Verdicts:
    frame: pd.DataFrame
    source: str = ""  # where they came from, for the report's notes; "" when none
    note: str | None = None  # why there are none (a problem worth showing)
    _index: dict[tuple[str, str, str, str], Cell] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, frame: pd.DataFrame, source: str = "", note: str | None = None) -> Verdicts:
        keys = zip(*(frame[c].astype(str).tolist() for c in TEXT[:4]), strict=True)
        cells = zip(
            *(frame[c].astype(float).tolist() for c in ("ratio", "ci_low", "ci_high")),
            frame["verdict"].astype(str).tolist(),
            frame["trusted"].astype(bool).tolist(),
            strict=True,
        )
        index = {
            (label, a, b, metric): Cell(*cell)
            for (label, a, b, metric), cell in zip(keys, cells, strict=True)
        }
        return cls(frame, source, note, index)

    def cell(self, label: str, a: str, b: str, metric: str) -> Cell:
        """`a` against `b`, whichever order the file has them in."""
        found = self._index.get((label, a, b, metric))
        if found is not None:
            return found
        reverse = self._index.get((label, b, a, metric))
        return reverse.flipped() if reverse is not None else MISSING


def load_verdicts(data: RunData) -> Verdicts:
    written = data.verdicts_csv()
    if written is not None:
        return Verdicts.of(_normalise(written) if len(written.columns) else _empty(),
                           "verdicts.csv")  # fmt: skip
    if data.steps.empty or data.steps.groupby("label")["target"].nunique().max() < 2:
        return Verdicts.of(_empty())  # no pairs to compare
    from harness.verdicts import DEFAULT_MARGIN, compute_verdicts

    try:
        margin = (data.scenario.get("verdicts") or {}).get("margin", DEFAULT_MARGIN)
        frame = compute_verdicts(data, float(margin))
    except Exception as exc:  # e.g. a step without its records: say so, keep the report
        note = f"verdicts.csv is missing and could not be computed ({type(exc).__name__}: {exc})"
        return Verdicts.of(_empty(), note=note)
    return Verdicts.of(_normalise(frame), "computed from the records (no verdicts.csv)")


def _empty() -> pd.DataFrame:
    return _normalise(pd.DataFrame({c: pd.Series(dtype=str) for c in COLUMNS}))


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = ""
    for col in TEXT:
        frame[col] = frame[col].fillna("").astype(str)
    for col in NUMBERS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    trusted = frame["trusted"].astype(str).str.strip().str.lower()
    frame["trusted"] = trusted.isin(["true", "1", "yes"])
    frame["verdict"] = frame["verdict"].where(frame["verdict"] != "", NO_VERDICT)
    return frame[list(COLUMNS)].reset_index(drop=True)


def verdict_tables(
    verdicts: Verdicts,
    labels: list[str],
    reasons: Mapping[tuple[str, str], list[str]],
    baselines: set[str],
) -> list[dict[str, Any]]:
    """Per label, one row per pair: a cell per metric, and why the pair is untrusted."""
    frame = verdicts.frame
    metrics = METRICS + (LLM_METRICS if frame["metric"].isin(LLM_METRICS).any() else ())
    extra = [str(v) for v in frame["label"].unique() if v not in labels]
    tables = []
    for label in [*labels, *extra]:
        rows = frame[frame["label"] == label]
        pairs = list(dict.fromkeys(zip(rows["target_a"], rows["target_b"], strict=True)))
        if not pairs:
            continue
        tables.append(
            {
                "label": label,
                "headings": [HEADINGS[m] for m in metrics],
                "rows": [
                    _pair(verdicts, label, a, b, reasons, baselines, metrics) for a, b in pairs
                ],
            }
        )
    return tables


def _pair(
    verdicts: Verdicts,
    label: str,
    a: str,
    b: str,
    reasons: Mapping[tuple[str, str], list[str]],
    baselines: set[str],
    metrics: tuple[str, ...] = METRICS,
) -> dict[str, Any]:
    cells = [verdicts.cell(label, a, b, m) for m in metrics]
    trusted = all(c.trusted for c in cells if c is not MISSING)
    why = [f"{name}: {r}" for name in (a, b) for r in reasons.get((label, name), [])]
    if not trusted and not why:
        why = [UNTRUSTED_UNEXPLAINED]
    return {
        "a": a,
        "b": b,
        "a_floor": a in baselines,
        "b_floor": b in baselines,
        "cells": cells,
        "trusted": trusted,
        "why": why if not trusted else [],
    }
