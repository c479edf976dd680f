"""A tuning run's section: each stack at its best configuration, beside its hand-set one.

Read from the run folder alone (`RunData.tuning()`: tune/tune.json and tune/trials.csv;
the re-measured hand-set and best targets are the run's own steps and verdicts). For each
stack: the hand-set configuration and its re-measured figure, the best configuration found
(in full) and its re-measured figure, the gain with its verdict, and the search (trials
complete / pruned / failed / skipped, time, convergence). Then the verdict between the
re-measured bests (the run's verdicts.csv, block bootstrap of both sides' records).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.report.verdicts_view import load_verdicts
from harness.results import RunData
from harness.tuning_space import objective_value

TUNED_SUFFIX = ".tuned"  # as harness/tuning.py names a stack's re-measured best


@dataclass
class StackRow:
    stack: str
    adapter: str
    hand_config: dict[str, Any]
    best_config: dict[str, Any] | None
    best_params: dict[str, Any]
    best_trial: int | None
    hand_value: float | None  # re-measured (mean over repeats)
    best_value: float | None
    search_value: float | None  # the best figure the search itself measured
    gain: float | None  # tuned / hand (maximise) or hand / tuned (minimise): > 1 is better
    gain_word: str  # the verdict of tuned against hand-set
    gain_ci: tuple[float, float] | None
    counts: dict[str, int]
    search_s: float
    space: dict[str, str]
    notes: list[str]
    unit: str

    @property
    def hand_text(self) -> str:
        return _figure(self.hand_value, self.unit)

    @property
    def best_text(self) -> str:
        return _figure(self.best_value, self.unit)

    @property
    def gain_text(self) -> str:
        if self.gain is None:
            if self.hand_value == 0 and self.best_value:
                return "hand-set misses the SLO; tuned meets it"
            return "-"
        return f"x{self.gain:.2f} ({self.gain_word})"

    @property
    def best_settings_text(self) -> str:
        if not self.best_params:
            return "none found"
        return ", ".join(f"{k}={_value(v)}" for k, v in self.best_params.items())

    @property
    def trials_text(self) -> str:
        return ", ".join(f"{n} {state}" for state, n in self.counts.items() if n)

    @property
    def hand_json(self) -> str:
        return json.dumps(self.hand_config, sort_keys=True)

    @property
    def best_json(self) -> str:
        return json.dumps(self.best_config, sort_keys=True) if self.best_config else ""


@dataclass
class TuningView:
    headline: str
    objective: str
    search: str
    stacks: list[StackRow]
    verdict: str  # between the re-measured bests
    pairs: list[dict[str, Any]]  # every pair of bests: a, b, ratio, interval, word
    convergence: pd.DataFrame  # stack, trial, value, best, state
    trials: list[dict[str, Any]] = field(default_factory=list)
    maximise: bool = True
    unit: str = "req/s"


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _figure(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f} {unit}" if unit != "ms" else f"{value:.2f} ms"


def _remeasured(data: RunData, target: str, kind: str, family: str) -> float | None:
    """A re-measured target's figure: the objective per repeat, averaged."""
    steps = data.steps[data.steps["target"] == target]
    if steps.empty or target not in data.trusted():
        return None
    scenario = data.scenario
    from harness.scenario import SloSpec

    slo = SloSpec.model_validate(scenario.get("slo") or {})
    values = []
    for _, rows in steps.groupby("repeat"):
        value, _ = objective_value(rows, kind, slo, family)
        if value is not None:
            values.append(value)
    return sum(values) / len(values) if values else None


def _pair(frame: pd.DataFrame, a: str, b: str, metric: str) -> dict[str, Any] | None:
    """The verdict of a against b on `metric` (whichever way the file has the pair)."""
    rows = frame[(frame["metric"] == metric)]
    forward = rows[(rows["target_a"] == a) & (rows["target_b"] == b)]
    if not forward.empty:
        r = forward.iloc[0]
        return {"a": a, "b": b, "ratio": r["ratio"], "low": r["ci_low"], "high": r["ci_high"],
                "word": r["verdict"], "label": r["label"]}  # fmt: skip
    backward = rows[(rows["target_a"] == b) & (rows["target_b"] == a)]
    if backward.empty:
        return None
    r = backward.iloc[0]
    flip = {"faster": "slower", "slower": "faster"}
    inv = lambda x: 1 / x if x and math.isfinite(x) else math.nan  # noqa: E731
    return {"a": a, "b": b, "ratio": inv(r["ratio"]), "low": inv(r["ci_high"]),
            "high": inv(r["ci_low"]), "word": flip.get(r["verdict"], r["verdict"]),
            "label": r["label"]}  # fmt: skip


def _better_word(word: str, maximise: bool) -> str:
    """The verdict's word said as better/worse for the objective."""
    if word == "faster":
        return "significantly better"
    if word == "slower":
        return "significantly worse"
    return str(word)


def convergence(trials: pd.DataFrame, maximise: bool) -> pd.DataFrame:
    """Per stack and trial: its figure (complete trials) and the best so far."""
    rows = []
    for stack, group in trials.groupby("stack", sort=False):
        best = math.nan
        for _, t in group.sort_values("trial").iterrows():
            value = t["value"] if t["state"] == "complete" else math.nan
            if isinstance(value, float) and math.isfinite(value):
                better = value > best if maximise else value < best
                best = value if (math.isnan(best) or better) else best
            rows.append({"stack": str(stack), "trial": int(t["trial"]), "state": str(t["state"]),
                         "value": value, "best": best})  # fmt: skip
    return pd.DataFrame(rows, columns=["stack", "trial", "state", "value", "best"])


