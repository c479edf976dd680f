"""`run()` and `load_run()`: a run folder as a `Run` with DataFrames (what the CLI prints,
`--json` included, comes from the same object)."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from harness.observer import Observer
from harness.report.decision import Decision
from harness.results import RunData

_TABLE_ROWS = 5


def run(
    scenario: str | Path,
    *,
    targets: Iterable[str] = (),
    sets: Iterable[str] = (),
    out: str | Path = "results",
    report: bool = True,
    static: bool = False,
    observer: Observer | None = None,
) -> Run:
    """Run a scenario file (with `--set`-style overrides, e.g. ``sets=["repeats=3"]``) and
    return its run folder read back. Raises ConfigError for a bad scenario; a target that
    fails is in `Run.failures`, not an exception."""
    from harness.quiet import quiet
    from harness.runner import run_scenario
    from harness.scenario import load_scenario

    quiet()  # third-party warnings that say nothing about the run, as on the CLI
    loaded = load_scenario(scenario, list(sets))
    outcome = run_scenario(
        loaded,
        scenario_file=str(scenario),
        out_root=Path(out),
        target_names=list(targets),
        observer=observer,
        command=["servingbench.run", str(scenario)],
    )
    result = load_run(outcome.run_dir)
    result.failures = list(outcome.failures)
    if report:
        result.render_report(static=static)
    return result


def load_run(path: str | Path) -> Run:
    """Read a run folder (RunFolderError when `path` is not one)."""
    from harness.results import load_run as read_folder

    return Run(read_folder(Path(path)))


@dataclass
class Run:
    """A run folder, read once: its steps, verdicts, records and the decision they support."""

    data: RunData
    failures: list[str] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def path(self) -> Path:
        return self.data.path

    @property
    def status(self) -> str:
        return str(self.data.run.get("status", "unknown"))

    @property
    def steps(self) -> pd.DataFrame:
        """One row per target x step x repeat, every steps.csv column."""
        return self.data.steps

    @property
    def targets(self) -> pd.DataFrame:
        """One row per target: status, adapter, variant, settings, error."""
        return pd.DataFrame(self.data.targets)

    @cached_property
    def verdicts(self) -> pd.DataFrame:
        """Every pairwise verdict (verdicts.csv, or computed from the records)."""
        from harness.report.verdicts_view import load_verdicts

        return load_verdicts(self.data).frame

    @cached_property
    def summary(self) -> dict[str, Any]:
        """summary.json's content (per-target answers and the winners), rebuilt if absent."""
        from harness.summary import build_summary

        return self.data.summary() or build_summary(self.path)

    @cached_property
    def decision(self) -> Decision:
        """Which target to run for the scenario's SLO, and why (the report's first screen)."""
        from harness.report.decision import decide
        from harness.report.verdicts_view import load_verdicts

        return decide(self.data, self.summary, load_verdicts(self.data))

    def records(self, target: str, label: str | None = None) -> pd.DataFrame:
        """Every recorded request of `target` (one step's when `label` is given): intended,
        sent and end times (ns), status, error, in_window, with the step's label added."""
        rows = self.steps[self.steps["target"].astype(str) == target]
        if label is not None:
            rows = rows[rows["label"].astype(str) == label]
        frames = []
        for row in rows.itertuples():
            found = self.data.records(target, row.step, row.repeat)
            if found is not None:
                frames.append(found.frame.assign(label=str(row.label)))
        if not frames:
            known = sorted(set(self.steps["target"].astype(str))) if len(self.steps) else []
            raise KeyError(f"{self.path}: no records for target {target!r}"
                           + (f" step {label!r}" if label else "")
                           + f" (targets with steps: {', '.join(known) or 'none'})")  # fmt: skip
        return pd.concat(frames, ignore_index=True)

    def render_report(self, output: Path | None = None, static: bool = False) -> Path:
        from harness.report import render_report

        self.report_path = render_report(self.path, output, static=static)
        return self.report_path

    def to_json(self) -> dict[str, Any]:
        """What `servingbench run --json` prints: where, how it ended, the decision."""
        d = self.decision
        return {
            "run_dir": str(self.path),
            "status": self.status,
            "failures": self.failures,
            "report": str(self.report_path) if self.report_path else None,
            "timings": self.data.run.get("timings") or {},  # where the time went, seconds
            "decision": {
                "headline": d.headline,
                "pick": d.pick,
                "unit": d.unit,
                "reasons": d.reasons,
                "versus": d.versus,
                "cost": d.cost,
                "caveats": d.caveats,
                "low_latency": d.low_latency,
                "variants": d.variants,
                "why_none": d.why_none,
                "table": [_finite(asdict(row)) for row in d.table],
            },
        }

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r}, {self.decision.headline!r})"

    def _repr_html_(self) -> str:
        """The decision and its table, for notebooks (every text escaped: a target may be
        called anything)."""
        d = self.decision
        e = html.escape
        lines = [f"<p><b>{e(d.headline)}</b></p>"]
        lines += [f"<p>{e(t)}</p>" for t in [*d.reasons, d.versus, d.cost, d.low_latency] if t]
        if d.caveats:
            lines.append(f"<p>caveats: {e('; '.join(d.caveats))}</p>")
        lines += [f"<p>- {e(t)}</p>" for t in d.why_none]
        if d.table:
            head = ("target", f"{d.unit} within the SLO", "at level", "SLO pct (ms)", "cost")
            body = "".join(
                f"<tr><td>{e(r.target)}</td><td>{r.value:,.0f}</td><td>{e(r.level)}</td>"
                f"<td>{'-' if r.p_slo_ms != r.p_slo_ms else f'{r.p_slo_ms:.2f}'}</td>"
                f"<td>{e(r.cost)}</td></tr>"
                for r in d.table[:_TABLE_ROWS]
            )
            lines.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
                         + f"</tr>{body}</table>")  # fmt: skip
        lines.append(f"<p><code>{e(str(self.path))}</code> ({e(self.status)}; "
                     f"{len(self.steps)} step rows)</p>")  # fmt: skip
        return "\n".join(lines)


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN: a figure the run could not give is null
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
