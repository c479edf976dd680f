"""`servingbench compare`: did anything get significantly worse between a base and a new side?

A side is one run or several (a baseline store's history). The unit of evidence is a
*repeat*: one (run, repeat) measurement of a (target, level), so the interval reflects how
much whole measurements vary from one to the next (other load on the machine, CPU
frequency, cache state), not only the noise inside one. Intervals within a run (a block
bootstrap) are narrower than that, and cried wolf on unchanged code.

For each (target, level, metric) with a value on both sides:

- two or more units on a side: Welch's t on the logs gives the ratio new/base with its 95%
  interval and the smallest change the data could detect (80% power); one unit on one side
  borrows the other side's spread (a new run against a history of baselines);
- one unit on each side: the run-to-run spread is unknown, so the within-run interval is
  shown and the row is *inconclusive*, never gated;
- the control: the in-process floor (a target marked `baseline`) is measured in every run.
  When the floor itself moved at that level, the machine moved: a target's change is judged
  relative to the floor's, and a change the machine explains is attributed to it;
- a regression is a change whose whole interval lies beyond the threshold (latency up,
  throughput down); a step the new run could not rank (errors, a dead server, wrong
  answers) where the base one could is a regression of its own kind ("broken");
- steps with insufficient data on either side are never gated.

Differences that make numbers incomparable (scenario content, target settings, served-stack
versions, hardware, target sets) are listed first, as `Mismatch`es.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.confidence import ratio_ci
from harness.errors import ServingBenchError
from harness.results import RunData, load_run, settings_without_address
from harness.verdicts import METRICS, _record_metrics, side_of

CONFIDENCE = 0.95
POWER = 0.80
MACHINE_MARGIN = 0.03  # a floor that moved less than this did not move (the verdicts' margin)

# words of a row, most severe first
REGRESSION, BROKEN, MACHINE = "regression", "broken", "machine"
IMPROVEMENT, NO_CHANGE = "improvement", "no change"
INCONCLUSIVE, INSUFFICIENT, NOT_COMPARABLE = "inconclusive", "insufficient data", "not comparable"

# scenario keys that do not change what is measured (names, text, how many repeats, prices)
_SCENARIO_IGNORED = {"name", "description", "targets", "repeats", "cost", "report"}
# targets.json keys that describe one run of a target, not its settings
_TARGET_KEYS = ("adapter", "variant", "launcher", "settings", "baseline")
_HARDWARE_KEYS = ("cpu_model", "cores", "memory_gb", "gpus")


@dataclass
class Change:
    target: str
    label: str
    metric: str
    value_a: float  # base: the mean over its units (geometric, like the ratio)
    value_b: float  # new
    ratio: float  # new / base
    ci_low: float
    ci_high: float
    n_a: int  # units (run x repeat) on each side
    n_b: int
    detectable: float  # smallest change (fraction) the data could detect; NaN: unknown
    machine: bool  # the floor moved at this level and the ratio is judged against it
    word: str  # regression, broken, machine, improvement, no change, inconclusive, ...
    reason: str
    regression: bool  # what the gate fails on (word regression or broken)
    improvement: bool


@dataclass(frozen=True)
class Mismatch:
    kind: str  # scenario, hardware, targets, target settings, versions
    what: str
    base: str
    new: str
    blocking: bool  # the numbers cannot be compared (scenario content, hardware)

    def line(self) -> str:
        return f"{self.kind}: {self.what}: {self.base} -> {self.new}"


@dataclass
class Comparison:
    base: list[Path]
    new: list[Path]
    threshold: float
    changes: pd.DataFrame
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the machine: floor, load generator

    @property
    def regressions(self) -> pd.DataFrame:
        return self.changes[self.changes["regression"]] if len(self.changes) else self.changes

    @property
    def gated(self) -> int:
        """Rows that could have failed the gate (a between-run interval on both sides)."""
        if not len(self.changes):
            return 0
        words = self.changes["word"]
        return int(words.isin([REGRESSION, BROKEN, MACHINE, IMPROVEMENT, NO_CHANGE]).sum())

    @property
    def underpowered(self) -> pd.DataFrame:
        """Gated rows whose data could not detect a change as small as the threshold."""
        if not len(self.changes):
            return self.changes
        rows = self.changes
        return rows[rows["word"].isin([NO_CHANGE, MACHINE]) & (rows["detectable"] > self.threshold)]

    def exit_code(self, allow_mismatch: bool = False) -> int:
        """0: no regression; 1: a significant regression; 2: cannot be compared (nothing in
        common, or a blocking mismatch); 3: nothing regressed, but nothing could be gated."""
        if not len(self.changes) or (
            not allow_mismatch and any(m.blocking for m in self.mismatches)
        ):
            return 2
        if self.changes["regression"].any():
            return 1
        return 0 if self.gated else 3

    def to_json(self) -> dict[str, Any]:
        return {
            "base": [str(p) for p in self.base],
            "new": [str(p) for p in self.new],
            "threshold": self.threshold,
            "mismatches": [asdict(m) for m in self.mismatches],
            "notes": self.notes,
            "changes": [
                {
                    k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in row.items()
                }
                for row in self.changes.to_dict("records")
            ],
            "exit_code": self.exit_code(),
        }


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Estimate:
    """log(new) - log(base) with its standard error and degrees of freedom."""

    diff: float
    se: float
    df: float

    def interval(self) -> tuple[float, float]:
        if self.se == 0:
            return math.exp(self.diff), math.exp(self.diff)
        half = _t(0.5 + CONFIDENCE / 2, self.df) * self.se
        return math.exp(self.diff - half), math.exp(self.diff + half)

    def detectable(self) -> float:
        """The smallest change (as a fraction) a two-sided 5% test detects with 80% power."""
        t = _t(0.5 + CONFIDENCE / 2, self.df) + _t(POWER, self.df)
        return math.expm1(t * self.se)

    def minus(self, other: Estimate) -> Estimate:
        """This change relative to another (independent) one: the target against the floor."""
        return Estimate(
            self.diff - other.diff, math.hypot(self.se, other.se), min(self.df, other.df)
        )


def _t(q: float, df: float) -> float:
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf(q, df))


def estimate(base: np.ndarray, new: np.ndarray) -> Estimate | None:
    """Welch on logs; a side with one unit borrows the other's spread; None without any."""
    la, lb = np.log(base), np.log(new)
    na, nb = len(la), len(lb)
    diff = float(lb.mean() - la.mean())
    if na >= 2 and nb >= 2:
        va, vb = float(la.var(ddof=1)) / na, float(lb.var(ddof=1)) / nb
        se2 = va + vb
        if se2 == 0:
            return Estimate(diff, 0.0, float(na + nb - 2))
        df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        return Estimate(diff, math.sqrt(se2), df)
    if na + nb >= 3:  # one side single: the other side's spread for both
        many = la if na >= 2 else lb
        s = float(many.std(ddof=1))
        return Estimate(diff, s * math.sqrt(1 / na + 1 / nb), float(len(many) - 1))
    return None


