"""The comparison tables: one per step label, one row per target, with flags.

Percentiles and throughput carry their 95% interval for a single repeat; with repeats the
bracket is the range of the per-repeat point estimates (each repeat's own interval is in
steps.csv, and the pooled comparison between targets is the verdicts' job).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.confidence import MIN_TAIL_SAMPLES
from harness.report.data import SERVER_COLUMNS, RunData
from harness.report.fmt import finite

RATE_SHORTFALL = 0.95  # achieved/requested below this is flagged
PERCENTILE_COLUMNS = {50.0: "p50_ms", 90.0: "p90_ms", 99.0: "p99_ms"}
NA_LEGEND = (
    f"n/a* = insufficient data: fewer than {MIN_TAIL_SAMPLES} requests beyond this "
    "percentile, so it is left out rather than guessed"
)


def comparison(
    data: RunData, agg: pd.DataFrame, labels: list[str], targets: list[str]
) -> list[dict[str, Any]]:
    status = {str(t.get("name")): t.get("status") for t in data.targets}
    rank = {name: i for i, name in enumerate(targets)}
    tables = []
    for label in labels:
        rows = agg[agg["label"] == label].copy()
        rows["rank"] = rows["target"].map(rank)
        records = [
            {str(k): v for k, v in row.items()}
            for row in rows.sort_values("rank", kind="stable").to_dict("records")
        ]
        for row in records:
            row["flags"] = flags(row, data, status)
            row["na"] = [n.strip() for n in str(row["insufficient"]).split(",") if n.strip()]
        repeats = sorted({int(r["repeats"]) for r in records})
        tables.append(
            {
                "label": label,
                "rows": records,
                "repeats": repeats,
                "server": any(finite(r[c]) for r in records for c in SERVER_COLUMNS),
                "insufficient": any(r["na"] for r in records),
            }
        )
    return tables


def flags(row: dict[str, Any], data: RunData, status: dict[str, Any]) -> list[str]:
    found = []
    if row["target"] in data.fidelity_failed():
        found.append("fidelity failed")
    if row["target"] in data.baselines():
        found.append("baseline (floor)")
    if status.get(row["target"]) == "failed":
        found.append("target failed")
    if row["loadgen_saturated"]:
        found.append("invalid: load generator saturated")
    elif row["invalid"]:
        found.append(f"invalid: {row['invalid_reason']}" if row["invalid_reason"] else "invalid")
    if row["unstable"]:
        found.append("unstable")
    if row["insufficient"]:
        found.append(f"insufficient data: {row['insufficient']}")
    if row["ineligible"] and not row["invalid"]:
        found.append(f"not ranked: {row['ineligible_reason']}")
    elif finite(row["errors"]) and row["errors"] > 0:
        found.append("errors")
    if finite(row["achieved_rate_ratio"]) and row["achieved_rate_ratio"] < RATE_SHORTFALL:
        found.append(f"below {RATE_SHORTFALL:.0%} of requested rate")
    column = PERCENTILE_COLUMNS.get(data.slo_percentile or -1.0)
    slo = data.slo_ms
    if column and slo is not None and finite(row[column]) and row[column] > slo:
        found.append(f"p{data.slo_percentile:g} over SLO")
    return found


def stability_rule(data: RunData) -> str:
    """The scenario's stability rule in words, for the "unstable" flag's legend."""
    rule = data.stability
    windows, window_s = rule.get("windows"), rule.get("window_s")
    tolerance, percentile = rule.get("tolerance"), rule.get("percentile")
    if not (finite(windows) and finite(window_s) and finite(tolerance)):
        return ""
    q = f"p{percentile:g}" if finite(percentile) else "the latency percentile"
    text = (
        f"unstable = the last {windows:g} windows of {window_s:g} s disagree by more than "
        f"{tolerance:.0%} on throughput or {q}"
    )
    longest = rule.get("max_duration_s")
    return text + (f" (steps extended up to {longest:g} s)" if finite(longest) else "")
