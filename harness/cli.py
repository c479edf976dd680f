"""`servingbench`: the command line (this module alone parses argv and prints).

servingbench run SCENARIO [--targets a,b] [--out DIR] [--no-report] [--json]
servingbench tune SCENARIO [--budget 10m] [--stacks a,b] [--out DIR] [--no-report]
servingbench report RUN_DIR [-o FILE] [--mlflow URI]
servingbench compare BASE NEW [--threshold 0.1] | compare --baseline DIR NEW [--history N]
servingbench runs [DIR]
servingbench validate SCENARIO...
servingbench list [--json]
servingbench doctor [--json]
servingbench clean [--out DIR]
servingbench new-adapter NAME [--dir DIR]
servingbench k8s manifest SCENARIO --target NAME [-o FILE] [--set KEY=VALUE]... [--check]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.columns import progress_figures
from harness.errors import ConfigError, RunFolderError, ServingBenchError
from harness.load.plan import StepPlan
from harness.observer import Observer
from harness.stats import StepSummary

# Lines are never wrapped (a path cut in two cannot be pasted back): soft_wrap everywhere.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class RichObserver(Observer):
    """One progress bar over all steps, and a line per finished step."""

    def __init__(self, progress: Progress, total_steps: int) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=total_steps)
        self.started = time.monotonic()
        # without a terminal the bar is invisible (CI logs, pipes): phases become lines
        self.lines = not progress.console.is_terminal

    def _line(self, message: str) -> None:
        if self.lines:
            elapsed = int(time.monotonic() - self.started)
            self.progress.console.print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}",
                                        highlight=False, markup=False)  # fmt: skip

    # descriptions are rendered as markup: whatever we did not write ourselves is escaped
    def on_phase(self, message: str) -> None:
        self.progress.update(self.task, description=escape(message))
        self._line(message)

    def on_target_start(self, target: str, index: int, total: int) -> None:
        message = f"[{index + 1}/{total}] {target}: starting"
        self.progress.update(self.task, description=escape(message))
        self._line(message)

    def on_step_start(self, target: str, plan: StepPlan) -> None:
        self.progress.update(self.task, description=escape(f"{target}: {plan.label}"))

    def on_step_end(
        self, target: str, plan: StepPlan, summary: StepSummary, row: dict[str, Any]
    ) -> None:
        flag = (
            f" [yellow]load generator: {escape(summary.loadgen_note)}[/]"
            if summary.loadgen_note
            else ""
        )
        errors = f" [red]{summary.errors} errors[/]" if summary.errors else ""
        if summary.errors and not summary.eligible:
            errors += f" [red](not ranked: {escape(summary.ineligible_reason)})[/]"
        family = "".join(f" | {figure}" for figure in progress_figures(row))
        self.progress.console.print(
            f"{escape(target)} | {plan.label} | {summary.throughput_rps:.1f} req/s | "
            f"p50 {summary.p50_ms:.2f} ms | p99 {summary.p99_ms:.2f} ms{family}{errors}{flag}",
            highlight=False,
            markup=True,
            soft_wrap=True,
        )
        self.progress.advance(self.task)

    def on_target_end(self, target: str, status: str, error: str | None) -> None:
        # error texts carry what servers wrote (log lines, answers): never markup
        if status == "unavailable":
            self.progress.console.print(
                f"  [yellow]{escape(target)}: skipped: {escape(error or '')}[/]",
                highlight=False, markup=True,
            )  # fmt: skip
        elif status != "ok":
            first = (error or "").splitlines()[0] if error else status
            self.progress.console.print(
                f"  [red]{escape(target)}: {status}: {escape(first)}[/]",
                highlight=False, markup=True,
            )  # fmt: skip


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_run(args: argparse.Namespace) -> int:
    import json

    from harness.profiles import expected_steps
    from harness.runner import run_scenario
    from harness.scenario import load_scenario, target_by_name
    from servingbench.api import load_run

    scenario = load_scenario(args.scenario, args.set)
    names = [n for n in (args.targets or "").split(",") if n]
    targets = target_by_name(scenario, names)
    total = len(targets) * expected_steps(scenario.load.profile) * scenario.repeats
    signal.signal(signal.SIGTERM, _raise_interrupt)  # teardown runs on TERM as on Ctrl-C
    cluster = None
    if args.ray:
        from harness.cluster.connect import connect

        cluster = connect(args.ray)
        console.print(f"Ray cluster {escape(args.ray)}: {len(cluster.nodes)} node(s)",
                      highlight=False)  # fmt: skip
    elif scenario.load.nodes > 1:
        why = "load from several nodes needs a Ray cluster: add --ray ADDRESS"
        raise ConfigError(str(args.scenario), [("load.nodes", f"{scenario.load.nodes}: {why}")])
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        outcome = run_scenario(
            scenario,
            scenario_file=str(args.scenario),
            out_root=args.out,
            target_names=names,
            observer=RichObserver(progress, total),
            command=sys.argv,
            cluster=cluster,
        )
    result = load_run(outcome.run_dir)
    result.failures = list(outcome.failures)
    report_s = time.monotonic()
    if not args.no_report:
        result.render_report(static=args.static)
    report_s = time.monotonic() - report_s
    code = 1 if outcome.failures else 0
    if args.json:  # progress went to stderr; stdout is the JSON alone
        out.print_json(json.dumps({**_decided(result), "exit_code": code}))
        return code
    print_decision(result)
    out.print(time_spent(result.data.run.get("timings") or {}, report_s), highlight=False)
    out.print(f"run folder: {outcome.run_dir}", highlight=False)
    if result.report_path is not None:
        out.print(f"report: {result.report_path}", highlight=False)
    for failure in outcome.failures:
        console.print(f"[red]FAILED[/] {escape(failure)}", highlight=False, markup=True)
    return code


def parse_budget(text: str) -> float:
    """`--budget`: seconds, or a number with s, m or h (`90s`, `10m`, `1.5h`)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    raw = text.strip().lower()
    factor = units.get(raw[-1:])
    try:
        value = float(raw[:-1] if factor else raw) * (factor or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (seconds, or e.g. 90s, 10m, 1.5h)"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a budget must be more than zero")
    return value