# ---------------------------------------------------------------- the comparison


def compare_runs(
    run_a: Path | Sequence[Path], run_b: Path | Sequence[Path], threshold: float = 0.10
) -> pd.DataFrame:
    """The changes table alone (see `compare`)."""
    return compare(_paths(run_a), _paths(run_b), threshold).changes


def _paths(value: Path | Sequence[Path]) -> list[Path]:
    return [Path(value)] if isinstance(value, str | Path) else [Path(p) for p in value]


def compare(base: Sequence[Path], new: Sequence[Path], threshold: float = 0.10) -> Comparison:
    if threshold <= 0:
        raise ServingBenchError(f"--threshold: expected a fraction above 0, got {threshold}")
    runs_a, runs_b = [load_run(p) for p in base], [load_run(p) for p in new]
    metrics = (*METRICS, *((m.column, m.key, m.higher_is_better) for m in _record_metrics()))
    units_a, units_b = _units(runs_a), _units(runs_b)
    status_a, status_b = _statuses(runs_a), _statuses(runs_b)
    floors = set.intersection(*(r.baselines() for r in runs_a + runs_b))
    result = Comparison(list(base), list(new), threshold, pd.DataFrame())
    result.mismatches = mismatches(runs_a, runs_b)
    rows: list[Change] = []
    floor_moves: dict[tuple[str, str], Estimate] = {}
    for label, target in _keys(units_a, units_b, floors):  # floors first: the control
        group_a, group_b = units_a.get((target, label)), units_b.get((target, label))
        if group_a is None or group_b is None:
            continue
        for column, key, higher in metrics:
            core = column in {m[0] for m in METRICS}  # a family's own metric, where it has it
            if not core and not (group_a[column].notna().any() or group_b[column].notna().any()):
                continue
            change = _change(
                target,
                label,
                column,
                key,
                higher,
                group_a,
                group_b,
                runs_a,
                runs_b,
                threshold,
                floor_moves.get((label, column)),
            )
            if target in floors and change.word != INSUFFICIENT:
                found = _estimate(group_a, group_b, column)
                if found is not None and _moved(found):
                    floor_moves[(label, column)] = found
                    lo, hi = found.interval()
                    result.notes.append(
                        f"the floor ({target}) moved x{math.exp(found.diff):.3f} "
                        f"[{lo:.3f}, {hi:.3f}] on {label} {column}: the machine, not the "
                        "targets; their changes there are judged against it"
                    )
                change.word, change.regression, change.improvement = "floor", False, False
                change.reason = "the control: never gated"
            rows.append(change)
    rows += _broken_targets(status_a, status_b, units_b)
    result.changes = pd.DataFrame(
        [asdict(r) for r in rows], columns=list(Change.__dataclass_fields__)
    )
    result.notes += _calibration_notes(runs_a, runs_b)
    return result


