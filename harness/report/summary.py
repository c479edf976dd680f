"""The summary: per step label, who leads on throughput and on the SLO percentile, and how sure.

A leader is picked by its point estimate (mean over repeats) among the targets that can be
trusted (fidelity passed, step valid, not the baseline) and then qualified by the pairwise
verdicts: which of the others it is significantly better than, which it is not
distinguishable from, and where the data is too thin to say. Point estimates never stand
alone: a sentence without a verdict says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness import registry
from harness.report.data import RunData
from harness.report.fmt import finite, num, ratio
from harness.report.verdicts_view import SAME, Cell, Verdicts
from harness.workloads.base import Lead as Metric

Segment = tuple[str, bool]  # (text, bold): the template escapes text and bolds names


@dataclass(frozen=True)
class Versus:
    other: str
    cell: Cell  # leader against other


@dataclass(frozen=True)
class Lead:
    metric: Metric
    leader: str
    value: float
    others: list[Versus]  # the other eligible targets, best point estimate first

    def having(self, *words: str) -> list[Versus]:
        return [v for v in self.others if v.cell.word in words]


@dataclass(frozen=True)
class LabelSummary:
    label: str
    sentences: list[list[Segment]]
    floor: list[str]
    excluded: list[tuple[str, str]]  # (target, reason)


def trust_reasons(data: RunData, agg: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """Why a (label, target) row cannot be ranked or trusted; the baseline aside."""
    failed = data.fidelity_failed()
    passed = data.fidelity_passed()
    status = {str(t.get("name")): t.get("status") for t in data.targets}
    reasons: dict[tuple[str, str], list[str]] = {}
    for row in agg.to_dict("records"):
        name, why = str(row["target"]), []
        if name in failed:
            why.append("fidelity check failed")
        elif name not in passed:
            why.append("fidelity not checked")
        if status.get(name) == "failed":
            why.append("target failed")
        if row["loadgen_saturated"]:
            why.append("load generator saturated")
        elif row["invalid"]:
            why.append(f"invalid: {row['invalid_reason']}" if row["invalid_reason"] else "invalid")
        elif row["ineligible"]:  # too many errors, or its server died: never ranked
            why.append(str(row["ineligible_reason"]) or "not eligible for ranking")
        reasons[(str(row["label"]), name)] = why
    return reasons


def summarize(
    data: RunData, agg: pd.DataFrame, labels: list[str], verdicts: Verdicts
) -> list[LabelSummary]:
    reasons = trust_reasons(data, agg)
    baselines = data.baselines()
    # what "best" means is the workload family's to say (request or token throughput, ...)
    metrics = registry.workloads()[data.family].leads(data.slo_percentile)
    result = []
    for label in labels:
        rows = [
            {str(k): v for k, v in r.items()} for r in agg[agg["label"] == label].to_dict("records")
        ]
        excluded: list[tuple[str, str]] = []
        keep: list[dict[str, Any]] = []
        for row in rows:
            name = str(row["target"])
            if name in baselines:
                excluded.append((name, "baseline (the floor), not a serving stack"))
            elif reasons.get((label, name)):
                excluded.extend((name, why) for why in reasons[(label, name)])
            else:
                keep.append(row)
        sentences = [_sentence(label, keep, m, verdicts) for m in metrics]
        floor = [_floor(row, metrics[1]) for row in rows if row["target"] in baselines]
        result.append(LabelSummary(label, sentences, floor, excluded))
    return result


def _lead(
    label: str, rows: list[dict[str, Any]], metric: Metric, verdicts: Verdicts
) -> Lead | None:
    scored = [r for r in rows if finite(r[metric.column])]
    if not scored:
        return None
    ranked = sorted(scored, key=lambda r: float(r[metric.column]), reverse=metric.higher_is_better)
    leader = str(ranked[0]["target"])
    others = [
        Versus(str(r["target"]), verdicts.cell(label, leader, str(r["target"]), metric.column))
        for r in ranked[1:]
    ]
    return Lead(metric, leader, float(ranked[0][metric.column]), others)


def _sentence(
    label: str, rows: list[dict[str, Any]], metric: Metric, verdicts: Verdicts
) -> list[Segment]:
    lead = _lead(label, rows, metric, verdicts)
    if lead is None:
        return [(f"No eligible {metric.name}.", False)]
    value = f"{num(lead.value, metric.digits)} {metric.unit}"
    tied, beaten = lead.having(SAME), lead.having("faster")
    out: list[Segment] = []
    if tied:
        out += _names([lead.leader, *(v.other for v in tied)], bold=True)
        out.append((f" are tied on {metric.name} (no significant difference: ", False))
        out.append(("; ".join(_vs(v) for v in tied), False))
        out.append((f"); {lead.leader} has the best point estimate, {value}", False))
    else:
        out += [(lead.leader, True), (f" has the {metric.best} ({value})", False)]
    if beaten:
        whom = "all others" if len(beaten) == len(lead.others) else _join(v.other for v in beaten)
        lead_in = f": {_vs(beaten[0])}, " if not tied else f"; {lead.leader} is "
        out.append((f"{lead_in}significantly faster than {whom}", False))
    out += _caveats(lead)
    if not lead.others:
        out.append(("; the only eligible target", False))
    out.append((".", False))
    return out


def _caveats(lead: Lead) -> list[Segment]:
    """The others the verdicts cannot place behind the leader."""
    out: list[Segment] = []
    unknown = lead.having("insufficient data")
    missing = lead.having("no verdict")
    contrary = lead.having("slower")
    if unknown:
        out.append((f"; insufficient data vs {_join(v.other for v in unknown)}", False))
    if missing:
        out.append(
            (f"; no verdict vs {_join(v.other for v in missing)} (point estimate only)", False)
        )
    for v in contrary:
        out.append(
            (
                f"; but the pooled records find {v.other} significantly faster "
                f"({lead.leader} is {_vs(v)})",
                False,
            )
        )
    return out


def _vs(v: Versus) -> str:
    """The leader against one other: `1.32x Y [1.25-1.40]` (leader / other)."""
    return ratio(v.cell.ratio, v.cell.low, v.cell.high, of=v.other)


def _names(names: list[str], bold: bool) -> list[Segment]:
    out: list[Segment] = []
    for i, name in enumerate(names):
        if i:
            out.append((" and " if i == len(names) - 1 else ", ", False))
        out.append((name, bold))
    return out


def _join(names: Any) -> str:
    items = list(names)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _floor(row: dict[str, Any], latency: Metric) -> str:
    return (
        f"{row['target']}: {num(row['throughput_rps'], 1)} req/s, "
        f"{latency.name} {num(row[latency.column], 2)} ms"
    )
