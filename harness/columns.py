"""The catalogue of step columns: every column of steps.csv, defined once.

A step row is written from this list (`harness.results`), read back with the types it
declares, averaged over repeats where `mean` is set (the report), exported to MLflow where
`mlflow` is set, and headed in tables with its `heading` and `unit`. Columns common to every
run live here; a workload family adds its own (`Workload.columns`, e.g. time to first token
for generations), and `catalogue()` joins them in one fixed order, so a steps.csv header
never depends on which family ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

Kind = Literal["text", "number", "bool", "tristate"]


@dataclass(frozen=True)
class Column:
    name: str
    unit: str = ""  # "ms", "req/s", "%", "MB", "tok/s", "" (a count or a ratio)
    kind: Kind = "number"
    family: str = "core"  # "core", "server", "telemetry", or a workload family's name
    mean: bool = False  # averaged over the repeats of a (label, target)
    mlflow: bool = False  # logged as a per-step MLflow metric
    interval: tuple[str, str] | None = None  # (low, high) columns of its 95% interval
    heading: str = ""  # what a table calls it (default: the name)
    progress: str = ""  # a format for the progress line of a finished step, e.g. "{:.0f} tok/s"

    @property
    def title(self) -> str:
        return self.heading or self.name


def _n(name: str, unit: str = "", *, mean: bool = True, mlflow: bool = True, **kw: Any) -> Column:
    """A measured number: averaged over repeats and exported, unless told otherwise."""
    return Column(name, unit, "number", mean=mean, mlflow=mlflow, **kw)


def _text(name: str) -> Column:
    return Column(name, kind="text")


def _plain(name: str, unit: str = "", *, mean: bool = False) -> Column:
    """A number that describes the step rather than measures it (level, index, limit)."""
    return Column(name, unit, mean=mean)


# Who and what: the identity of a row.
IDENTITY = (
    _text("target"),
    _text("adapter"),
    _text("variant"),
    _text("launcher"),
    _text("profile"),
    _plain("level"),
)
# What the load engine measured (harness/stats.py StepSummary), in the historic order.
MEASURED = (
    _n("duration_s", "s", mlflow=False),
    _n("requests"),
    _n("errors"),
    _n(
        "throughput_rps",
        "req/s",
        interval=("throughput_rps_ci_low", "throughput_rps_ci_high"),
        heading="throughput",
    ),
    _n("p50_ms", "ms", interval=("p50_ms_ci_low", "p50_ms_ci_high"), heading="p50"),
    _n("p90_ms", "ms", heading="p90"),
    _n("p99_ms", "ms", interval=("p99_ms_ci_low", "p99_ms_ci_high"), heading="p99"),
    _n("max_ms", "ms", heading="max"),
    _n("mean_ms", "ms", heading="mean"),
    _n("client_cpu_pct", "%"),
    _n("achieved_rate_ratio"),
)
DESCRIBED = (
    _plain("step"),
    _plain("repeat"),
    _text("label"),
    _text("mode"),
    _plain("requested_rate", "req/s", mean=True),
    _plain("concurrency", mean=True),
    _n("error_rate"),
    _n("goodput_rps", "req/s"),
    _plain("slo_ms", "ms", mean=True),
    _n("send_lag_p99_ms", "ms", mlflow=False),
    Column("loadgen_saturated", kind="bool"),
    _text("loadgen_note"),
    _plain("connections"),
    _text("started_at"),
    # what ended the step: duration (it had enough at its minimum), samples / settled (it
    # was extended until it had them), max_duration (it had not, at its longest)
    _text("ended_by"),  # duration, samples, settled, max_duration, or errors (unrankable)
    _plain("samples_needed"),  # set when it ended at its longest without enough samples
)
CONFIDENCE = (
    _plain("p50_ms_ci_low", "ms"),
    _plain("p50_ms_ci_high", "ms"),
    _plain("p99_ms_ci_low", "ms"),
    _plain("p99_ms_ci_high", "ms"),
    _plain("throughput_rps_ci_low", "req/s"),
    _plain("throughput_rps_ci_high", "req/s"),
    _n("cv", mean=False),
    Column("stable", kind="tristate"),
    Column("valid", kind="tristate"),
    _text("invalid_reason"),
    _text("insufficient"),
    _n("slo_percentile_ms", "ms"),
)
# What failed, by kind (harness/stats.py error_counts), and whether the step may be ranked.
ERRORS = (
    _n("errors_shed", heading="shed (429/503)"),
    _n("errors_http_5xx", heading="HTTP 5xx"),
    _n("errors_http_4xx", heading="HTTP 4xx"),
    _n("errors_timeout", heading="timeouts"),
    _n("errors_connect", heading="connect failures"),
    _n("errors_lost", heading="connections lost"),
    _n("errors_bad_response", heading="bad answers"),
    _n("errors_inference", heading="inference errors"),
    _n("errors_short_output", heading="short outputs"),
    Column("eligible", kind="tristate"),
    _text("ineligible_reason"),
    _plain("max_error_rate"),
)
# The server's own view of the step, where its framework reports one (adapter `breakdown`).
SERVER = (
    _n("server_queue_ms", "ms", family="server"),
    _n("server_compute_ms", "ms", family="server"),
    _n("server_batch_avg", family="server"),
)
# Sampled beside the step (harness/telemetry).
TELEMETRY = (
    _n("server_cpu_pct", "%", family="telemetry", mean=False),
    _n("server_rss_mb", "MB", family="telemetry", mean=False),
    _n("gpu_util_pct", "%", family="telemetry", mean=False),
    _n("gpu_mem_mb", "MB", family="telemetry", mean=False),
    _n("gpu_power_w", "W", family="telemetry", mean=False),
    _n("gpu_energy_j", "J", family="telemetry", mean=False),
    _n("energy_per_inference_mj", "mJ", family="telemetry", mean=False),
)
CORE = (*IDENTITY, *MEASURED, *DESCRIBED, *CONFIDENCE, *ERRORS)


@cache
def catalogue() -> tuple[Column, ...]:
    """Every step column in steps.csv order: the core, the server view, each workload
    family's own columns, then telemetry (and the families' telemetry-derived columns)."""
    from harness import registry

    families = [w.columns for w in registry.workloads().values()]
    measured = [c for cols in families for c in cols if c.family != "telemetry"]
    derived = [c for cols in families for c in cols if c.family == "telemetry"]
    columns = (*CORE, *SERVER, *measured, *TELEMETRY, *derived, _text("workload"))
    names = [c.name for c in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # a family redefining a column would split its meaning
        raise ValueError(f"step columns defined twice: {', '.join(repeated)}")
    return columns


def names(kind: Kind | None = None) -> tuple[str, ...]:
    """Column names in steps.csv order (of one kind, if given)."""
    return tuple(c.name for c in catalogue() if kind is None or c.kind == kind)


def by_name() -> dict[str, Column]:
    return {c.name: c for c in catalogue()}


def mean_columns() -> list[str]:
    """What is averaged over repeats of the same (label, target)."""
    return [c.name for c in catalogue() if c.mean]


def mlflow_columns() -> tuple[str, ...]:
    return tuple(c.name for c in catalogue() if c.mlflow)


def interval_columns() -> dict[str, tuple[str, str]]:
    """Point estimate -> its (low, high) interval columns."""
    return {c.name: c.interval for c in catalogue() if c.interval is not None}


def of_family(family: str) -> tuple[str, ...]:
    return tuple(c.name for c in catalogue() if c.family == family)


def progress_figures(row: dict[str, object]) -> list[str]:
    """The formatted figures of a step row that its columns ask to show while running."""
    import math

    shown = []
    for column in catalogue():
        value = row.get(column.name)
        if column.progress and isinstance(value, int | float) and math.isfinite(value):
            shown.append(column.progress.format(value))
    return shown