def _keys(
    units_a: dict[tuple[str, str], pd.DataFrame],
    units_b: dict[tuple[str, str], pd.DataFrame],
    floors: set[str],
) -> list[tuple[str, str]]:
    keys = [(label, target) for target, label in units_b if (target, label) in units_a]
    return sorted(keys, key=lambda k: (k[1] not in floors, keys.index(k)))


def _units(runs: list[RunData]) -> dict[tuple[str, str], pd.DataFrame]:
    """Each (target, level)'s units: one steps.csv row per run x repeat, with its run."""
    frames = []
    for index, run in enumerate(runs):
        steps = run.steps.copy()
        steps["_run"] = index
        frames.append(steps)
    steps = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if steps.empty:
        return {}
    groups = steps.groupby(["target", "label"], sort=False)
    return {(str(t), str(lbl)): g for (t, lbl), g in groups}


def _eligible(group: pd.DataFrame) -> tuple[bool, str]:
    bad = group[group["eligible"].astype(str) != "True"]
    if bad.empty:
        return True, ""
    reasons = sorted({str(r) for r in bad["ineligible_reason"] if str(r)})
    return False, "; ".join(reasons) or "not eligible"


def _estimate(group_a: pd.DataFrame, group_b: pd.DataFrame, column: str) -> Estimate | None:
    a, b = group_a[column].to_numpy(float), group_b[column].to_numpy(float)
    if not (np.isfinite(a).all() and np.isfinite(b).all() and (a > 0).all() and (b > 0).all()):
        return None
    return estimate(a, b)


def _moved(found: Estimate) -> bool:
    low, high = found.interval()
    return low > 1 + MACHINE_MARGIN or high < 1 - MACHINE_MARGIN


