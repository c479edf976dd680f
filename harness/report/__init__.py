"""Render one self-contained HTML report from a run folder.

The run folder is the only input (see `harness.results`): the report can be re-rendered at
any time, including for a run that is still going or that died part way. Every string read
from the folder is escaped by jinja's autoescaping. Two things are inlined with `|safe`: the
vega JavaScript bundle (a package's file, not the run's) and the charts' Vega-Lite specs,
JSON with `<`, `>` and `&` escaped (`interactive.spec_json`), which no string can break out
of. PNG charts are base64 data URIs.
"""

from __future__ import annotations

import json
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from harness.report import charts, fmt, interactive
from harness.report.comparison import NA_LEGEND, comparison, stability_rule
from harness.report.data import (
    RunData,
    RunFolderError,
    aggregate_steps,
    label_order,
    latency_samples,
    load_run,
)
from harness.report.decision import Decision, cents, decide, price_text
from harness.report.llm_view import ITL_SERIES, SKIPPED_STATUS, TTFT_SERIES, llm_section
from harness.report.matrix import matrices
from harness.report.resources_view import (
    accuracy_chart,
    accuracy_points,
    reference_accuracy,
    resources,
    resources_chart,
)
from harness.report.search_view import search_chart, search_series, searches
from harness.report.server_view import pareto_points, server_series
from harness.report.summary import trust_reasons
from harness.report.timeline import Timeline, timeline
from harness.report.tuning_view import tuning_view
from harness.report.verdicts_view import Verdicts, load_verdicts, verdict_tables
from harness.results import write_atomically

__all__ = ["RunFolderError", "render_report"]

TEMPLATE = "template.html.j2"
FIDELITY_KEYS = ("passed", "samples", "max_abs_diff", "agreement", "message")


def render_report(run_dir: Path, out: Path | None = None, static: bool = False) -> Path:
    """Write the HTML report for `run_dir` (default `<run_dir>/report.html`); return its path.
    `static`: every chart a PNG (no JavaScript), as for a page that must print or mail."""
    data = load_run(Path(run_dir))
    out = Path(out) if out is not None else data.report_path
    html = _environment().get_template(TEMPLATE).render(**_context(data, out, static))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, html.encode("utf-8"))
    return out


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=fmt.num,
        sig=fmt.sig,
        pct=fmt.pct,
        sortkey=fmt.sortkey,
        when=fmt.when,
        size=fmt.size,
        interval=fmt.interval,
    )
    env.tests["finite"] = fmt.finite
    return env


def _context(data: RunData, out: Path, static: bool = False) -> dict[str, Any]:
    agg = aggregate_steps(data.steps)
    labels = label_order(data.steps)
    targets = data.target_names()
    samples, record_notes = latency_samples(data, seed=_seed(data))
    verdicts = load_verdicts(data)
    marks = {name: "fidelity failed" for name in data.fidelity_failed()}
    slo_searches = searches(data)
    summary = _built_summary(data)
    line = timeline(data, marks, static)
    llm = llm_section(data, labels, targets, marks, static)
    decision = (decide(data, summary, verdicts) if summary is not None
                else Decision("No target can be recommended.", None, "req/s",
                              why_none=["no step finished"]))  # fmt: skip
    pngs = (_static_charts(data, agg, labels, targets, samples, marks, slo_searches) if static
            else dict.fromkeys(STATIC_CHARTS))  # fmt: skip
    drawing = None if static else _interactive(data, agg, labels, targets, samples, decision,
                                               line, slo_searches, llm)  # fmt: skip
    tuning = tuning_view(data)  # a tuning run: each stack's best beside its hand-set
    if drawing is not None and tuning is not None:
        spec = interactive.convergence(tuning.convergence, tuning.unit, tuning.maximise)
        if spec is not None:
            drawing["specs"]["convergence"] = interactive.spec_json(spec)
    drawn = {key for key, uri in pngs.items() if uri} | set(drawing["specs"] if drawing else ())
    if static and line is not None and line.chart:
        drawn.add("timeline")
    return {
        "header": _header(data),
        "has_steps": not data.steps.empty,
        "decision": decision,
        "tuning": tuning,
        "matrices": matrices(data, agg, labels, verdicts, decision.pick),
        "verdicts_source": verdicts.source,
        "verdicts_note": verdicts.note,
        "problems": _problems(data, record_notes, verdicts),
        "verdicts": verdict_tables(verdicts, labels, trust_reasons(data, agg), data.baselines()),
        "comparison": comparison(data, agg, labels, targets),
        "na_legend": NA_LEGEND,
        "stability_rule": stability_rule(data),
        "searches": slo_searches,
        "llm": llm,
        # PNGs only for --static; otherwise every chart is a Vega-Lite spec (`interactive`)
        "charts": pngs,
        "drawn": drawn,  # the keys of the charts drawn, either way
        "timeline": line,
        "variants": _variants(data),
        "targets": _targets(data),
        "provenance": _provenance(data),
        "files": data.listing(exclude=out),
        "answers": _answers(data, summary),
        "interactive": drawing,
    }