def tuning_view(data: RunData) -> TuningView | None:
    tuning = data.tuning()
    if tuning is None:
        return None
    info = tuning.info
    objective = info.get("objective") or {}
    kind = str(objective.get("kind", "max_throughput"))
    maximise = kind != "min_latency"
    family = data.family
    unit = "ms" if not maximise else ("output tok/s" if family == "generate" else "req/s")
    frame = load_verdicts(data).frame
    metric = "p99_ms" if not maximise else "throughput_rps"
    trials = tuning.trials
    bests = info.get("bests") or {}
    stacks: list[StackRow] = []
    targets = {str(t.get("name")): t for t in data.targets}
    for name, stack in (info.get("stacks") or {}).items():
        best = bests.get(name) or {}
        mine = trials[trials["stack"] == name]
        counts = {s: int((mine["state"] == s).sum())
                  for s in ("complete", "pruned", "failed", "skipped")}  # fmt: skip
        hand_value = _remeasured(data, name, kind, family)
        tuned = f"{name}{TUNED_SUFFIX}"
        best_value = _remeasured(data, tuned, kind, family) if best else None
        gain = None
        if hand_value and best_value:
            gain = best_value / hand_value if maximise else hand_value / best_value
        pair = _pair(frame, tuned, name, metric) if best else None
        word = _better_word(str(pair["word"]), maximise) if pair else "no verdict"
        ci = (float(pair["low"]), float(pair["high"])) if pair else None
        hand_settings = (targets.get(name) or {}).get("settings") or {}
        stacks.append(StackRow(
            stack=name, adapter=str(stack.get("adapter", "")),
            hand_config={k: v for k, v in hand_settings.items() if k != "prompt_cache"}
            if hand_settings else {}, best_config=best.get("config"),
            best_params=best.get("params") or {}, best_trial=best.get("trial"),
            hand_value=hand_value, best_value=best_value, search_value=best.get("value"),
            gain=gain, gain_word=word, gain_ci=ci, counts=counts,
            search_s=float((info.get("search_s") or {}).get(name, 0.0)),
            space=stack.get("space") or {}, notes=list(stack.get("notes") or []), unit=unit,
        ))  # fmt: skip
    pairs = []
    tuned_names = [f"{s.stack}{TUNED_SUFFIX}" for s in stacks if s.best_config]
    for i, a in enumerate(tuned_names):
        for b in tuned_names[i + 1 :]:
            found = _pair(frame, a, b, metric)
            if found:
                pairs.append({**found, "word": _better_word(str(found["word"]), maximise)})
    ranked = sorted((s for s in stacks if s.best_value is not None),
                    key=lambda s: s.best_value or 0.0, reverse=maximise)  # fmt: skip
    if not ranked:
        headline = "No stack has a re-measured best configuration."
        verdict = ""
    else:
        top = ranked[0]
        gained = f", x{top.gain:.2f} its hand-set" if top.gain else ""
        headline = (f"Tuned against tuned: run {top.stack} at "
                    f"{top.best_settings_text or 'its hand-set configuration'}"
                    f" ({top.best_text}{gained}).")  # fmt: skip
        verdict = ""
        if len(ranked) > 1:
            second = ranked[1]
            found = _pair(frame, f"{top.stack}{TUNED_SUFFIX}", f"{second.stack}{TUNED_SUFFIX}",
                          metric)  # fmt: skip
            if found:
                verdict = (f"Best against best: {top.stack} {_figure(top.best_value, unit)} vs "
                           f"{second.stack} {_figure(second.best_value, unit)}, ratio "
                           f"{found['ratio']:.2f} [{found['low']:.2f}, {found['high']:.2f}] "
                           f"at {found['label']}: "
                           f"{_better_word(str(found['word']), maximise)}.")  # fmt: skip
    search = info.get("search") or {}
    search_text = (f"{search.get('kind', 'tpe')} search (Optuna), at most "
                   f"{search.get('trials')} trials and {info.get('budget_s_per_stack', 0):.0f} s "
                   f"per stack; probe {search.get('probe_s') or 'off'} s, a trial "
                   f"{float(search.get('prune_margin', 0)):.0%} below the best probe stops; "
                   f"bests and hand-set re-measured {info.get('repeats')} times")  # fmt: skip
    slo = data.scenario.get("slo") or {}
    objective_text = (
        f"most {unit} within the SLO (p{slo.get('percentile', 99):g} <= "
        f"{slo.get('latency_ms', 0):g} ms, errors <= {slo.get('max_error_rate', 0):g})"
        if maximise else f"lowest p{slo.get('percentile', 99):g} at {objective.get('rate')} req/s"
    )  # fmt: skip
    rows = []
    for _, t in trials.iterrows():
        rows.append({"stack": t["stack"], "trial": t["trial"], "state": t["state"],
                     "value": t["value"], "probe": t["probe_value"], "seconds": t["seconds"],
                     "params": ", ".join(f"{k}={_value(v)}" for k, v in t["params"].items()),
                     "reason": t["reason"]})  # fmt: skip
    return TuningView(headline, objective_text, search_text, stacks, verdict, pairs,
                      convergence(trials, maximise), rows, maximise, unit)  # fmt: skip
