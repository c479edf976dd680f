"""The LLM serving section: token-level latency and throughput of streamed generations.

Shown only for runs whose steps carry token metrics (`ttft_p50_ms` with a value; see
`harness.llm.metrics`): time to first token and inter-token latency per step, output
tokens/s against concurrency, and a table per target and step. Targets whose adapter is
not installed here (status "unavailable") are listed as skipped, with the reason.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness import columns
from harness.report import charts
from harness.report.fmt import finite
from harness.results import RunData

# The generate family's own columns (harness/workloads/generate.py) but the telemetry-derived
# one, averaged over repeats of the same (label, target) as the comparison table does.
LLM_MEAN_COLUMNS = [
    *(c.name for c in columns.catalogue() if c.family == "generate"),
    "throughput_rps", "concurrency", "requested_rate",
]  # fmt: skip
SKIPPED_STATUS = "unavailable"


def is_llm(steps: pd.DataFrame) -> bool:
    """Whether any step measured a time to first token: the run served a generative model."""
    return "ttft_p50_ms" in steps and bool(steps["ttft_p50_ms"].notna().any())


def skipped_targets(data: RunData) -> list[tuple[str, str]]:
    """(name, reason) of targets that were not run because their stack is not installed."""
    return [
        (str(t.get("name")), str(t.get("error") or "not available here"))
        for t in data.targets
        if t.get("status") == SKIPPED_STATUS
    ]


def aggregate_llm(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, target): token metrics averaged over repeats."""
    flagged = steps.assign(invalid=steps["valid"].eq(False))
    groups = flagged.groupby(["label", "target"], sort=False)
    agg = groups[LLM_MEAN_COLUMNS].mean()
    agg["repeats"] = groups.size()
    agg["mode"] = groups["mode"].first()
    agg["invalid"] = groups["invalid"].any()
    agg["invalid_reason"] = groups["invalid_reason"].agg(
        lambda values: "; ".join(dict.fromkeys(str(v) for v in values if str(v)))
    )
    return agg.reset_index()


def _limit(steps: pd.DataFrame, column: str, scenario_key: str, data: RunData) -> float | None:
    """The SLO limit recorded with the steps, else the scenario's; None when there is none."""
    values = steps[column].dropna()
    values = values[values > 0]
    if len(values):
        return float(values.iloc[0])
    slo = data.scenario.get("slo")
    value = slo.get(scenario_key) if isinstance(slo, dict) else None
    return float(value) if finite(value) and value > 0 else None


def _telemetry(data: RunData, key: str, default: float) -> float:
    spec = data.scenario.get("telemetry")
    value = spec.get(key) if isinstance(spec, dict) else None
    return float(value) if finite(value) else default


def _workload(data: RunData) -> dict[str, Any] | None:
    """workload.json's request count and mean lengths, when the run wrote one."""
    spec = data.workload()
    if spec is None:
        return None
    return {
        "api": spec.get("api"),
        "requests": spec.get("requests"),
        "prompt_tokens_mean": spec.get("prompt_tokens_mean"),
        "output_tokens_mean": spec.get("output_tokens_mean"),
        "trace_file": spec.get("trace_file"),
        "trace_rows": spec.get("trace_rows"),
        "trace_span_s": spec.get("trace_span_s"),
        "trace_clipped_rows": spec.get("trace_clipped_rows"),
        "trace_reusable": spec.get("trace_reusable_prefix_fraction"),
    }


TTFT_SERIES = (("ttft_p99_ms", "p99"), ("ttft_p50_ms", "p50"))
ITL_SERIES = (("itl_p99_ms", "p99"), ("itl_p50_ms", "p50"))
STYLES = {"p99": "-", "p50": "--"}  # the PNGs' line styles


def llm_section(
    data: RunData,
    labels: list[str],
    targets: list[str],
    marks: dict[str, str] | None = None,
    static: bool = False,
) -> dict[str, Any] | None:
    """Table rows, notes and (`static`) PNG charts of the LLM section; None for a run that is
    not an LLM's. The interactive charts are drawn from `agg` and the limits."""
    steps = data.steps
    if steps.empty or not is_llm(steps):
        return None
    agg = aggregate_llm(steps)
    slo_ttft = _limit(steps, "slo_ttft_ms", "ttft_ms", data)
    slo_tpot = _limit(steps, "slo_tpot_ms", "tpot_ms", data)
    order = {name: i for i, name in enumerate(targets)}
    position = {label: i for i, label in enumerate(labels)}
    records = sorted(
        agg.to_dict("records"),
        key=lambda r: (order.get(str(r["target"]), len(order)), position.get(str(r["label"]), 0)),
    )
    rows = []
    for r in records:
        flags = [f"invalid: {r['invalid_reason']}" if r["invalid_reason"] else "invalid"]
        rows.append({**{str(k): v for k, v in r.items()}, "flags": flags if r["invalid"] else []})
    return {
        "slo_ttft_ms": slo_ttft,
        "slo_tpot_ms": slo_tpot,
        "server_tokens": bool(agg["server_output_tokens"].notna().any()),
        "rows": rows,
        "skipped": skipped_targets(data),
        "workload": _workload(data),
        "server_interval_s": _telemetry(data, "server_interval_s", 0.25),
        "ended_early": [
            (str(r["target"]), str(r["label"]), str(r.get("ineligible_reason") or ""))
            for r in steps.to_dict("records")
            if r.get("ended_by") == "saturated"
        ],
        "agg": agg,
        "charts": dict.fromkeys(("ttft", "itl", "tokens"))
        if not static
        else {
            "ttft": charts.metric_by_step(
                agg,
                labels,
                targets,
                [(column, STYLES[name], name) for column, name in TTFT_SERIES],
                "time to first token (ms, log scale)",
                ("TTFT SLO (ms)", slo_ttft) if slo_ttft is not None else None,
                marks,
            ),
            "itl": charts.metric_by_step(
                agg,
                labels,
                targets,
                [(column, STYLES[name], name) for column, name in ITL_SERIES],
                "inter-token latency (ms, log scale)",
                ("TPOT SLO (ms)", slo_tpot) if slo_tpot is not None else None,
                marks,
            ),
            "tokens": charts.throughput_vs_concurrency(
                agg,
                targets,
                marks,
                column="output_tokens_per_s",
                ylabel="output tokens/s",
                xlabel="concurrency (generations in flight, log scale)",
            ),
        },
    }