def _change(
    target: str,
    label: str,
    column: str,
    key: str,
    higher: bool,
    group_a: pd.DataFrame,
    group_b: pd.DataFrame,
    runs_a: list[RunData],
    runs_b: list[RunData],
    threshold: float,
    floor: Estimate | None,
) -> Change:
    a, b = group_a[column].to_numpy(float), group_b[column].to_numpy(float)
    va, vb = _gmean(a), _gmean(b)
    ratio = vb / va if va and math.isfinite(va) and math.isfinite(vb) else math.nan
    row = Change(
        target,
        label,
        column,
        va,
        vb,
        ratio,
        math.nan,
        math.nan,
        len(a),
        len(b),
        math.nan,
        False,
        INSUFFICIENT,
        "",
        False,
        False,
    )
    ok_a, why_a = _eligible(group_a)
    ok_b, why_b = _eligible(group_b)
    if not ok_a:
        row.word, row.reason = NOT_COMPARABLE, f"the base could not be ranked: {why_a}"
        return row
    if not ok_b:
        row.word, row.reason = BROKEN, f"the new run could not be ranked: {why_b}"
        row.regression = True
        return row
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        side = "base" if not np.isfinite(a).all() else "new"
        row.reason = f"the {side} run had too few samples for {column} (never gated)"
        return row
    found = _estimate(group_a, group_b, column)
    if found is None:  # one unit a side: within-run interval, run-to-run spread unknown
        row.ci_low, row.ci_high = _within_run(target, group_a, group_b, runs_a, runs_b, key)
        row.word = INCONCLUSIVE
        row.reason = (
            "one measurement a side: its interval is within a run only; "
            "repeats (load.repeats >= 3) or several base runs measure the rest"
        )
        return row
    row.detectable = found.detectable()
    if floor is not None:
        row.machine = True
        relative = found.minus(floor)
        raw_word = _word(found.interval(), higher, threshold)
        found = relative
    row.ci_low, row.ci_high = found.interval()
    if floor is not None:  # the interval shown is the measured ratio's, re-centred
        shift = math.exp(floor.diff)
        row.ci_low, row.ci_high = row.ci_low * shift, row.ci_high * shift
    word = _word(found.interval(), higher, threshold)
    row.word = word
    if floor is not None and word != REGRESSION and raw_word == REGRESSION:
        row.word = MACHINE
        row.reason = f"within the machine's move (floor x{math.exp(floor.diff):.3f})"
    elif word == NO_CHANGE and row.detectable > threshold:
        row.reason = f"could miss changes under {row.detectable:.0%}"
    row.regression, row.improvement = row.word == REGRESSION, row.word == IMPROVEMENT
    return row


def _word(interval: tuple[float, float], higher: bool, threshold: float) -> str:
    low, high = interval
    worse = high < 1 - threshold if higher else low > 1 + threshold
    better = low > 1 + threshold if higher else high < 1 - threshold
    return REGRESSION if worse else IMPROVEMENT if better else NO_CHANGE


def _gmean(values: np.ndarray) -> float:
    if not len(values) or not np.isfinite(values).all():
        return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else math.nan
    if (values <= 0).any():
        return float(values.mean())
    return float(np.exp(np.log(values).mean()))


def _within_run(
    target: str,
    group_a: pd.DataFrame,
    group_b: pd.DataFrame,
    runs_a: list[RunData],
    runs_b: list[RunData],
    key: str,
) -> tuple[float, float]:
    a = side_of(runs_a[int(group_a["_run"].iloc[0])], target, group_a, seed=1)
    b = side_of(runs_b[int(group_b["_run"].iloc[0])], target, group_b, seed=2)
    if a is None or b is None or key not in a.boot or key not in b.boot:
        return math.nan, math.nan
    return ratio_ci(b.boot[key], a.boot[key])


# ---------------------------------------------------------------- targets that broke


def _statuses(runs: list[RunData]) -> dict[str, dict[str, Any]]:
    """Each target's worst entry over the runs of a side (failed beats ok)."""
    found: dict[str, dict[str, Any]] = {}
    for run in runs:
        for entry in run.targets:
            name = str(entry.get("name"))
            if name not in found or _bad(entry):
                found[name] = entry
    return found


def _bad(entry: dict[str, Any]) -> str:
    if entry.get("status") not in (None, "ok"):
        return f"status {entry.get('status')}: {entry.get('error') or 'no error recorded'}"
    fidelity = entry.get("fidelity")
    if isinstance(fidelity, dict) and fidelity.get("passed") is False:
        return f"fidelity check failed: {fidelity.get('message') or 'wrong answers'}"
    return ""


