"""The decision a run supports: which target to run for this SLO, and why.

Built from what the run folder says (summary.json's answers, the pairwise verdicts, the
variants' validation): the recommended target, by how much it beats the runner-up (the
verdicts' ratio and interval at the recommended target's level, and their word), what it
costs, its caveats, the best alternative for low latency, and what each variant gained or
cost. A target that failed, answered wrongly, had errors or a confound is never
recommended (summary.py only ranks trusted, eligible steps); when none can be, the
decision says why. The report's first screen and the terminal's last lines show it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.report import fmt
from harness.report.verdicts_view import MISSING, Cell, Verdicts
from harness.results import RunData, settings_without_address
from harness.summary import rankable


@dataclass
class Standing:
    """One target's line in the decision's table."""

    target: str
    value: float  # what it is ranked on: req/s (or output tok/s) under the SLO
    level: str  # where it reached it
    p_slo_ms: float  # its SLO percentile there
    cost: str  # "0.42 ¢ per million inferences" (or output tokens)
    caveats: list[str]


@dataclass
class Decision:
    headline: str  # "Run X." or "No target can be recommended."
    pick: str | None
    unit: str  # "req/s" or "output tok/s"
    reasons: list[str] = field(default_factory=list)  # sentences after the headline
    versus: str = ""  # by how much it beats the runner-up, how sure
    versus_css: str = ""
    cost: str = ""
    caveats: list[str] = field(default_factory=list)
    low_latency: str = ""  # the best alternative when latency matters most
    variants: list[str] = field(default_factory=list)  # what each variant gained or cost
    table: list[Standing] = field(default_factory=list)  # the top five
    why_none: list[str] = field(default_factory=list)  # when nothing can be recommended


def cents(usd_per_million: Any) -> str:
    """Dollars per million as cents when under a dollar (0.42 ¢), else dollars ($3.10)."""
    if not fmt.finite(usd_per_million):
        return fmt.NO_VALUE
    if usd_per_million < 1:
        digits = 2 if usd_per_million >= 0.01 else 3
        return f"{usd_per_million * 100:,.{digits}f} \u00a2"
    return f"${usd_per_million:,.2f}"


def price_text(price: dict[str, Any], as_of: str | None = None) -> str:
    """Where the price came from: "cpu-2vcpu at $0.08/h (servingbench's price table)"."""
    source = {"scenario": "the scenario's cost.usd_per_hour",
              "price table": "servingbench's illustrative price table"}.get(
        str(price.get("source")), str(price.get("source") or "unknown"))  # fmt: skip
    when = f", as of {as_of}" if as_of else ""
    usd = price.get("usd_per_hour")
    rate = f"${usd:,.2f}/h" if fmt.finite(usd) else "an unknown price"
    return f"{price.get('hardware')} at {rate} ({source}{when})"


def decide(data: RunData, summary: dict[str, Any], verdicts: Verdicts) -> Decision:
    llm = "highest_output_tokens_within_slo" in summary.get("winners", {})
    key = "output_tokens_per_s_within_slo" if llm else "throughput_under_slo_rps"
    level_key = "tokens_at_level" if llm else "at_level"
    cost_key = "usd_per_million_output_tokens" if llm else "usd_per_million"
    unit = "output tok/s" if llm else "req/s"
    per = "per million output tokens" if llm else "per million inferences"
    targets: dict[str, dict[str, Any]] = summary.get("targets", {})
    ranked = sorted(
        (n for n, t in targets.items() if rankable(t) and fmt.finite(t.get(key))),
        key=lambda n: -float(targets[n][key]),
    )
    slo = summary.get("slo") or {}
    slo_text = _token_slo_text(slo) if llm else _slo_text(slo, data.slo_percentile)
    table = [
        Standing(n, float(targets[n][key]), str(targets[n].get(level_key) or ""),
                 _num(targets[n].get("slo_percentile_ms_there")),
                 f"{cents(targets[n].get(cost_key))} {per}", list(targets[n].get("caveats") or []))
        for n in ranked[:5]
    ]  # fmt: skip
    if not ranked:
        return Decision("No target can be recommended for this SLO.", None, unit,
                        why_none=_why_none(data, targets, slo_text), table=table)  # fmt: skip
    pick = ranked[0]
    info = targets[pick]
    level = str(info.get(level_key) or "")
    decision = Decision(f"Run {pick}.", pick, unit, table=table)
    decision.reasons.append(
        f"It serves {fmt.num(info[key], 0)} {unit} within {slo_text} (at {level}), the most of "
        f"{len(ranked)} target(s) that answered correctly, without errors or confounds."
    )
    if len(ranked) > 1:
        second = ranked[1]
        metric = "output_tokens_per_s" if llm else _rate_metric(data, level)
        cell = verdicts.cell(level, pick, second, metric) if metric else MISSING
        decision.versus, decision.versus_css = versus_text(pick, second, cell, metric, level)
    else:
        decision.versus = "It is the only target that could be ranked: nothing to compare it with."
    usd = info.get(cost_key)
    if fmt.finite(usd):
        decision.cost = (f"{cents(usd)} {per} at that rate, for "
                         f"{price_text(summary.get('price') or {}, _as_of(data))}.")  # fmt: skip
    decision.caveats = list(info.get("caveats") or [])
    decision.low_latency = _low_latency(summary, pick, llm)
    decision.variants = variant_sentences(data, verdicts)
    return decision


def _num(value: Any) -> float:
    return float(value) if fmt.finite(value) else math.nan


def _slo_text(slo: dict[str, Any], percentile: float | None) -> str:
    limit = slo.get("latency_ms")
    q = percentile if percentile is not None else 99
    return f"the SLO (p{q:g} \u2264 {fmt.num(limit, 0)} ms)" if fmt.finite(limit) else "the SLO"


def _token_slo_text(slo: dict[str, Any]) -> str:
    limits = [f"{name} \u2264 {fmt.num(slo[key], 0)} ms" for key, name in
              (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")) if fmt.finite(slo.get(key))]  # fmt: skip
    if not limits:
        return "valid steps (no token SLO set)"
    return f"the token SLO ({', '.join(limits)} for 99% of generations)"


def _rate_metric(data: RunData, level: str) -> str | None:
    """Throughput tells targets apart only in closed loop: in open loop the schedule sets it
    (every target that keeps up has the same), so the SLO percentile decides there."""
    mode = data.steps.loc[data.steps["label"] == level, "mode"]
    if len(mode) and str(mode.iloc[0]) == "open":
        return "p99_ms" if (data.slo_percentile or 99) >= 90 else "p50_ms"
    return "throughput_rps"


_WHAT = {"throughput_rps": "the throughput", "output_tokens_per_s": "the output tokens/s",
         "p99_ms": "the p99 latency", "p50_ms": "the median latency"}  # fmt: skip


def versus_text(
    pick: str, second: str, cell: Cell, metric: str | None, level: str
) -> tuple[str, str]:
    """E.g. "1.32x [1.25-1.40] the throughput of the runner-up, B, at closed c=16: ..."."""
    what = _WHAT.get(metric or "", "")
    if cell is MISSING or not fmt.finite(cell.ratio):
        return f"Runner-up: {second} (no verdict between them at {level}).", "v-none"
    ratio = fmt.ratio(cell.ratio, cell.low, cell.high)
    text = f"{ratio} {what} of the runner-up, {second}, at {level}"
    if cell.word == "insufficient data":
        return f"{text}: too few samples to say how sure.", "v-insufficient"
    if cell.word == "no significant difference":
        return (f"{text}: not a significant difference (the interval includes no change "
                "beyond the noise margin). Choose between them on cost, memory or operations.",
                "v-same")  # fmt: skip
    better = cell.word == "faster"
    return (f"{text}: significantly {'better' if better else 'worse'} (95% interval).",
            "v-faster" if better else "v-slower")  # fmt: skip


def _low_latency(summary: dict[str, Any], pick: str, llm: bool) -> str:
    winners = summary.get("winners") or {}
    lowest = winners.get("lowest_ttft" if llm else "lowest_p99")
    if not isinstance(lowest, dict) or not lowest.get("target"):
        return ""
    name = "TTFT p99" if llm else "p99"
    if lowest.get("metric") == "ttft_p90_ms":
        name = "TTFT p90"
    if lowest["target"] == pick:
        return f"It also has the lowest {name} ({fmt.num(lowest['value'], 2)} ms)."
    return (f"For the lowest latency instead: {lowest['target']} "
            f"({name} {fmt.num(lowest['value'], 2)} ms at its best level).")  # fmt: skip


def _as_of(data: RunData) -> str | None:
    started = data.run.get("started_at")
    return str(started)[:10] if isinstance(started, str) and started else None


def _why_none(data: RunData, targets: dict[str, dict[str, Any]], slo_text: str) -> list[str]:
    reasons = []
    for name, t in targets.items():
        if t.get("baseline"):
            continue
        if t.get("status") != "ok":
            reasons.append(f"{name}: {t.get('status')}")
        elif not t.get("fidelity_passed"):
            reasons.append(f"{name}: its answers did not match the model's (fidelity check)")
        elif t.get("confound"):
            reasons.append(f"{name}: not ranked: {t['confound']}")
        else:
            caveat = "; ".join(t.get("caveats") or [])
            steps = data.steps[data.steps["target"] == name]
            if len(steps) and steps["slo_percentile_ms"].isna().all():
                few = f"too few samples for a p{data.slo_percentile or 99:g} in every step"
                caveat = "; ".join(x for x in (few, caveat) if x)
            reasons.append(
                f"{name}: no step within {slo_text}" + (f" ({caveat})" if caveat else "")
            )
    if not reasons:
        reasons.append("no target other than the in-process floor ran")
    return reasons


def variant_sentences(data: RunData, verdicts: Verdicts) -> list[str]:
    """What each variant gained or cost against the reference build on the same stack:
    throughput at the highest closed-loop level both ran, and accuracy."""
    targets = [t for t in data.targets if not t.get("baseline")]
    reference = _reference_variant(data)
    accuracy = {str(v.get("name")): v.get("validation") or {} for v in data.variants}
    steps = data.steps
    closed = steps[steps["mode"] == "closed"]
    out = []
    for target in targets:
        variant = str(target.get("variant") or "")
        if not variant or variant == reference:
            continue
        twin = _twin(targets, target, reference)
        if twin is None:
            continue
        name, other = str(target["name"]), str(twin["name"])
        both = closed[closed["target"].isin([name, other])]
        levels = both.groupby("label")["target"].nunique()
        common = [lbl for lbl in levels.index if levels[lbl] == 2]
        if not common:
            continue
        top = max(common, key=lambda lbl: float(both.loc[both["label"] == lbl, "level"].max()))
        cell = verdicts.cell(top, name, other, "throughput_rps")
        speed = _speed_words(cell)
        v = accuracy.get(variant, {})
        acc, ref = v.get("accuracy"), v.get("reference_accuracy")
        drop = (ref - acc) * 100 if fmt.finite(acc) and fmt.finite(ref) else None
        if v.get("cosine_mean") is not None:  # a sentence encoder: how close to fp32
            acc_text = f"mean cosine {v['cosine_mean']:.4f} with the fp32 embeddings"
        elif drop is None:
            acc_text = "accuracy not measured"
        else:
            acc_text = "accuracy unchanged" if abs(drop) < 0.05 else f"accuracy {-drop:+.1f} points"
        out.append(f"{variant} on {target.get('adapter')} ({name} vs {other}, {top}): "
                   f"{speed}; {acc_text}.")  # fmt: skip
    return out


def _reference_variant(data: RunData) -> str:
    names = [str(v.get("name")) for v in data.variants]
    for preferred in ("eager", "f32", "fp32"):
        if preferred in names:
            return preferred
    return names[0] if names else ""


def _twin(
    targets: list[dict[str, Any]], target: dict[str, Any], reference: str
) -> dict[str, Any] | None:
    """The target on the same stack with the same settings, serving the reference variant
    (else any other variant of the same stack and settings)."""
    same = [t for t in targets if t is not target and t.get("adapter") == target.get("adapter")
            and _settings(t) == _settings(target)]  # fmt: skip
    for t in same:
        if t.get("variant") == reference:
            return t
    return None


def _settings(target: dict[str, Any]) -> Any:
    return settings_without_address(target.get("settings"))


def _speed_words(cell: Cell) -> str:
    if cell is MISSING or not fmt.finite(cell.ratio):
        return "speed not compared"
    ratio = fmt.ratio(cell.ratio, cell.low, cell.high)
    if cell.word == "faster":
        return f"{ratio} the throughput, significantly faster"
    if cell.word == "slower":
        return f"{ratio} the throughput, significantly slower"
    if cell.word == "insufficient data":
        return f"{ratio} the throughput (too few samples to judge)"
    return f"{ratio} the throughput, no significant difference"


def decision_json(decision: Decision) -> dict[str, Any]:
    """The decision for `--json` and summary consumers (no NaN)."""
    return {
        "pick": decision.pick,
        "headline": decision.headline,
        "reasons": decision.reasons,
        "versus": decision.versus,
        "cost": decision.cost,
        "caveats": decision.caveats,
        "low_latency": decision.low_latency,
        "variants": decision.variants,
        "why_none": decision.why_none,
        "top": [
            {"target": s.target, "value": s.value if math.isfinite(s.value) else None,
             "unit": decision.unit, "level": s.level,
             "slo_percentile_ms": s.p_slo_ms if math.isfinite(s.p_slo_ms) else None,
             "cost": s.cost, "caveats": s.caveats}
            for s in decision.table
        ],
    }  # fmt: skip


def frame_of(decision: Decision) -> pd.DataFrame:
    return pd.DataFrame([s.__dict__ for s in decision.table])
