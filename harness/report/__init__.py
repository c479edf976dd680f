"""Render one self-contained HTML report from a run folder.

The run folder is the only input (see `harness.results`): the report can be re-rendered at
any time, including for a run that is still going or that died part way. Every string read
from the folder is escaped by jinja's autoescaping; the only generated markup is the chart
data URIs, which are plain base64 and need no `|safe`.
"""

from __future__ import annotations

import json
import os
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from harness.report import charts, fmt
from harness.report.comparison import NA_LEGEND, comparison, stability_rule
from harness.report.data import (
    RunData,
    RunFolderError,
    aggregate_steps,
    folder_listing,
    label_order,
    latency_samples,
    load_run,
    log_tail,
)
from harness.report.llm_view import SKIPPED_STATUS, llm_section
from harness.report.resources_view import accuracy_chart, resources_chart
from harness.report.search_view import search_chart, searches
from harness.report.summary import summarize, trust_reasons
from harness.report.timeline import timeline
from harness.report.verdicts_view import Verdicts, load_verdicts, verdict_tables

__all__ = ["RunFolderError", "render_report"]

TEMPLATE = "template.html.j2"
FIDELITY_KEYS = ("passed", "samples", "max_abs_diff", "agreement", "message")


def render_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the HTML report for `run_dir` (default `<run_dir>/report.html`); return its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    data = load_run(run_dir)
    html = _environment().get_template(TEMPLATE).render(**_context(data, out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
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


def _context(data: RunData, out: Path) -> dict[str, Any]:
    agg = aggregate_steps(data.steps)
    labels = label_order(data.steps)
    targets = data.target_names()
    samples, record_notes = latency_samples(data, seed=_seed(data))
    verdicts = load_verdicts(data)
    marks = {name: "fidelity failed" for name in data.fidelity_failed()}
    slo_searches = searches(data)
    return {
        "header": _header(data),
        "has_steps": not data.steps.empty,
        "summary": summarize(data, agg, labels, verdicts),
        "verdicts_source": verdicts.source,
        "verdicts_note": verdicts.note,
        "problems": _problems(data, record_notes, verdicts),
        "verdicts": verdict_tables(verdicts, labels, trust_reasons(data, agg), data.baselines()),
        "comparison": comparison(data, agg, labels, targets),
        "na_legend": NA_LEGEND,
        "stability_rule": stability_rule(data),
        "searches": slo_searches,
        "llm": llm_section(data, labels, targets, marks),
        "charts": {
            "latency": charts.latency_vs_throughput(agg, targets, data.slo_ms, marks),
            "throughput": charts.throughput_bars(agg, labels, targets, marks),
            "concurrency": charts.throughput_vs_concurrency(agg, targets, marks),
            "cdfs": [
                (label, charts.latency_cdf(samples.get(label, {}), targets, data.slo_ms, marks))
                for label in labels
            ],
            "search": search_chart(data, slo_searches, marks),
            "timeline": timeline(data, marks),
            "resources": resources_chart(data),
            "accuracy": accuracy_chart(data, agg),
        },
        "variants": _variants(data),
        "targets": _targets(data),
        "provenance": _provenance(data),
        "files": folder_listing(data.path, exclude=out),
        "answers": _answers(data),
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


def _answers(data: RunData) -> dict[str, Any] | None:
    """The run's summary.json answers (cost, memory, winners), built from the folder."""
    from harness.summary import build_summary

    if data.steps.empty or not (data.path / "targets.json").exists():
        return None
    try:
        built = build_summary(data.path)
    except (OSError, ValueError, KeyError):
        return None
    llm = "lowest_ttft" in built["winners"]
    winners = []
    for key, question, unit, digits in QUESTIONS + (LLM_QUESTIONS if llm else ()):
        answer = built["winners"].get(key)
        if answer is not None:
            if answer.get("metric") == "ttft_p90_ms":
                question = "Lowest TTFT p90 (no target has enough samples for a p99)"
            answer = {**answer, "value": f"{answer['value']:.{digits}f} {unit}"}
        winners.append((question, answer))
    return {
        "winners": winners,
        "price": built["price"],
        "targets": list(built["targets"].items()),
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
                log_tail(data, target) if state != "skipped" else None,
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
    return found


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
                "settings": json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
                if settings
                else "",
                "fidelity": {k: fidelity.get(k) for k in FIDELITY_KEYS}
                if isinstance(fidelity, dict)
                else None,
                "log": target.get("log") or "",
            }
        )
    return rows


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