def cmd_tune(args: argparse.Namespace) -> int:
    from harness.errors import ConfigError as _ConfigError
    from harness.profiles import expected_steps
    from harness.report.tuning_view import tuning_view
    from harness.scenario import load_scenario
    from harness.tuning import tune_scenario
    from servingbench.api import load_run

    scenario = load_scenario(args.scenario, args.set)
    if scenario.tune is None:
        raise _ConfigError(str(args.scenario), [("tune", "missing: `servingbench tune` needs a "
                           "tune: section (see docs/tuning.md)")])  # fmt: skip
    stacks = [n for n in (args.stacks or "").split(",") if n]
    count = len(stacks) or len(scenario.tune.stacks)
    per_trial = expected_steps(scenario.load.profile) + (1 if scenario.tune.search.probe_s else 0)
    total = count * scenario.tune.search.trials * per_trial + 2 * count * scenario.tune.repeats
    signal.signal(signal.SIGTERM, _raise_interrupt)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        outcome = tune_scenario(
            scenario, scenario_file=str(args.scenario), out_root=args.out, budget_s=args.budget,
            stacks=stacks, observer=RichObserver(progress, total), command=sys.argv,
        )  # fmt: skip
    result = load_run(outcome.run_dir)
    result.failures = list(outcome.failures)
    if not args.no_report:
        result.render_report(static=args.static)
    view = tuning_view(result.data)
    if view is not None:
        out.print()
        out.print(f"[bold]{escape(view.headline)}[/]", highlight=False)
        table = Table("stack", "hand-set", "tuned", "gain", "best configuration", "trials",
                      "search")  # fmt: skip
        for row in view.stacks:
            table.add_row(escape(row.stack), row.hand_text, row.best_text, escape(row.gain_text),
                          escape(row.best_settings_text), escape(row.trials_text),
                          f"{row.search_s:.0f} s")  # fmt: skip
        _wide().print(table)
        if view.verdict:
            out.print(escape(view.verdict), highlight=False)
    print_decision(result)
    out.print(f"run folder: {outcome.run_dir}", highlight=False)
    if result.report_path is not None:
        out.print(f"report: {result.report_path}", highlight=False)
    for failure in outcome.failures:
        console.print(f"[red]FAILED[/] {escape(failure)}", highlight=False, markup=True)
    return 1 if outcome.failures else 0


