"""The SLO search section: the highest open-loop rate each target sustained within the SLO.

An SLO search profile (`harness.profiles.slo_search`) records its result in the target's
`search` entry: the rate found, the bracket [highest passing, lowest failing], whether
the bracket closed to the profile's precision, and how many steps it took.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report import charts
from harness.report.data import RunData
from harness.report.fmt import finite

PERCENTILE_COLUMNS = {50.0: "p50_ms", 90.0: "p90_ms", 99.0: "p99_ms"}


def searches(data: RunData) -> list[dict[str, Any]]:
    """One row per target whose profile was an SLO search, in scenario order."""
    rows = []
    for target in data.targets:
        found = target.get("search")
        if not isinstance(found, dict) or found.get("kind") != "slo_search":
            continue
        bracket = found.get("bracket")
        low, high = bracket if isinstance(bracket, list) and len(bracket) == 2 else (None, None)
        rows.append(
            {
                "target": str(target.get("name")),
                "rate": _number(found.get("rate")),
                "low": _number(low),
                "high": _number(high),
                "converged": found.get("converged") is True,
                "steps": _number(found.get("steps")),
                "slo_ms": _number(found.get("slo_ms")),
                "percentile": _number(found.get("percentile")),
            }
        )
    return rows


def _number(value: Any) -> float | None:
    return float(value) if finite(value) else None


def search_chart(
    data: RunData, rows: list[dict[str, Any]], marks: dict[str, str] | None = None
) -> str | None:
    """SLO percentile latency against offered rate for the searched targets (a PNG)."""
    series = search_series(data, rows)
    return charts.slo_search(*series, marks) if series is not None else None


def search_series(
    data: RunData, rows: list[dict[str, Any]]
) -> tuple[dict[str, pd.DataFrame], dict[str, float], float | None, str] | None:
    """(points per target, rate found per target, SLO in ms, percentile name), or None."""
    if not rows:
        return None
    percentile = next((r["percentile"] for r in rows if r["percentile"] is not None), None)
    slo_ms = next((r["slo_ms"] for r in rows if r["slo_ms"] is not None), data.slo_ms)
    points = {r["target"]: _points(data.steps, r["target"], percentile) for r in rows}
    found = {r["target"]: r["rate"] for r in rows if r["rate"] is not None}
    name = f"p{percentile:g}" if percentile is not None else "p99"
    return points, found, slo_ms, name


def _points(steps: pd.DataFrame, target: str, percentile: float | None) -> pd.DataFrame:
    """(rate, latency) per offered rate: the SLO percentile, or the nearest stored one."""
    rows = steps[(steps["target"] == target) & (steps["mode"] == "open")]
    column = PERCENTILE_COLUMNS.get(percentile if percentile is not None else 99.0, "p99_ms")
    latency = rows["slo_percentile_ms"].where(rows["slo_percentile_ms"].notna(), rows[column])
    frame = pd.DataFrame({"rate": rows["requested_rate"], "latency": latency})
    return frame.groupby("rate", sort=True)["latency"].mean().reset_index()