STATIC_CHARTS = ("latency", "throughput", "cdfs", "concurrency", "search", "resources", "accuracy")


def _static_charts(
    data: RunData, agg: Any, labels: list[str], targets: list[str], samples: Any,
    marks: dict[str, str], slo_searches: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    slo_ms = data.slo_ms
    return {
        "latency": charts.latency_vs_throughput(agg, targets, slo_ms, marks),
        "throughput": charts.throughput_bars(agg, labels, targets, marks),
        "cdfs": [(label, charts.latency_cdf(samples.get(label, {}), targets, slo_ms, marks))
                 for label in labels],
        "concurrency": charts.throughput_vs_concurrency(agg, targets, marks),
        "search": search_chart(data, slo_searches, marks),
        "resources": resources_chart(data),
        "accuracy": accuracy_chart(data, agg),
    }  # fmt: skip


def _interactive(data: RunData, agg: Any, labels: list[str], targets: list[str], samples: Any,
                 decision: Decision, line: Timeline | None, slo_searches: list[dict[str, Any]],
                 llm: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """Vega-Lite specs (as script-safe JSON) and the inlined JavaScript that draws them."""
    floors = data.baselines()
    order = interactive.ranking_order(decision.table, agg, targets, floors)
    startup, memory, _ = resources(data)
    found = search_series(data, slo_searches)
    specs = {
        "latency": interactive.latency_vs_throughput(agg, data.steps, order, floors, data.slo_ms),
        "throughput": interactive.throughput_by_step(agg, data.steps, order, floors, labels),
        "cdf": interactive.latency_cdf(samples, order, floors, labels),
        "concurrency": interactive.throughput_vs_concurrency(agg, data.steps, order, floors),
        "timeline": interactive.over_time(line.latency, order, floors, line.label, data.slo_ms,
                                          line.warmup_s) if line is not None else None,
        "server": interactive.server_load(line.process, line.gpu, order, floors, line.label,
                                          line.warmup_s) if line is not None else None,
        "search": interactive.slo_search(*found, order) if found is not None else None,
        "resources": interactive.startup_and_memory(startup, memory, order),
        "accuracy": interactive.accuracy_vs_speed(accuracy_points(data, agg),
                                                  reference_accuracy(data)),
    }  # fmt: skip
    if llm is not None:
        ttft, tpot = llm["slo_ttft_ms"], llm["slo_tpot_ms"]
        specs |= {
            "llmttft": interactive.metric_by_step(
                llm["agg"], labels, order, floors, TTFT_SERIES, "time to first token (ms, log)",
                ("TTFT SLO (ms)", ttft) if ttft is not None else None),
            "llmitl": interactive.metric_by_step(
                llm["agg"], labels, order, floors, ITL_SERIES, "inter-token latency (ms, log)",
                ("TPOT SLO (ms)", tpot) if tpot is not None else None),
            "llmtokens": interactive.throughput_vs_concurrency(
                llm["agg"], data.steps, order, floors, column="output_tokens_per_s",
                unit="output tok/s", what="generations"),
            "llmpareto": interactive.pareto(pareto_points(llm["agg"]), order, floors),
            "llmserver": interactive.server_over_time(server_series(data), order, labels),
        }  # fmt: skip
    return {
        "specs": {k: interactive.spec_json(v) for k, v in specs.items() if v is not None},
        "javascript": interactive.javascript(),
        "floor": ", ".join(sorted(floors)),
    }


QUESTIONS = (
    ("highest_throughput_under_slo", "Highest throughput under the SLO", "req/s", 1),
    ("lowest_p99", "Lowest p99", "ms", 2),
    ("cheapest_per_million", "Cheapest per million inferences", "$", 3),
    ("smallest_memory", "Smallest server memory (peak RSS)", "MB", 0),
)
# Asked only of LLM runs (summary.json has these winners only when steps measured tokens).
LLM_QUESTIONS = (
    (
        "highest_output_tokens_within_slo",
        "Highest output tokens/s within the TTFT/TPOT SLO",
        "tok/s",
        1,
    ),
    ("lowest_ttft", "Lowest TTFT p99", "ms", 2),
    ("cheapest_per_million_output_tokens", "Cheapest per million output tokens", "$", 3),
)


def _built_summary(data: RunData) -> dict[str, Any] | None:
    """summary.json's answers, rebuilt from the folder (None without steps or targets)."""
    from harness.summary import build_summary

    if data.steps.empty or not (data.path / "targets.json").exists():
        return None
    try:
        return build_summary(data.path)
    except (OSError, ValueError, KeyError):
        return None


def _answers(data: RunData, built: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's answers (cost, memory, winners) for the cost table; the floor left out."""
    if built is None:
        return None
    llm = "lowest_ttft" in built["winners"]
    winners = []
    for key, question, unit, digits in QUESTIONS + (LLM_QUESTIONS if llm else ()):
        answer = built["winners"].get(key)
        if answer is not None:
            if answer.get("metric") == "ttft_p90_ms":
                question = "Lowest TTFT p90 (no target has enough samples for a p99)"
            value = (
                cents(answer["value"]) if unit == "$" else f"{answer['value']:,.{digits}f} {unit}"
            )
            answer = {**answer, "value": value}
        winners.append((question, answer))
    return {
        "winners": winners,
        "price": built["price"],
        "price_text": price_text(built["price"], (data.run.get("started_at") or "")[:10] or None),
        "targets": [
            (
                n,
                {
                    **t,
                    "cents": cents(t.get("usd_per_million")),
                    "cents_tokens": cents(t.get("usd_per_million_output_tokens")),
                },
            )
            for n, t in built["targets"].items()
            if not t.get("baseline")
        ],
        "llm": llm,
    }


def _seed(data: RunData) -> int:
    seed = (data.run.get("provenance") or {}).get("seed", 0)
    return seed if isinstance(seed, int) else 0


def _header(data: RunData) -> dict[str, Any]:
    run = data.run
    model = data.model
    return {
        "scenario": run.get("scenario_name") or data.scenario.get("name") or data.path.name,
        "description": data.scenario.get("description") or "",
        "ran": _what_ran(data),
        "run_id": run.get("run_id") or data.path.name,
        "status": run.get("status") or "unknown",
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "model": model.get("name"),
        "model_accuracy": model.get("test_accuracy"),
        "model_parameters": model.get("parameters"),
        "slo_ms": data.slo_ms,
        "slo_percentile": data.slo_percentile,
        "repeats": data.scenario.get("repeats"),
    }


def _what_ran(data: RunData) -> str:
    """What ran (not the scenario's description, which may name stacks left out)."""
    ran = [str(t.get("name")) for t in data.targets]
    floors = data.baselines()
    stacks = sorted({str(t.get("adapter")) for t in data.targets if t.get("name") not in floors})
    shown = ", ".join(ran[:6]) + (f" and {len(ran) - 6} more" if len(ran) > 6 else "")
    return (f"{len(ran)} target(s) on {len(stacks)} stack(s) ({', '.join(stacks)}): {shown}"
            if ran else "no targets recorded")  # fmt: skip


def short_settings(settings: Any) -> str:
    """A target's settings as a short line: `workers=1, batching.max_batch_size=16`; nulls,
    empty values and the kind (shown in its own column) left out."""
    if not isinstance(settings, dict):
        return ""
    parts: list[str] = []

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{prefix}{key}.")
        elif value not in (None, "", [], {}):
            parts.append(f"{prefix[:-1]}={value}")

    walk({k: v for k, v in settings.items() if k != "kind"}, "")
    return ", ".join(parts) or "defaults"


def _problems(data: RunData, record_notes: list[str], verdicts: Verdicts) -> list[dict[str, Any]]:
    """Each problem: title, optional detail (shown preformatted) and optional log tail."""
    found: list[dict[str, Any]] = []

    def add(title: str, detail: str | None = None, log: str | None = None) -> None:
        found.append({"title": title, "detail": detail, "log": log})

    status = data.run.get("status")
    if status not in ("finished", None):
        add(f"Run status is '{status}': results may be incomplete.")
    for failure in data.run.get("failures") or []:
        add("Run failure", str(failure))
    for name in data.missing:
        add(f"{name} is missing from the run folder.")
    for target in data.targets:
        name = str(target.get("name"))
        state = target.get("status")
        if state == SKIPPED_STATUS:  # its stack is not installed here: a skip, not a failure
            add(f"Target {name}: skipped", str(target.get("error") or "not available here"))
        elif state in ("failed", "skipped") or (state == "running" and status != "running"):
            add(
                f"Target {name}: {state}",
                str(target.get("error") or "(no error recorded)"),
                data.log_tail(target) if state != "skipped" else None,
            )
        fidelity = target.get("fidelity")
        if isinstance(fidelity, dict) and fidelity.get("passed") is False:
            add(f"Target {name}: fidelity check failed", str(fidelity.get("message") or ""))
    for title, detail in _step_problems(data):
        add(title, detail)
    for variant in data.variants:
        validation = variant.get("validation") or {}
        if isinstance(validation, dict) and validation.get("status") not in ("ok", None):
            add(
                f"Variant {variant.get('name')}: validation {validation.get('status')}",
                str(validation.get("reason") or ""),
            )
    for note in record_notes:
        add("Records file could not be read", note)
    if verdicts.note:
        add("No verdicts: differences between targets are not qualified", verdicts.note)
    return found


def _step_problems(data: RunData) -> list[tuple[str, str | None]]:
    """Steps whose numbers do not count: the load generator saturated, or otherwise invalid."""
    found: list[tuple[str, str | None]] = []
    steps = data.steps
    for row in steps[steps["loadgen_saturated"]].itertuples(index=False):
        where = f"{row.target}, {row.label}, repeat {fmt.num(row.repeat, 0)}"
        found.append((f"Load generator saturated: {where}", str(row.loadgen_note) or None))
    invalid = steps[steps["valid"].eq(False) & ~steps["loadgen_saturated"]]
    for row in invalid.itertuples(index=False):
        where = f"{row.target}, {row.label}, repeat {fmt.num(row.repeat, 0)}"
        found.append((f"Invalid step: {where}", str(row.invalid_reason) or None))
    # valid, but not rankable: its errors (by kind), or a confound such as a prompt cache
    failing = steps[steps["valid"].eq(True) & steps["eligible"].eq(False)]
    for row in failing.itertuples(index=False):
        where = f"{row.target}, {row.label}, repeat {fmt.num(row.repeat, 0)}"
        found.append((f"Not ranked: {where}", str(row.ineligible_reason) or None))
    return found


def _cosine(validation: dict[str, Any]) -> str:
    """A sentence encoder's cosine with the fp32 reference, mean / minimum ("" for others)."""
    mean, least = validation.get("cosine_mean"), validation.get("cosine_min")
    return f"{mean:.4f} / {least:.4f}" if fmt.finite(mean) and fmt.finite(least) else ""


def _variants(data: RunData) -> list[dict[str, Any]]:
    rows = []
    for variant in data.variants:
        v = variant.get("validation") or {}
        acc, ref = v.get("accuracy"), v.get("reference_accuracy")
        drop = (ref - acc) * 100 if fmt.finite(acc) and fmt.finite(ref) else None
        rows.append(
            {
                "name": variant.get("name"),
                "precision": variant.get("precision"),
                "artifact": variant.get("artifact"),
                "sha256": str(variant.get("sha256") or "")[:12],
                "accuracy": acc,
                "reference_accuracy": ref,
                "drop_points": drop,
                "max_abs_diff": v.get("max_abs_diff"),
                "agreement": v.get("agreement"),
                "cosine": _cosine(v),
                "status": v.get("status"),
                "reason": v.get("reason") or "",
            }
        )
    return rows


def _targets(data: RunData) -> list[dict[str, Any]]:
    rows = []
    for target in data.targets:
        settings = target.get("settings")
        fidelity = target.get("fidelity")
        skipped = target.get("status") == SKIPPED_STATUS  # not installed here, not failed
        rows.append(
            {
                "name": target.get("name"),
                "adapter": target.get("adapter"),
                "variant": target.get("variant"),
                "launcher": target.get("launcher"),
                "status": target.get("status"),
                "status_text": "skipped" if skipped else target.get("status"),
                "reason": str(target.get("error") or "not available here") if skipped else "",
                "startup_s": target.get("startup_s"),
                "settings": short_settings(settings),
                "stack": _stack_line(target.get("stack")),
                "fidelity": {k: fidelity.get(k) for k in FIDELITY_KEYS}
                if isinstance(fidelity, dict)
                else None,
                "log": target.get("log") or "",
            }
        )
    return rows


def _stack_line(stack: Any) -> str:
    """The served stack's versions as one line: "tritonserver 2.51.0, onnxruntime 1.32.0"."""
    if not isinstance(stack, dict):
        return ""
    return ", ".join(f"{k} {v}" for k, v in stack.items())


def _provenance(data: RunData) -> dict[str, Any]:
    prov = data.run.get("provenance") or {}
    hardware = prov.get("hardware") or {}
    git = prov.get("git") or {}
    command = data.run.get("command")
    gpus = hardware.get("gpus") or []
    return {
        "versions": sorted((str(k), str(v)) for k, v in (prov.get("versions") or {}).items()),
        "hardware": [
            ("CPU", hardware.get("cpu_model")),
            ("cores", hardware.get("cores")),
            ("memory (GB)", hardware.get("memory_gb")),
            (
                "GPUs",
                ", ".join(
                    json.dumps(g, default=str) if isinstance(g, dict) else str(g) for g in gpus
                )
                or "none",
            ),
        ],
        "host": [
            ("hostname", prov.get("hostname")),
            ("platform", prov.get("platform")),
            ("python", prov.get("python")),
            ("seed", prov.get("seed")),
            ("git revision", git.get("revision")),
            ("git tree", None if not git else ("dirty" if git.get("dirty") else "clean")),
            ("scenario file", data.run.get("scenario_file")),
        ],
        "command": shlex.join(str(c) for c in command) if isinstance(command, list) else "",
        "calibration": _calibration(data.run.get("calibration")),
    }


CALIBRATION_LABELS = (
    ("client_cpu_us_per_request", "client CPU per request, closed loop (µs)"),
    ("closed_loop_rps", "closed-loop throughput against the null server (req/s)"),
    ("floor_p50_ms", "latency floor p50 (ms)"),
    ("floor_p99_ms", "latency floor p99 (ms)"),
    ("open_rate", "open-loop check rate (req/s)"),
    ("open_achieved_rate_ratio", "open loop: achieved / requested send rate"),
    ("open_send_lag_p99_ms", "open loop: send lag p99 (ms)"),
    ("open_holds", "open loop held its schedule"),
    ("note", "note"),
)


def _calibration(figures: Any) -> list[tuple[str, Any]]:
    """The load generator's own overhead (run.json "calibration"), labelled for people."""
    if not isinstance(figures, dict):
        return []
    rows = []
    for key, label in CALIBRATION_LABELS:
        value = figures.get(key)
        if isinstance(value, float):
            value = f"{value:.3g}"
        rows.append((label, value))
    return rows
