"""`servingbench`: the only module that parses argv or prints.

servingbench run SCENARIO [--targets a,b] [--out DIR] [--no-report]
servingbench report RUN_DIR [-o FILE] [--mlflow URI]
servingbench compare RUN_A RUN_B [--threshold 0.1]
servingbench validate SCENARIO...
servingbench list
servingbench doctor
servingbench new-adapter NAME [--dir DIR]
servingbench k8s manifest SCENARIO --target NAME [-o FILE] [--set KEY=VALUE]... [--check]
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.errors import ConfigError, ServingBenchError
from harness.load.engine import StepPlan
from harness.observer import Observer
from harness.stats import StepSummary

console = Console(stderr=True)
out = Console()


class RichObserver(Observer):
    """One progress bar over all steps, and a line per finished step."""

    def __init__(self, progress: Progress, total_steps: int) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=total_steps)

    def on_phase(self, message: str) -> None:
        self.progress.update(self.task, description=message)

    def on_target_start(self, target: str, index: int, total: int) -> None:
        self.progress.update(self.task, description=f"[{index + 1}/{total}] {target}: starting")

    def on_step_start(self, target: str, plan: StepPlan) -> None:
        self.progress.update(self.task, description=f"{target}: {plan.label}")

    def on_step_end(
        self,
        target: str,
        plan: StepPlan,
        summary: StepSummary,
        tokens: dict[str, float] | None = None,
    ) -> None:
        flag = f" [yellow]load generator: {summary.loadgen_note}[/]" if summary.loadgen_note else ""
        errors = f" [red]{summary.errors} errors[/]" if summary.errors else ""
        llm = (
            f" | TTFT p50 {tokens['ttft_p50_ms']:.1f} ms | ITL p50 {tokens['itl_p50_ms']:.2f} ms"
            f" | {tokens['output_tokens_per_s']:.0f} tok/s"
            if tokens
            else ""
        )
        self.progress.console.print(
            f"{target} | {plan.label} | {summary.throughput_rps:.1f} req/s | "
            f"p50 {summary.p50_ms:.2f} ms | p99 {summary.p99_ms:.2f} ms{llm}{errors}{flag}",
            highlight=False,
            markup=True,
            soft_wrap=True,
        )
        self.progress.advance(self.task)

    def on_target_end(self, target: str, status: str, error: str | None) -> None:
        if status == "unavailable":
            self.progress.console.print(
                f"  [yellow]{target}: skipped: {error}[/]", highlight=False, markup=True
            )
        elif status != "ok":
            first = (error or "").splitlines()[0] if error else status
            self.progress.console.print(
                f"  [red]{target}: {status}: {first}[/]", highlight=False, markup=True
            )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.profiles import expected_steps
    from harness.runner import run_scenario
    from harness.scenario import load_scenario, target_by_name

    scenario = load_scenario(args.scenario)
    names = [n for n in (args.targets or "").split(",") if n]
    targets = target_by_name(scenario, names)
    total = len(targets) * expected_steps(scenario.load.profile) * scenario.repeats
    signal.signal(signal.SIGTERM, _raise_interrupt)  # teardown runs on TERM as on Ctrl-C
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
        )
    out.print(f"run folder: {outcome.run_dir}", highlight=False)
    if not args.no_report:
        from harness.report import render_report

        out.print(f"report: {render_report(outcome.run_dir)}", highlight=False)
    for failure in outcome.failures:
        console.print(f"[red]FAILED[/] {failure}", highlight=False, markup=True)
    return 1 if outcome.failures else 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import render_report
    from harness.summary import write_summary

    if (Path(args.run_dir) / "targets.json").exists():
        write_summary(Path(args.run_dir))

    report = render_report(Path(args.run_dir), args.output)
    out.print(f"report: {report}", highlight=False)
    if args.mlflow:
        from harness.mlflow_export import export_run

        run_id = export_run(Path(args.run_dir), args.mlflow, report)
        out.print(f"mlflow: run {run_id} at {args.mlflow}", highlight=False)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import compare_runs

    changes = compare_runs(args.run_a, args.run_b, args.threshold)
    if args.out:
        changes.to_csv(args.out, index=False)
    table = Table(
        "target",
        "level",
        "metric",
        "A",
        "B",
        "B/A [95% CI]",
        "",
        title=(f"{args.run_b.name} vs {args.run_a.name} (threshold {args.threshold:.0%})"),
    )
    for row in changes.itertuples():
        word = (
            "[red]REGRESSION[/]"
            if row.regression
            else "[green]improvement[/]"
            if row.improvement
            else ""
        )
        table.add_row(
            str(row.target),
            str(row.label),
            str(row.metric),
            f"{row.value_a:.4g}",
            f"{row.value_b:.4g}",
            f"{row.ratio:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]",
            word,
        )
    out.print(table)
    regressions = int(changes.regression.sum()) if len(changes) else 0
    if not len(changes):
        console.print("no (target, level) in common between the two runs", style="yellow")
        return 2
    out.print(
        f"{regressions} significant regression(s) beyond {args.threshold:.0%}", highlight=False
    )
    return 1 if regressions else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.scenario import load_scenario

    for path in args.scenarios:
        scenario = load_scenario(path)
        out.print(f"{path}: ok ({len(scenario.targets)} targets)", highlight=False)  # type: ignore[attr-defined]
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from harness import registry
    from harness.variants import LLM_VARIANT_NAMES, VARIANT_NAMES, variant_availability

    table = Table("part", "name", "available", "why not / what", title="servingbench parts")
    for kind, cls in registry.adapters().items():
        a = cls.availability()
        table.add_row("adapter", kind, _yes(a.available), a.reason or cls.description)
    for name in VARIANT_NAMES + LLM_VARIANT_NAMES:
        ok, why = variant_availability(name)
        what = (
            "tiny-llama precision (GGUF; HF folder too but q8_0)"
            if name in LLM_VARIANT_NAMES
            else ""
        )
        table.add_row("variant", name, _yes(ok), why or what)
    for kind, launcher in registry.launchers().items():
        table.add_row("launcher", kind, _yes(True), launcher.description)
    out.print(table)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Create an adapter's own environment now (vLLM's is opt-in: 3.4 GB)."""
    from harness import registry
    from harness.environments import ensure

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
    with console.status(f"creating the {env.name} environment at {env.path} (pip: "
                        f"{' '.join(env.requirements)}) ..."):  # fmt: skip
        python = ensure(env)
    out.print(f"{args.adapter}: created {env.path} ({python})", highlight=False)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import run_checks

    table = Table("part", "name", "ok", "details / why not", title="servingbench doctor")
    for check in run_checks():
        table.add_row(check.part, check.name, _yes(check.ok), check.detail)
    out.print(table)
    return 0