def _broken_targets(
    status_a: dict[str, dict[str, Any]],
    status_b: dict[str, dict[str, Any]],
    units_b: dict[tuple[str, str], pd.DataFrame],
) -> list[Change]:
    """Targets that were fine in the base and failed, or answered wrongly, in the new run."""
    rows = []
    for name, entry in status_b.items():
        before = status_a.get(name)
        why = _bad(entry)
        if before is None or _bad(before) or not why:
            continue
        rows.append(
            Change(
                name,
                "(target)",
                "status",
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                1,
                1,
                math.nan,
                False,
                BROKEN,
                why,
                True,
                False,
            )
        )
    return rows


# ---------------------------------------------------------------- mismatches


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _differences(
    kind: str, a: dict[str, Any], b: dict[str, Any], blocking: bool, prefix: str = ""
) -> list[Mismatch]:
    flat_a, flat_b = _flat(a), _flat(b)
    keys = list(dict.fromkeys([*flat_a, *flat_b]))
    return [
        Mismatch(kind, prefix + k, _text(flat_a.get(k)), _text(flat_b.get(k)), blocking)
        for k in keys
        if flat_a.get(k) != flat_b.get(k)
    ]


def _text(value: Any) -> str:
    return "(absent)" if value is None else str(value)


def _one(runs: list[RunData], read: Any) -> dict[str, Any]:
    """A side's value of something every run of it should share (the first run's)."""
    return read(runs[0]) if runs else {}


def mismatches(runs_a: list[RunData], runs_b: list[RunData]) -> list[Mismatch]:
    """What differs between the sides, most consequential first. Within a side, runs that
    differ from its first are listed too (a history that changed under it)."""
    found: list[Mismatch] = []
    for side in (runs_a, runs_b):
        for other in side[1:]:
            found += _pair(side[0], other, within=True)
    if runs_a and runs_b:
        found += _pair(runs_a[0], runs_b[0], within=False)
    order = ["scenario", "hardware", "targets", "target settings", "versions"]
    return sorted(found, key=lambda m: order.index(m.kind) if m.kind in order else 99)


def _pair(a: RunData, b: RunData, within: bool) -> list[Mismatch]:
    prefix = f"{a.path.name} vs {b.path.name}: " if within else ""
    found: list[Mismatch] = []
    scenario_a = {k: v for k, v in _with_defaults(a.scenario).items() if k not in _SCENARIO_IGNORED}
    scenario_b = {k: v for k, v in _with_defaults(b.scenario).items() if k not in _SCENARIO_IGNORED}
    found += _differences("scenario", scenario_a, scenario_b, True, prefix)
    hw_a = (a.run.get("provenance") or {}).get("hardware") or {}
    hw_b = (b.run.get("provenance") or {}).get("hardware") or {}
    found += _differences(
        "hardware",
        {k: hw_a.get(k) for k in _HARDWARE_KEYS},
        {k: hw_b.get(k) for k in _HARDWARE_KEYS},
        True,
        prefix,
    )
    names_a, names_b = set(a.target_names()), set(b.target_names())
    for name in sorted(names_a - names_b):
        found.append(Mismatch("targets", prefix + name, "present", "absent", False))
    for name in sorted(names_b - names_a):
        found.append(Mismatch("targets", prefix + name, "absent", "present", False))
    spec_a = {str(t.get("name")): t for t in a.targets}
    spec_b = {str(t.get("name")): t for t in b.targets}
    for name in [n for n in spec_a if n in spec_b]:
        found += _differences(
            "target settings",
            _settings(spec_a[name]),
            _settings(spec_b[name]),
            False,
            f"{prefix}{name}.",
        )
    ver_a = (a.run.get("provenance") or {}).get("versions") or {}
    ver_b = (b.run.get("provenance") or {}).get("versions") or {}
    found += _differences("versions", ver_a, ver_b, False, prefix)
    for name in [n for n in spec_a if n in spec_b]:
        stack_a, stack_b = spec_a[name].get("stack") or {}, spec_b[name].get("stack") or {}
        found += _differences("versions", stack_a, stack_b, False, f"{prefix}{name}.")
    return found