def time_spent(timings: dict[str, float], report_s: float) -> str:
    """Where the run's time went, as one line: "time: model and variants 21 s, ..." (the
    adapters' environments are created while the model builds; said so)."""
    targets = {k.removeprefix("target "): v for k, v in timings.items() if k.startswith("target ")}
    parts = [f"{k} {_minutes(v)}" for k, v in timings.items()
             if not k.startswith("target ") and k != "environments"]  # fmt: skip
    if timings.get("environments"):
        parts.append(f"environments {_minutes(timings['environments'])} (beside the model build)")
    if targets:
        slowest = max(targets, key=lambda k: targets[k])
        parts.append(f"{len(targets)} targets {_minutes(sum(targets.values()))} (slowest "
                     f"{escape(slowest)} {_minutes(targets[slowest])})")  # fmt: skip
    parts.append(f"report {_minutes(report_s)}")
    return "time: " + ", ".join(parts)


def _decided(result: Any) -> dict[str, Any]:
    try:
        return dict(result.to_json())
    except (ServingBenchError, OSError, ValueError, KeyError) as exc:
        return {"run_dir": str(result.path), "status": result.status,
                "failures": result.failures, "decision": None, "no_decision": str(exc)}  # fmt: skip


def print_decision(result: Any) -> None:
    """The report's decision, and its five-row table, as the terminal's last word (every
    name and text from the run folder escaped: a target may be called anything)."""
    try:
        if result.steps.empty:
            return
        decision = result.decision
    except (ServingBenchError, OSError, ValueError, KeyError) as exc:
        console.print(f"no decision: {exc}", style="yellow", highlight=False, markup=False)
        return
    out.print()
    out.print(f"[bold]{escape(decision.headline)}[/]", highlight=False)
    for line in [*decision.reasons, decision.versus, decision.cost, decision.low_latency]:
        if line:
            out.print(escape(line), highlight=False)
    if decision.caveats:
        out.print(f"caveats: {escape('; '.join(decision.caveats))}", highlight=False)
    for line in decision.why_none:
        out.print(f"  - {escape(line)}", highlight=False)
    if decision.table:
        table = Table("target", f"{decision.unit} within the SLO", "at level", "SLO pct (ms)",
                      "cost", "caveats")  # fmt: skip
        for row in decision.table:
            table.add_row(escape(row.target), f"{row.value:,.0f}", escape(row.level),
                          "-" if row.p_slo_ms != row.p_slo_ms else f"{row.p_slo_ms:.2f}",
                          row.cost, escape("; ".join(row.caveats)))  # fmt: skip
        _wide().print(table)


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import render_report
    from harness.summary import write_summary

    if (Path(args.run_dir) / "targets.json").exists():
        write_summary(Path(args.run_dir))

    report = render_report(Path(args.run_dir), args.output, static=args.static)
    out.print(f"report: {report}", highlight=False)
    if args.mlflow:
        from harness.mlflow_export import export_run

        run_id = export_run(Path(args.run_dir), args.mlflow, report)
        out.print(f"mlflow: run {run_id} at {args.mlflow}", highlight=False)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Exit 0: no regression; 1: a significant one; 2: cannot compare; 3: inconclusive."""
    import json

    from harness.compare import compare, pick_baseline

    try:
        if args.baseline is not None:
            base, new = pick_baseline(args.baseline, args.runs, args.pick, args.history), args.runs
        elif len(args.runs) < 2:
            raise ServingBenchError(
                "compare: give BASE NEW (two run folders) or --baseline DIR NEW"
            )
        else:
            base, new = args.runs[:1], args.runs[1:]
        result = compare(base, new, args.threshold)
    except ServingBenchError as exc:  # never exit 1 (a regression) for a bad argument
        console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        return 2
    code = result.exit_code(args.allow_mismatch)
    if args.out:
        result.changes.to_csv(args.out, index=False)
    if args.json:
        out.print_json(json.dumps({**result.to_json(), "exit_code": code}))
        return code
    _print_comparison(result, code)
    return code


_WORD_STYLE = {
    "regression": "bold red",
    "broken": "bold red",
    "improvement": "green",
    "machine": "yellow",
    "inconclusive": "yellow",
    "insufficient data": "dim",
    "not comparable": "dim",
    "floor": "dim",
}


def _side(paths: list[Path]) -> str:
    names = ", ".join(escape(p.name) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    return f"{len(paths)} run{'s' if len(paths) > 1 else ''} ({names})"


def _print_comparison(result: Any, code: int) -> None:
    out.print(
        f"base: {_side(result.base)}\nnew:  {_side(result.new)}\n"
        f"ratio = new / base; a regression is a whole 95% interval beyond "
        f"{result.threshold:.0%}",
        highlight=False,
    )
    if result.mismatches:
        out.print("[bold]Differences between the sides (read these first):[/]")
        for m in result.mismatches:
            flag = "[red]blocks the comparison[/] " if m.blocking else ""
            out.print(f"  - {flag}{escape(m.line())}", highlight=False)
    for note in result.notes:
        out.print(f"[yellow]machine:[/] {escape(note)}", highlight=False)
    table = Table(
        "target",
        "level",
        "metric",
        "base",
        "new",
        "new/base [95% CI]",
        "n",
        "can detect",
        "verdict",
        title="Changes, new against base",
    )
    for row in result.changes.itertuples():
        interval = (
            f"{row.ratio:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
            if row.ci_low == row.ci_low
            else (f"{row.ratio:.3f}" if row.ratio == row.ratio else "-")
        )
        if row.word == "insufficient data":  # the run itself refused a figure: no numbers
            interval = "-"
        detect = f"{row.detectable:.0%}" if row.detectable == row.detectable else "?"
        word = (
            f"[{_WORD_STYLE.get(row.word, '')}]{escape(row.word)}[/]"
            if row.word in _WORD_STYLE
            else escape(row.word)
        )
        table.add_row(
            escape(str(row.target)),
            escape(str(row.label)),
            str(row.metric),
            _num(row.value_a),
            _num(row.value_b),
            interval,
            f"{row.n_a}/{row.n_b}",
            detect,
            word,
        )
    if len(result.changes):
        _wide().print(table)
    weak = result.underpowered
    if len(weak):
        out.print(
            f"[yellow]{len(weak)} row(s) could not detect a {result.threshold:.0%} change "
            f"(they detect {weak['detectable'].min():.0%} to {weak['detectable'].max():.0%}): "
            "add repeats or base runs[/]",
            highlight=False,
        )
    for row in result.changes[result.changes["word"] == "broken"].itertuples():
        out.print(
            f"[red]broken:[/] {escape(str(row.target))} {escape(str(row.label))}: "
            f"{escape(row.reason)}",
            highlight=False,
        )
    regressions = result.regressions
    verdict = {
        0: "no significant regression",
        1: f"{len(regressions)} significant regression(s) beyond {result.threshold:.0%}",
        2: "cannot compare: "
        + (
            "no (target, level) in common"
            if not len(result.changes)
            else "a blocking difference above (--allow-mismatch to go on)"
        ),
        3: "inconclusive: nothing could be gated (one measurement a side); set load.repeats "
        ">= 3 or compare against several base runs",
    }[code]
    style = {0: "green", 1: "bold red", 2: "red", 3: "yellow"}[code]
    out.print(f"[{style}]{verdict}[/] (exit {code})", highlight=False)


def _wide() -> Console:
    """The output console, at least 160 columns wide: a pipe or CI log is 80 by default,
    and a wide table folded into two-line cells cannot be read or grepped."""
    return out if out.width >= 160 else Console(soft_wrap=True, width=160)


def _num(value: float) -> str:
    return "-" if value != value else f"{value:.4g}"


def cmd_runs(args: argparse.Namespace) -> int:
    """The run folders of a results root (a baseline store), oldest first."""
    import json

    from harness.compare import stored_runs

    runs = stored_runs(args.root)
    if args.json:
        out.print_json(json.dumps([{**r.__dict__, "path": str(r.path)} for r in runs]))
        return 0
    if not runs:
        out.print(f"no run folders under {escape(str(args.root))}", highlight=False)
        return 0
    table = Table("run", "scenario", "started", "revision", "status", "repeats", "headline")
    for r in runs:
        table.add_row(
            escape(r.path.name),
            escape(r.scenario),
            r.started,
            r.revision,
            r.status,
            str(r.repeats),
            escape(r.headline),
        )
    _wide().print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.bounds import check, estimate_s
    from harness.scenario import load_scenario

    for path in args.scenarios:
        scenario = load_scenario(path, args.set)
        warnings = check(scenario, str(path))  # what this machine cannot run is an error
        out.print(f"{path}: ok ({len(scenario.targets)} targets)", highlight=False)  # type: ignore[attr-defined]
        low, high = estimate_s(scenario)
        span = f"{_minutes(low)} to {_minutes(high)}"
        out.print(f"  load: {span} (every step at its minimum and its maximum duration, "
                  "every repeat), plus server start-ups", highlight=False)  # fmt: skip
        for warning in warnings:
            console.print(f"  warning: {warning}", style="yellow", highlight=False, markup=False)
    return 0


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from harness.scenario import json_schema

    text = json.dumps(json_schema(args.in_tree), indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        out.print(f"schema: {args.output}", highlight=False)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """Write a small synthetic trace in the Mooncake layout (for tests and examples)."""
    from harness.llm.traces import synthetic_mooncake, write_mooncake

    rows = synthetic_mooncake(args.rows, args.rate, args.seed, args.groups)
    write_mooncake(rows, Path(args.out))
    span_s = float(rows[-1]["timestamp"]) / 1000  # type: ignore[arg-type]
    print(f"wrote {len(rows)} requests over {span_s:.1f} s to {args.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import json

    from harness import registry

    rows: list[dict[str, Any]] = []
    for kind, cls in registry.adapters().items():
        a = cls.availability()
        rows.append({"part": "adapter", "name": kind, "available": a.available,
                     "detail": a.reason or cls.description})  # fmt: skip
    for family in registry.workloads().values():
        for name in family.variant_names:
            ok, why = family.variant_availability(name)
            rows.append({"part": "variant", "name": name, "available": ok, "family": family.name,
                         "detail": why or f"{family.name}: {family.description}"})  # fmt: skip
    for kind, launcher in registry.launchers().items():
        rows.append({"part": "launcher", "name": kind, "available": True,
                     "detail": launcher.description})  # fmt: skip
    if args.json:
        out.print_json(json.dumps(rows))
        return 0
    table = Table("part", "name", "available", "why not / what", title="servingbench parts")
    for row in rows:
        table.add_row(row["part"], row["name"], _yes(row["available"]), escape(row["detail"]))
    out.print(table)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Create an adapter's own environment now (vLLM's is opt-in: 3.4 GB)."""
    from harness import registry
    from harness.environments import ensure, installer

    cls = registry.adapters().get(args.adapter)
    if cls is None or cls.environment is None:
        with_env = sorted(k for k, c in registry.adapters().items() if c.environment is not None)
        console.print(f"[red]no adapter {args.adapter!r} with an environment of its own[/] "
                      f"(those with one: {', '.join(with_env)})", markup=True)  # fmt: skip
        return 2
    env = cls.environment
    if env.ready:
        out.print(f"{args.adapter}: ready at {env.path}", highlight=False)
        return 0
    with console.status(f"creating the {env.name} environment at {env.path} ({installer()}: "
                        f"{' '.join(env.requirements)}) ..."):  # fmt: skip
        python = ensure(env)
    out.print(f"{args.adapter}: created {env.path} ({python})", highlight=False)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from harness.clean import clean

    done = clean(args.out)
    for line in done:
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(f"{len(done)} thing(s) cleaned" if done else "nothing left behind", highlight=False)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from harness.doctor import run_checks

    checks = run_checks()
    if args.json:
        out.print_json(json.dumps([dataclasses.asdict(c) for c in checks]))
        return 0
    table = Table("part", "name", "ok", "details / why not", title="servingbench doctor")
    for check in checks:
        table.add_row(check.part, check.name, _yes(check.ok), escape(check.detail))
    out.print(table)
    return 0