def cmd_new_adapter(args: argparse.Namespace) -> int:
    from harness.scaffold import new_adapter

    module, test = new_adapter(args.name, args.dir)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servingbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and write a run folder and report")
    run.add_argument("scenario", type=Path)
    run.add_argument("--targets", help="comma-separated target names (default: all)")
    run.add_argument("--out", type=Path, default=Path("results"), help="results root")
    run.add_argument("--no-report", action="store_true", help="skip the HTML report")
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report", help="render the HTML report of a run folder")
    report.add_argument("run_dir", type=Path)
    report.add_argument("-o", "--output", type=Path, default=None)
    report.add_argument(
        "--mlflow",
        metavar="URI",
        default=None,
        help="also log the run to MLflow at this tracking URI (file:PATH, http://..., or a "
        "path); needs the mlflow extra",
    )
    report.set_defaults(func=cmd_report)
    compare = sub.add_parser(
        "compare", help="regressions of RUN_B against RUN_A (exit 1 on a significant one)"
    )
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    compare.add_argument(
        "--threshold",
        type=float,
        default=0.10,
        help="relative change that counts (default 0.10 = 10%%)",
    )
    compare.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    compare.set_defaults(func=cmd_compare)
    validate = sub.add_parser("validate", help="validate scenario files")
    validate.add_argument("scenarios", type=Path, nargs="+")
    validate.set_defaults(func=cmd_validate)
    sub.add_parser("list", help="adapters, variants, launchers").set_defaults(func=cmd_list)
    env = sub.add_parser("env", help="create an adapter's own environment (e.g. vllm)")
    env.add_argument("adapter")
    env.set_defaults(func=cmd_env)
    sub.add_parser(
        "doctor", help="what this machine can run: Docker, GPUs, CUDA, TensorRT, Java, adapters"
    ).set_defaults(func=cmd_doctor)
    new = sub.add_parser(
        "new-adapter", help="write a working adapter skeleton and its conformance test"
    )
    new.add_argument("name", help="the adapter's kind and module name (lowercase identifier)")
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
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        console.print(str(exc), style="red", highlight=False, markup=False)
        return 2
    except ServingBenchError as exc:
        console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        return 1
    except KeyboardInterrupt:
        console.print(
            "interrupted: servers stopped; finished steps are in the run folder",
            style="yellow",
            highlight=False,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