def _with_defaults(scenario: dict[str, Any]) -> dict[str, Any]:
    """A run's scenario as this version reads it: a key a later version added with its
    default (e.g. `burstiness: 1.0`) is no difference from a baseline written before it. A
    scenario this version cannot read is compared as stored."""
    from harness.scenario import scenario_model  # the registry behind it imports adapters

    try:
        return dict(scenario_model().model_validate(scenario).model_dump(mode="json"))
    except Exception:  # an older or foreign shape: its stored keys are all there is
        return scenario


def _settings(entry: dict[str, Any]) -> dict[str, Any]:
    settings = {k: entry.get(k) for k in _TARGET_KEYS}
    settings["settings"] = settings_without_address(settings.get("settings"))
    return settings


# ---------------------------------------------------------------- the load generator


def _calibration_notes(runs_a: list[RunData], runs_b: list[RunData]) -> list[str]:
    """The load generator's own floor, measured in every run against a null server."""

    def figures(runs: Iterable[RunData], key: str) -> list[float]:
        values = [(r.run.get("calibration") or {}).get(key) for r in runs]
        return [float(v) for v in values if isinstance(v, int | float) and v > 0]

    notes = []
    for key, what in (
        ("floor_p50_ms", "latency floor p50"),
        ("client_cpu_us_per_request", "client CPU per request"),
    ):
        a, b = figures(runs_a, key), figures(runs_b, key)
        if a and b:
            before, after = float(np.median(a)), float(np.median(b))
            moved = after / before - 1
            unit = "ms" if key.endswith("_ms") else "us"
            said = "the machine moved" if abs(moved) > 0.10 else "steady"
            notes.append(
                f"load generator {what}: {before:.3g} -> {after:.3g} {unit} ({moved:+.0%}, {said})"
            )
    return notes


# ---------------------------------------------------------------- a baseline store


@dataclass(frozen=True)
class StoredRun:
    path: Path
    scenario: str
    started: str
    revision: str
    status: str
    repeats: int
    headline: str


def stored_runs(root: Path) -> list[StoredRun]:
    """Run folders directly under `root`, oldest first."""
    found = []
    for run_json in Path(root).glob("*/run.json"):
        try:
            run = load_run(run_json.parent)
        except ServingBenchError:
            continue
        git = (run.run.get("provenance") or {}).get("git") or {}
        revision = str(git.get("revision") or "")[:10] + ("+dirty" if git.get("dirty") else "")
        found.append(
            StoredRun(
                run.path,
                str(run.scenario.get("name") or run.run.get("scenario_name") or "?"),
                str(run.run.get("started_at") or ""),
                revision or "-",
                str(run.run.get("status") or "?"),
                int(run.scenario.get("repeats") or 1),
                _headline(run),
            )
        )
    return sorted(found, key=lambda r: (r.started, r.path.name))


def _headline(run: RunData) -> str:
    summary = run.summary() or {}
    lead = (summary.get("winners") or {}).get("highest_throughput_under_slo")
    if isinstance(lead, dict) and lead.get("target"):
        rate = lead.get("value") or lead.get("throughput_rps")
        tail = f" at {float(rate):.0f} req/s" if isinstance(rate, int | float) else ""
        return f"most under the SLO: {lead['target']}{tail}"
    return "no target ranked" if summary else "-"


def pick_baseline(root: Path, new: Sequence[Path], name: str | None, history: int) -> list[Path]:
    """The base side from a store: the named run, or the latest `history` finished runs of
    the new run's scenario (never the new run itself)."""
    stored = stored_runs(root)
    if not stored:
        raise ServingBenchError(f"--baseline {root}: no run folders in it")
    if name is not None:
        for run in stored:
            if run.path.name == name:
                return [run.path]
        known = ", ".join(r.path.name for r in stored[-5:])
        raise ServingBenchError(f"--baseline {root}: no run named {name!r} (latest: {known})")
    scenario = load_run(new[0]).scenario.get("name")
    mine = {p.resolve() for p in new}
    same = [
        r
        for r in stored
        if r.scenario == scenario and r.status == "finished" and r.path.resolve() not in mine
    ]
    if not same:
        raise ServingBenchError(f"--baseline {root}: no finished run of scenario {scenario!r}")
    return [r.path for r in same[-max(1, history) :]]