def cmd_new_adapter(args: argparse.Namespace) -> int:
    from harness.scaffold import new_adapter

    module, test = new_adapter(args.name, args.dir, kind=args.kind)
    out.print(f"adapter: {module}\ntest:    {test}", highlight=False, soft_wrap=True)
    out.print(
        f"next: pytest {test}   (the conformance suite; see docs/adding-an-adapter.md)",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def cmd_k8s_manifest(args: argparse.Namespace) -> int:
    from harness.k8s import check_in_kserve_env, manifest_for

    text = manifest_for(args.scenario, args.target, args.set)
    if args.check:
        check_in_kserve_env(text)
    if args.output is None:
        out.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    else:
        args.output.write_text(text)
        out.print(f"manifest: {args.output}", highlight=False, soft_wrap=True)
    return 0


def _yes(value: bool) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"


SET_HELP = (
    "override a scenario value (repeatable): dotted keys, [i] or [name] for list "
    "items, YAML values; e.g. repeats=3, load.duration_s=2, "
    "targets[fastapi-onnx].variant=onnx-int8"
)
EPILOG = """\
examples:
  servingbench run scenarios/digits-cnn.yaml
  servingbench run scenarios/digits-cnn.yaml --targets floor-eager,fastapi-onnx --set repeats=3
  servingbench report results/<run-id> --static
  servingbench tune scenarios/digits-tune.yaml --budget 10m
  servingbench compare --baseline store/ --history 3 results/<run-id>
  servingbench validate scenarios/*.yaml

exit codes:
  0  done (compare: no significant regression)
  1  a run or a target failed (compare: a significant regression)
  2  bad input: a scenario, a flag, a folder that is no run (compare: cannot compare)
  3  compare only: inconclusive, nothing could be gated
  130  interrupted (Ctrl-C, SIGTERM): servers stopped, finished steps kept
"""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, examples kept as written."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("servingbench")
    except PackageNotFoundError:
        return "unknown (not installed)"


JSON_HELP = (
    "stdout: one JSON object (run folder, status, failures, report, the decision and its "
    "table, exit_code); progress stays on stderr"
)
STATIC_HELP = "every chart a PNG, no JavaScript (for print or mail); default: interactive"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="servingbench",
        description="Deploy one model under many serving stacks, drive the same load at each, "
        "and report which to run.",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"servingbench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub_parser = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub_parser(name, formatter_class=Formatter, **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]
    run = sub.add_parser("run", help="run a scenario and write a run folder and report")
    run.add_argument("scenario", type=Path, help="the scenario file (YAML)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    run.add_argument("--targets", help="comma-separated target names (default: all)")
    run.add_argument("--out", type=Path, default=Path("results"), help="results root")
    run.add_argument("--no-report", action="store_true", help="skip the HTML report")
    run.add_argument("--static", action="store_true", help=STATIC_HELP)
    run.add_argument("--json", action="store_true", help=JSON_HELP)
    run.add_argument("--ray", metavar="ADDRESS", default=None,
                     help="run each target on a node of this Ray cluster (its GCS host:port, "
                     "or auto), several at once; docs/ray.md")  # fmt: skip
    run.set_defaults(func=cmd_run)
    tune = sub.add_parser(
        "tune", help="search each stack's settings under the SLO, then compare the bests"
    )
    tune.add_argument("scenario", type=Path, help="a scenario file with a tune: section")
    budget_help = ("the whole search's time (90s, 10m, 1h), shared evenly between the stacks "
                   "(default: tune.budget_s per stack); the re-measure comes after")  # fmt: skip
    tune.add_argument("--budget", type=parse_budget, default=None, help=budget_help)
    tune.add_argument("--stacks", help="comma-separated tune.stacks targets (default: all)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    tune.add_argument("--out", type=Path, default=Path("results"), help="results root")
    tune.add_argument("--no-report", action="store_true", help="skip the HTML report")
    tune.add_argument("--static", action="store_true", help=STATIC_HELP)
    tune.set_defaults(func=cmd_tune)
    report = sub.add_parser("report", help="render the HTML report of a run folder")
    report.add_argument("run_dir", type=Path, help="a run folder (results/<run-id>)")
    report.add_argument("-o", "--output", type=Path, default=None)
    report.add_argument("--static", action="store_true", help=STATIC_HELP)
    report.add_argument(
        "--mlflow",
        metavar="URI",
        default=None,
        help="also log the run to MLflow at this tracking URI (file:PATH, http://..., or a "
        "path); needs the mlflow extra",
    )
    report.set_defaults(func=cmd_report)
    compare = sub.add_parser(
        "compare",
        help="regressions of NEW against BASE: exit 0 none, 1 significant, 2 cannot compare, "
        "3 inconclusive",
        description="servingbench compare BASE NEW [NEW...]  |  compare --baseline DIR NEW...",
    )
    compare.add_argument(
        "runs",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="BASE then NEW run folder(s); with --baseline, the NEW ones only",
    )
    compare.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of runs: the base is its latest finished run of the "
        "same scenario (or --pick NAME)",
    )
    compare.add_argument("--pick", default=None, metavar="NAME", help="a run of --baseline by name")
    compare.add_argument(
        "--history",
        type=int,
        default=1,
        metavar="N",
        help="with --baseline: the last N runs form the base side (default 1)",
    )
    compare.add_argument(
        "--threshold",
        type=float,
        default=0.10,
        help="relative change that counts (default 0.10 = 10%%)",
    )
    compare.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="compare even when scenario content or hardware differ",
    )
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    compare.set_defaults(func=cmd_compare)
    runs = sub.add_parser("runs", help="list the runs of a results folder (a baseline store)")
    runs.add_argument("root", type=Path, nargs="?", default=Path("results"))
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)
    validate = sub.add_parser("validate", help="validate scenario files")
    validate.add_argument("scenarios", type=Path, nargs="+", help="scenario files (YAML)")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    validate.set_defaults(func=cmd_validate)
    listing = sub.add_parser("list", help="adapters, variants, launchers")
    listing.add_argument("--json", action="store_true", help="print the parts as JSON")
    listing.set_defaults(func=cmd_list)
    schema = sub.add_parser("schema", help="the scenario file's JSON Schema (for editors)")
    schema.add_argument("-o", "--output", type=Path, default=None, help="default: stdout")
    schema.add_argument(
        "--in-tree", action="store_true", help="only this repository's adapters (no plug-ins)"
    )
    schema.set_defaults(func=cmd_schema)
    trace = sub.add_parser("trace", help="write a synthetic trace (Mooncake JSONL layout)")
    trace.add_argument("out", help="the .jsonl file to write")
    trace.add_argument("--rows", type=int, default=300, help="requests (default 300)")
    trace.add_argument("--rate", type=float, default=4.0, help="arrivals per second")
    trace.add_argument("--groups", type=int, default=4, help="shared system prompts")
    trace.add_argument("--seed", type=int, default=0)
    trace.set_defaults(func=cmd_trace)
    env = sub.add_parser("env", help="create an adapter's own environment (e.g. vllm)")
    env.add_argument("adapter", help="the adapter whose environment to create, e.g. vllm")
    env.set_defaults(func=cmd_env)
    doctor = sub.add_parser(
        "doctor", help="what this machine can run: Docker, GPUs, CUDA, TensorRT, Java, adapters"
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(func=cmd_doctor)
    clean = sub.add_parser(
        "clean",
        help="remove what a killed run left (its processes, containers, temp folders, shared "
        "memory) and mark its folder aborted; nothing whose owner is alive",
    )
    clean.add_argument("--out", type=Path, default=Path("results"), help="results root")
    clean.set_defaults(func=cmd_clean)
    new = sub.add_parser(
        "new-adapter", help="write a working adapter skeleton and its conformance test"
    )
    new.add_argument("name", help="the adapter's kind and module name (lowercase identifier)")
    new.add_argument(
        "--kind",
        choices=("http", "grpc", "generate"),
        default="http",
        help="http: plain JSON over HTTP; grpc: Open Inference v2 over gRPC; generate: "
        "streamed generations over the OpenAI API (default: http)",
    )
    new.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="write both files here (default: adapters/ and tests/adapters/ of this checkout)",
    )
    new.set_defaults(func=cmd_new_adapter)
    k8s = sub.add_parser("k8s", help="Kubernetes: KServe InferenceService manifests")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True)
    manifest = k8s_sub.add_parser("manifest", help="a target's InferenceService YAML")
    manifest.add_argument("scenario", type=Path)
    manifest.add_argument("--target", required=True, help="the target's name in the scenario")
    manifest.add_argument("-o", "--output", type=Path, default=None, help="default: stdout")
    manifest.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a k8s setting over the target's (dotted keys, YAML values), e.g. "
        "storage_uri=gs://bucket/model or batcher.max_batch_size=16",
    )
    manifest.add_argument(
        "--check",
        action="store_true",
        help="validate with the KServe SDK's models (kserve environment, made on first use)",
    )
    manifest.set_defaults(func=cmd_k8s_manifest)
    return parser


def main(argv: list[str] | None = None) -> int:
    from harness.quiet import quiet

    args = build_parser().parse_args(argv)
    quiet()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        console.print(str(exc), style="red", highlight=False, markup=False)
        return 2
    except RunFolderError as exc:  # `report`/`compare` on a folder that is not a run
        console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        return 2
    except ServingBenchError as exc:
        console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        return 1
    except OSError as exc:  # a full disk, a folder that cannot be written: one line
        where = f" ({exc.filename})" if exc.filename else ""
        console.print(
            f"error: {exc.strerror or exc}{where}; every finished step is in the run folder",
            style="red", highlight=False, markup=False,
        )  # fmt: skip
        return 1
    except KeyboardInterrupt:
        console.print(
            "interrupted: servers stopped; finished steps are in the run folder",
            style="yellow",
            highlight=False,
        )
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            # a --ray run: everything is on disk and the nodes' targets are stopped; Ray's
            # own native teardown after a cancelled job may end the process with 1 or a
            # SIGSEGV instead of 130, so it is skipped
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
