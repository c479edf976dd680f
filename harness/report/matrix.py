"""Verdicts as one matrix per step: every ranked target against that step's leader.

Rows are the targets that may be ranked at the step (trusted, eligible), best first; each
cell is the target's figure, its ratio to the leader with the 95% interval, coloured by the
verdict's word. Targets that may not be ranked are listed below, greyed, with the reason;
the in-process floor is a reference line, never a contender. In open loop the schedule sets
the throughput, so that column is left out there (it carries no information). Each cell's
tooltip names the steps.csv rows it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.report import fmt
from harness.report.data import step_rows
from harness.report.verdicts_view import HEADINGS, MISSING, Verdicts
from harness.results import RunData

CLOSED_METRICS = ("p50_ms", "p99_ms", "throughput_rps")
OPEN_METRICS = ("p50_ms", "p99_ms")
LLM_METRICS = ("ttft_p50_ms", "output_tokens_per_s")
UNITS = {"p50_ms": "ms", "p99_ms": "ms", "throughput_rps": "req/s", "ttft_p50_ms": "ms",
         "output_tokens_per_s": "tok/s"}  # fmt: skip
DIGITS = {"throughput_rps": 0, "output_tokens_per_s": 0}
HIGHER_IS_BETTER = {"throughput_rps", "output_tokens_per_s"}


@dataclass
class MatrixCell:
    value: str  # "1,234 req/s"
    ratio: str  # "0.82x [0.80-0.84]" ("" for the leader)
    css: str  # verdict class
    word: str
    source: str  # "steps.csv rows 3, 17"
    sort: str  # the value, for sorting


@dataclass
class MatrixRow:
    target: str
    leader: bool
    cells: list[MatrixCell]
    recommended: bool = False


@dataclass
class Matrix:
    label: str
    leader: str
    headings: list[str]
    rows: list[MatrixRow]
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (target, why)
    floor: str = ""  # the reference line
    note: str = ""


def matrices(data: RunData, agg: pd.DataFrame, labels: list[str], verdicts: Verdicts,
             pick: str | None) -> list[Matrix]:  # fmt: skip
    trusted = data.trusted() - data.baselines()
    llm = "ttft_p50_ms" in agg and bool(agg["ttft_p50_ms"].notna().any())
    found = []
    for label in labels:
        rows = agg[agg["label"] == label]
        if rows.empty:
            continue
        open_loop = str(rows["mode"].iloc[0]) == "open"
        metrics = list(OPEN_METRICS if open_loop else CLOSED_METRICS)
        if llm:
            metrics += [m for m in LLM_METRICS if not (open_loop and m == "output_tokens_per_s")]
        ranked = rows[rows["target"].isin(trusted) & ~rows["ineligible"].astype(bool)]
        key = "p99_ms" if open_loop else ("output_tokens_per_s" if llm else "throughput_rps")
        if key not in ranked or ranked[key].isna().all():
            key = "p50_ms"
        ranked = ranked.sort_values(key, ascending=key not in HIGHER_IS_BETTER, na_position="last")
        # the step's own best leads its matrix (the recommended target is marked in it)
        leader = "" if ranked.empty else str(ranked["target"].iloc[0])
        order = [leader] + [t for t in ranked["target"] if t != leader] if leader else []
        matrix = Matrix(label, leader, [_heading(m) for m in metrics], [])
        for target in order:
            row = rows[rows["target"] == target].iloc[0]
            cells = [_cell(data, verdicts, label, target, leader, m, row) for m in metrics]
            matrix.rows.append(MatrixRow(target, target == leader, cells, target == pick))
        for row in rows.itertuples(index=False):
            name = str(row.target)
            if name in order or name in data.baselines():
                continue
            matrix.left_out.append((name, _why(data, row)))
        matrix.floor = _floor_line(data, rows, metrics)
        if open_loop:
            matrix.note = ("Open loop: the arrival schedule sets the throughput, the same for "
                           "every target that keeps up, so latency decides here.")  # fmt: skip
        found.append(matrix)
    return found


def _heading(metric: str) -> str:
    return f"{HEADINGS.get(metric, metric)} ({UNITS.get(metric, '')})"


def _rows_of(data: RunData, target: str, label: str) -> str:
    rows = step_rows(data.steps, target, label)
    return "steps.csv row" + ("s " if len(rows) > 1 else " ") + ", ".join(map(str, rows))


def _cell(data: RunData, verdicts: Verdicts, label: str, target: str, leader: str,
          metric: str, row: Any) -> MatrixCell:  # fmt: skip
    value = row[metric] if metric in row else float("nan")
    digits = DIGITS.get(metric, 2)
    text = f"{fmt.num(value, digits)} {UNITS.get(metric, '')}" if fmt.finite(value) else "n/a"
    source = f"{_rows_of(data, target, label)} ({target}, {label}, {metric})"
    if target == leader:
        return MatrixCell(text, "", "v-leader", "leader", source, fmt.sortkey(value))
    cell = verdicts.cell(label, target, leader, metric)
    if cell is MISSING:
        return MatrixCell(text, "", "v-none", "no verdict", source, fmt.sortkey(value))
    # too few samples: the run refused the figure, so no ratio is shown for it either
    ratio = "" if cell.word == "insufficient data" else fmt.ratio(cell.ratio, cell.low, cell.high)
    return MatrixCell(text, ratio, cell.css, _word(cell.word), source, fmt.sortkey(value))


def _word(word: str) -> str:
    return {"faster": "better", "slower": "worse", "no significant difference": "same"}.get(
        word, word
    )


def _why(data: RunData, row: Any) -> str:
    name = str(row.target)
    info = next((t for t in data.targets if t.get("name") == name), {})
    if info.get("status") not in ("ok", None):
        return f"target {info.get('status')}"
    fidelity = info.get("fidelity") or {}
    if fidelity.get("passed") is False:
        return "wrong answers (fidelity check failed)"
    if bool(row.ineligible):
        return str(row.ineligible_reason or "not eligible")
    return "not trusted"


def _floor_line(data: RunData, rows: pd.DataFrame, metrics: list[str]) -> str:
    floors = rows[rows["target"].isin(data.baselines())]
    if floors.empty:
        return ""
    row = floors.iloc[0]
    parts = [f"{HEADINGS.get(m, m)} {fmt.num(row[m], DIGITS.get(m, 2))} {UNITS.get(m, '')}"
             for m in metrics if m in row and fmt.finite(row[m])]  # fmt: skip
    return (f"Reference, not a contender: the model called in-process without a server "
            f"({row['target']}): {', '.join(parts)}.")  # fmt: skip
