"""summary.json: the answers a platform team asks, per run, with their caveats.

- lowest p99 at the SLO level, highest throughput under the SLO, cheapest per million
  inferences, smallest memory: each names a winner among trusted targets (ran, answered
  correctly, not the floor) and says whether the verdicts call it significant;
- per target: its best throughput that met the SLO, cost at that throughput, peak server
  memory, startup time, fidelity and every caveat (unstable or invalid steps);
- for an LLM run (steps with a time to first token), also: the highest output tokens/s of
  a valid step within the TTFT/TPOT SLO (at least 99% of generations met both limits; any
  valid step when no token SLO is set), the lowest TTFT p99 (p90 where no target has a
  p99), and the cost per million output tokens at that tokens/s.
Reads only the run folder (like the report), so it can be rebuilt at any time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.cost import (
    CPU_DEFAULT,
    hardware_key,
    price_per_hour,
    rps_per_dollar_hour,
    usd_per_million,
    usd_per_million_tokens,
)
from harness.results import RunFolder, load_run

# A step is "within the token SLO" when at least this share of its generations met both the
# TTFT and the TPOT limits.
LLM_GOODPUT_WITHIN_SLO = 0.99


def _bool(series: pd.Series) -> pd.Series:
    return series.astype(str).str.lower().eq("true")


def _numbers(rows: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats; all NaN when the steps do not have it."""
    if column not in rows:
        return pd.Series(math.nan, index=rows.index, dtype=float)
    return pd.to_numeric(rows[column], errors="coerce").astype(float)


def is_llm_run(steps: pd.DataFrame | None) -> bool:
    """Whether any step measured a time to first token (the run served a generative model)."""
    return steps is not None and bool(_numbers(steps, "ttft_p50_ms").notna().any())


def _price(run: dict[str, Any]) -> dict[str, Any]:
    cost = (run.get("scenario") or {}).get("cost") or {}
    gpus = ((run.get("provenance") or {}).get("hardware") or {}).get("gpus") or []
    hardware = cost.get("hardware") or hardware_key(gpus[0]["name"] if gpus else None)
    try:
        usd = price_per_hour(hardware, cost.get("prices") or {}, cost.get("usd_per_hour"))
        note = "scenario" if cost.get("usd_per_hour") is not None else "price table"
    except KeyError as exc:
        hardware, usd, note = CPU_DEFAULT, price_per_hour(CPU_DEFAULT, {}, None), str(exc)
    return {"hardware": hardware, "usd_per_hour": usd, "source": note}


def _levels(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per level (label) of a target whose repeats may all be ranked."""
    if rows.empty or "label" not in rows:
        return pd.DataFrame(columns=["label", "throughput_rps", "slo_percentile_ms"])
    frame = rows.assign(
        ok=_bool(rows["eligible"]) if "eligible" in rows else True,
        throughput_rps=_numbers(rows, "throughput_rps"),
        slo_percentile_ms=_numbers(rows, "slo_percentile_ms"),
    )
    groups = frame.groupby("label", sort=False)
    levels = pd.DataFrame({
        "ok": groups["ok"].all(),
        "throughput_rps": groups["throughput_rps"].mean(),
        # NaN (too few samples) in any repeat makes the level's percentile unknown
        "slo_percentile_ms": groups["slo_percentile_ms"].apply(
            lambda v: float(v.max()) if v.notna().all() else math.nan),
    }).reset_index()  # fmt: skip
    return levels[levels["ok"]]


def _target_row(
    name: str, info: dict[str, Any], rows: pd.DataFrame, slo_ms: float, usd: float
) -> dict[str, Any]:
    # a level counts only when every repeat of it may be ranked (valid, errors within
    # slo.max_error_rate, server alive, no confound): one bad repeat and the level is out;
    # its throughput is the mean over repeats, its SLO percentile the worst repeat's
    levels = _levels(rows)
    meets = levels[levels["slo_percentile_ms"] <= slo_ms]
    best = meets.sort_values("throughput_rps", kind="stable").iloc[-1] if len(meets) else None
    caveats = []
    if "stable" in rows and (rows["stable"].astype(str) == "False").any():
        caveats.append("unstable steps")
    if "valid" in rows and not _bool(rows["valid"]).all():
        caveats.append("steps where the load generator was the bottleneck")
    if "eligible" in rows:
        failing = rows[~_bool(rows["eligible"]) & _bool(rows["valid"])]
        if len(failing):
            first = failing["ineligible_reason"].iloc[0]
            caveats.append(f"{len(failing)} step(s) not ranked: {first}")
    fidelity = info.get("fidelity") or {}
    if fidelity.get("passed") is False:
        caveats.append("fidelity check failed")
    if info.get("confound"):
        caveats.append(f"not ranked: {info['confound']}")
    if info.get("status") == "unavailable":
        caveats.append(f"skipped ({info.get('error') or 'not available here'})")
    throughput = float(best["throughput_rps"]) if best is not None else math.nan
    return {
        "adapter": info.get("adapter"),
        "variant": info.get("variant"),
        "status": info.get("status"),
        "baseline": bool(info.get("baseline")),
        "fidelity_passed": fidelity.get("passed"),
        "confound": info.get("confound"),
        "throughput_under_slo_rps": throughput,
        "at_level": None if best is None else str(best["label"]),
        "slo_percentile_ms_there": None if best is None else float(best["slo_percentile_ms"]),
        "max_throughput_rps": float(rows["throughput_rps"].max()) if len(rows) else math.nan,
        "lowest_p99_ms": float(rows["p99_ms"].min()) if len(rows) else math.nan,
        "usd_per_million": usd_per_million(throughput, usd),
        "rps_per_usd_hour": rps_per_dollar_hour(throughput, usd),
        "peak_rss_mb": float(rows["server_rss_mb"].max()) if "server_rss_mb" in rows else math.nan,
        "startup_s": info.get("startup_s"),
        "caveats": caveats,
    }


def _llm_fields(rows: pd.DataFrame, usd: float) -> dict[str, Any]:
    """Token answers for one target: best output tokens/s within the token SLO, lowest TTFT."""
    valid = rows[_bool(rows["eligible"])] if "eligible" in rows else rows
    tokens = _numbers(valid, "output_tokens_per_s")
    goodput = _numbers(valid, "llm_goodput_fraction")
    no_slo = _numbers(valid, "slo_ttft_ms").isna() & _numbers(valid, "slo_tpot_ms").isna()
    within = valid.assign(tokens=tokens, goodput=goodput)[
        (no_slo | (goodput >= LLM_GOODPUT_WITHIN_SLO)) & tokens.notna()
    ]
    best = within.sort_values("tokens", kind="stable").iloc[-1] if len(within) else None
    rate = float(best["tokens"]) if best is not None else math.nan
    return {
        "output_tokens_per_s_within_slo": rate,
        "tokens_at_level": None if best is None else str(best["label"]),
        "llm_goodput_fraction_there": math.nan if best is None else float(best["goodput"]),
        "lowest_ttft_p99_ms": float(_numbers(valid, "ttft_p99_ms").min()),
        "lowest_ttft_p90_ms": float(_numbers(valid, "ttft_p90_ms").min()),
        "usd_per_million_output_tokens": usd_per_million_tokens(rate, usd),
    }


def rankable(target: dict[str, Any]) -> bool:
    """A summary target that may win, be priced or be recommended: finished ok, not the
    floor, answered like the model, measured without a confound."""
    return (
        target["status"] == "ok"
        and not target["baseline"]
        and bool(target["fidelity_passed"])
        and not target.get("confound")
    )


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _winner(targets: dict[str, dict[str, Any]], key: str, lowest: bool) -> dict[str, Any] | None:
    eligible = {n: t for n, t in targets.items() if rankable(t) and _finite(t[key])}
    if not eligible:
        return None
    pick = (min if lowest else max)(eligible, key=lambda n: eligible[n][key])
    return {"target": pick, "value": eligible[pick][key], "caveats": eligible[pick]["caveats"]}


def _lowest_ttft(targets: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Lowest TTFT p99 among trusted targets; p90 when none of them has a p99."""
    for key, metric in (
        ("lowest_ttft_p99_ms", "ttft_p99_ms"),
        ("lowest_ttft_p90_ms", "ttft_p90_ms"),
    ):
        answer = _winner(targets, key, True)
        if answer is not None:
            return {**answer, "metric": metric}
    return None


def _llm_winners(targets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    return {
        "highest_output_tokens_within_slo": _winner(
            targets, "output_tokens_per_s_within_slo", False
        ),
        "lowest_ttft": _lowest_ttft(targets),
        "cheapest_per_million_output_tokens": _winner(
            targets, "usd_per_million_output_tokens", True
        ),
    }


def build_summary(run_dir: Path) -> dict[str, Any]:
    data = load_run(run_dir)
    run = data.run
    slo = data.scenario.get("slo") or {"latency_ms": math.inf}
    steps = data.steps if not data.steps.empty else None
    infos = {str(t["name"]): t for t in data.targets}
    price = _price(run)
    targets = {
        name: _target_row(
            name,
            info,
            steps[steps.target == name] if steps is not None else pd.DataFrame(),
            slo["latency_ms"],
            price["usd_per_hour"],
        )
        for name, info in infos.items()
    }
    llm = is_llm_run(steps)
    if llm and steps is not None:
        for name, row in targets.items():
            row.update(_llm_fields(steps[steps.target == name], price["usd_per_hour"]))
    return {
        "run_id": run.get("run_id"),
        "scenario": run.get("scenario_name"),
        "status": run.get("status"),
        "slo": slo,
        "price": price,
        "winners": {
            "highest_throughput_under_slo": _winner(targets, "throughput_under_slo_rps", False),
            "lowest_p99": _winner(targets, "lowest_p99_ms", True),
            "cheapest_per_million": _winner(targets, "usd_per_million", True),
            "smallest_memory": _winner(targets, "peak_rss_mb", True),
            **(_llm_winners(targets) if llm else {}),
        },
        "targets": targets,
    }


def write_summary(run_dir: Path) -> Path:
    summary = build_summary(run_dir)
    per_target = pd.DataFrame.from_dict(summary["targets"], orient="index").rename_axis("target")
    return RunFolder(Path(run_dir)).write_summary(summary, per_target)
