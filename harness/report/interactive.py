"""Interactive charts: Vega-Lite specs built with altair, rendered in the page by vega-embed.

Readable at 15+ targets: the five best (the decision's order) get colours, the rest are grey
until picked; clicking a legend entry shows that target alone (shift-click adds more), the
others fade; hovering a point shows its value, its step and the steps.csv rows it comes
from; a drag zooms, a double click resets. The in-process floor is left off the axes (its
throughput would squeeze every real contender into a corner) and named in the caption.

The JavaScript (vega, vega-lite, vega-embed) comes from the vl-convert package and is
inlined once per page, so a report works offline. Specs travel as JSON inside
`<script type="application/json">` with `<`, `>` and `&` escaped, so no string from the run
folder can close the tag.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from harness.report.data import step_rows

TOP = 5  # targets coloured; the rest grey until picked
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]
GREY = "#b9b9b9"
WIDTH = 760
CDF_POINTS = 100  # quantiles per target and step: enough for a smooth curve, small pages


@lru_cache(maxsize=1)
def javascript() -> str:
    """vega + vega-lite + vega-embed as one classic script (sets window.vegaEmbed)."""
    import vl_convert

    return str(vl_convert.javascript_bundle(None))  # type: ignore[arg-type]  # None: no snippet


def spec_json(spec: Mapping[str, Any]) -> str:
    """A spec as JSON that is safe inside a <script> element."""
    text = json.dumps(spec, allow_nan=False, default=_plain)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _colour(order: Sequence[str]) -> Any:
    import altair as alt

    domain = list(order)
    colours = [PALETTE[i] if i < TOP else GREY for i in range(len(domain))]
    return alt.Color("target:N", scale=alt.Scale(domain=domain, range=colours),
                     legend=alt.Legend(title="target (click to pick)",
                                       symbolLimit=0, labelLimit=260))  # fmt: skip


def _ordered(order: Sequence[str], present: Iterable[str]) -> list[str]:
    """The targets present, in the ranking's order, then any the ranking does not name."""
    shown = list(dict.fromkeys(present))
    return [t for t in order if t in shown] + [t for t in shown if t not in order]


def _pick() -> Any:
    import altair as alt

    return alt.selection_point(fields=["target"], bind="legend", name="pick")


def _finish(chart: Any) -> dict[str, Any]:
    import altair as alt

    # our data are already summaries (quantiles, windows, steps): a few thousand rows at
    # most, inlined once; altair's 5,000-row guard is for raw data sets
    with alt.data_transformers.disable_max_rows():
        spec: dict[str, Any] = chart.to_dict()
    spec.pop("$schema", None)  # a URL the offline page never fetches
    return spec


def _limit(value: float, title: str, axis: str = "y") -> Any:
    """A dashed line at a limit (an SLO), with its value on hover."""
    import altair as alt

    frame = pd.DataFrame({"limit": [value], "name": [title]})
    encoding = {axis: alt.X("limit:Q") if axis == "x" else alt.Y("limit:Q"),
                "tooltip": [alt.Tooltip("name:N", title="limit"),
                            alt.Tooltip("limit:Q", format=",.2f", title="value")]}  # fmt: skip
    return alt.Chart(frame).mark_rule(color="#a61b1b", strokeDash=[4, 4]).encode(**encoding)


def _warmup(warmup_s: float | None) -> list[Any]:
    """A grey band over the warm-up (sent but not measured), or nothing."""
    import altair as alt

    if not warmup_s or not np.isfinite(warmup_s):
        return []
    frame = pd.DataFrame({"start": [0.0], "end": [float(warmup_s)]})
    return [alt.Chart(frame).mark_rect(color="#999999", opacity=0.18).encode(
        x="start:Q", x2="end:Q", tooltip=[alt.Tooltip("end:Q", format=".2f",
                                                      title="warm-up until (s)")])]  # fmt: skip


def _rows_of(steps: pd.DataFrame, target: str, label: str) -> str:
    return ", ".join(map(str, step_rows(steps, target, label)))


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    """NaN and infinities out: JSON has no such numbers (Vega reads null as missing)."""
    return frame.replace([np.inf, -np.inf], np.nan).astype(object).where(frame.notna(), None)


Spec = dict[str, Any]


def latency_vs_throughput(agg: pd.DataFrame, steps: pd.DataFrame, order: Sequence[str],
                          floors: set[str], slo_ms: float | None) -> Spec | None:  # fmt: skip
    """p50 and p99 against throughput: one line per target through its steps."""
    import altair as alt

    rows = agg[~agg["target"].isin(floors)]
    rows = rows[rows["throughput_rps"].notna()]
    if rows.empty:
        return None
    frame = pd.concat([
        pd.DataFrame({
            "target": rows["target"], "step": rows["label"], "order": rows["order"],
            "throughput": rows["throughput_rps"], "latency": rows[column],
            "percentile": name,
            "rows": [_rows_of(steps, t, lbl) for t, lbl in zip(rows["target"], rows["label"],
                                                                strict=True)],
        })
        for column, name in (("p50_ms", "p50"), ("p99_ms", "p99"))
    ])  # fmt: skip
    frame = frame[frame["latency"].notna() & (frame["latency"] > 0)]
    if frame.empty:
        return None
    pick = _pick()
    base = alt.Chart(_clean(frame)).encode(
        x=alt.X("throughput:Q", title="throughput (req/s)"),
        y=alt.Y("latency:Q", title="latency (ms, log)", scale=alt.Scale(type="log")),
        color=_colour(order),
        strokeDash=alt.StrokeDash("percentile:N", legend=alt.Legend(title="percentile")),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        order="throughput:Q",  # a line runs left to right, whatever order the steps ran in
        tooltip=["target:N", "step:N", "percentile:N",
                 alt.Tooltip("latency:Q", format=",.2f", title="latency (ms)"),
                 alt.Tooltip("throughput:Q", format=",.0f", title="throughput (req/s)"),
                 alt.Tooltip("rows:N", title="steps.csv rows")],
    )  # fmt: skip
    layers = [base.mark_line(), base.mark_point(filled=True, size=60)]
    if slo_ms:
        layers.append(_limit(slo_ms, "SLO (ms)"))
    chart = alt.layer(*layers).add_params(pick).properties(width=WIDTH, height=380).interactive()
    return _finish(chart)


def throughput_by_step(agg: pd.DataFrame, steps: pd.DataFrame, order: Sequence[str],
                       floors: set[str], labels: Sequence[str]) -> Spec | None:  # fmt: skip
    """Throughput of every target, one row of bars per step (small multiples)."""
    import altair as alt

    rows = agg[~agg["target"].isin(floors) & agg["throughput_rps"].notna()]
    if rows.empty:
        return None
    frame = pd.DataFrame({
        "target": rows["target"], "step": rows["label"], "throughput": rows["throughput_rps"],
        "low": rows["throughput_rps_lo"], "high": rows["throughput_rps_hi"],
        "rows": [_rows_of(steps, t, lbl) for t, lbl in zip(rows["target"], rows["label"],
                                                            strict=True)],
    })  # fmt: skip
    pick = _pick()
    bars = alt.Chart(_clean(frame)).mark_bar().encode(
        y=alt.Y("target:N", sort=list(order), title=None),
        x=alt.X("throughput:Q", title="throughput (req/s)"),
        color=_colour(order),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
        tooltip=["target:N", "step:N", alt.Tooltip("throughput:Q", format=",.1f"),
                 alt.Tooltip("low:Q", format=",.1f", title="interval low"),
                 alt.Tooltip("high:Q", format=",.1f", title="interval high"),
                 alt.Tooltip("rows:N", title="steps.csv rows")],
    ).add_params(pick).properties(width=WIDTH - 200, height=alt.Step(14))  # fmt: skip
    chart = bars.facet(row=alt.Row("step:N", sort=list(labels), title=None,
                                   header=alt.Header(labelAngle=0, labelAlign="left")))  # fmt: skip
    return _finish(chart.resolve_scale(x="independent"))


def throughput_vs_concurrency(
    agg: pd.DataFrame, steps: pd.DataFrame, order: Sequence[str], floors: set[str],
    column: str = "throughput_rps", unit: str = "req/s", what: str = "requests",
) -> Spec | None:  # fmt: skip
    """Closed-loop throughput against concurrency (log 2), its interval as a bar: a line
    that flattens is a stack at capacity. `column`: the rate drawn (output tokens/s for an
    LLM run), with its `_lo`/`_hi` interval where the run has one."""
    import altair as alt

    rows = agg[(agg["mode"] == "closed") & ~agg["target"].isin(floors)]
    rows = rows[rows[column].notna() & (rows["concurrency"].fillna(0) > 0)]
    if rows.empty:
        return None
    frame = pd.DataFrame({
        "target": rows["target"], "step": rows["label"],
        "concurrency": rows["concurrency"].astype(float), "throughput": rows[column],
        "low": rows.get(f"{column}_lo", rows[column]),
        "high": rows.get(f"{column}_hi", rows[column]),
        "rows": [_rows_of(steps, t, lbl) for t, lbl in zip(rows["target"], rows["label"],
                                                            strict=True)],
    })  # fmt: skip
    pick = _pick()
    x = alt.X("concurrency:Q", title=f"concurrency ({what} in flight, log scale)",
              scale=alt.Scale(type="log", base=2))  # fmt: skip
    base = alt.Chart(_clean(frame)).encode(
        x=x, color=_colour(order), opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=["target:N", "step:N", alt.Tooltip("throughput:Q", format=",.1f",
                                                   title=f"throughput ({unit})"),
                 alt.Tooltip("low:Q", format=",.1f", title="interval low"),
                 alt.Tooltip("high:Q", format=",.1f", title="interval high"),
                 alt.Tooltip("rows:N", title="steps.csv rows")],
    )  # fmt: skip
    y = alt.Y("throughput:Q", title=f"throughput ({unit})")
    layers = [
        base.mark_line().encode(y=y, order="concurrency:Q"),
        base.mark_point(filled=True, size=60).encode(y=y),
        base.mark_rule().encode(y="low:Q", y2="high:Q"),
    ]
    chart = alt.layer(*layers).add_params(pick).properties(width=WIDTH, height=340).interactive()
    return _finish(chart)


def latency_cdf(samples: Mapping[str, Mapping[str, np.ndarray]], order: Sequence[str],
                floors: set[str], labels: Sequence[str]) -> dict[str, Any] | None:  # fmt: skip
    """Latency CDFs of every step side by side (quantiles, not every request)."""
    import altair as alt

    parts = []
    qs = np.linspace(0, 1, CDF_POINTS + 1)[1:-1]
    for label in labels:
        for target, values in (samples.get(label) or {}).items():
            if target in floors or not len(values):
                continue
            parts.append(pd.DataFrame({"step": label, "target": target,
                                       "latency": np.quantile(values, qs), "share": qs,
                                       "n": len(values)}))  # fmt: skip
    if not parts:
        return None
    pick = _pick()
    chart = alt.Chart(_clean(pd.concat(parts))).mark_line().encode(
        x=alt.X("latency:Q", title="latency (ms, log)", scale=alt.Scale(type="log")),
        y=alt.Y("share:Q", title="share of requests", axis=alt.Axis(format="%")),
        color=_colour(order),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)),
        tooltip=["target:N", "step:N", alt.Tooltip("latency:Q", format=",.2f", title="ms"),
                 alt.Tooltip("share:Q", format=".1%", title="share"), "n:Q"],
    ).add_params(pick).properties(width=230, height=200).facet(
        facet=alt.Facet("step:N", sort=list(labels), title=None), columns=3)  # fmt: skip
    return _finish(chart.resolve_scale(x="independent"))


def over_time(latency: Mapping[str, pd.DataFrame], order: Sequence[str], floors: set[str],
              label: str, slo_ms: float | None,
              warmup_s: float | None = None) -> dict[str, Any] | None:  # fmt: skip
    """p99 per 100 ms window over the heaviest step; pick a target in the legend to see it."""
    import altair as alt

    parts = [frame.assign(target=name) for name, frame in latency.items()
             if name not in floors and not frame.empty]  # fmt: skip
    if not parts:
        return None
    frame = pd.concat(parts)[["t_s", "p50_ms", "p99_ms", "requests", "target"]]
    pick = _pick()
    base = alt.Chart(_clean(frame)).encode(
        x=alt.X("t_s:Q", title=f"time into the step (s): {label}"),
        color=_colour(order),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.08)),
        tooltip=["target:N", alt.Tooltip("t_s:Q", format=".1f", title="t (s)"),
                 alt.Tooltip("p50_ms:Q", format=",.2f"), alt.Tooltip("p99_ms:Q", format=",.2f"),
                 "requests:Q"],
    )  # fmt: skip
    chart = base.mark_line(strokeWidth=1.2).encode(
        y=alt.Y("p99_ms:Q", title="p99 per 100 ms window (ms, log)", scale=alt.Scale(type="log"))
    )
    layers = [chart, *_warmup(warmup_s)]  # the first layer holds the legend's pick
    if slo_ms:
        layers.append(_limit(slo_ms, "SLO (ms)"))
    spec = alt.layer(*layers).add_params(pick).properties(width=WIDTH, height=300).interactive()
    return _finish(spec)


def ranking_order(decision_table: Sequence[Any], agg: pd.DataFrame, targets: Sequence[str],
                  floors: set[str]) -> list[str]:  # fmt: skip
    """Targets in the decision's order, then the rest by their best throughput."""
    first = [s.target for s in decision_table]
    best = agg.groupby("target")["throughput_rps"].max() if len(agg) else pd.Series(dtype=float)
    rest = sorted((t for t in targets if t not in first and t not in floors),
                  key=lambda t: -float(best.get(t, 0) or 0))  # fmt: skip
    return first + rest


def server_load(process: Mapping[str, pd.DataFrame], gpu: Mapping[str, pd.DataFrame],
                order: Sequence[str], floors: set[str], label: str,
                warmup_s: float | None = None) -> Spec | None:  # fmt: skip
    """The server's CPU over the step `over_time` shows (all its processes; 100% = one
    core) and, where sampled, the GPU's utilisation and power: panels on one time axis."""
    import altair as alt

    panels: list[Any] = []
    pick = _pick()
    for series, column, title in (
        (process, "cpu_pct", "server CPU (%, 100 = one core)"),
        (gpu, "util_pct", "GPU utilisation (%)"),
        (gpu, "power_w", "GPU power (W)"),
    ):
        parts = [frame[["t_s", column]].assign(target=name) for name, frame in series.items()
                 if name not in floors and column in frame and not frame.empty]  # fmt: skip
        if not parts:
            continue
        frame = pd.concat(parts).rename(columns={column: "value"})
        line = alt.Chart(_clean(frame)).mark_line(strokeWidth=1.2).encode(
            x=alt.X("t_s:Q", title=f"time into the step (s): {label}"),
            y=alt.Y("value:Q", title=title),
            color=_colour(order),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.08)),
            tooltip=["target:N", alt.Tooltip("t_s:Q", format=".1f", title="t (s)"),
                     alt.Tooltip("value:Q", format=",.1f", title=title)],
        )  # fmt: skip
        if not panels:
            line = line.add_params(pick)  # defined once; every panel fades with it
        panels.append(alt.layer(line, *_warmup(warmup_s)).properties(width=WIDTH, height=150))
    if not panels:
        return None
    return _finish(alt.vconcat(*panels))


def startup_and_memory(startup_s: Mapping[str, float],
                       memory_mb: Mapping[str, Mapping[str, float]],
                       order: Sequence[str]) -> Spec | None:  # fmt: skip
    """Time to ready and each peak memory series, one panel each, one bar per target."""
    import altair as alt

    panels = [("time to ready (s)", startup_s), *memory_mb.items()]
    frame = pd.DataFrame(
        [{"target": t, "panel": title, "value": float(v)} for title, values in panels
         for t, v in values.items() if v is not None and np.isfinite(v)]
    )  # fmt: skip
    if frame.empty:
        return None
    names = _ordered(order, frame["target"])
    pick = _pick()
    bars = alt.Chart(frame).mark_bar().encode(
        y=alt.Y("target:N", sort=names, title=None),
        x=alt.X("value:Q", title=None),
        color=_colour(names),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
        tooltip=["target:N", alt.Tooltip("panel:N", title="figure"),
                 alt.Tooltip("value:Q", format=",.2f", title="value")],
    ).add_params(pick).properties(width=220, height=alt.Step(14))  # fmt: skip
    shown = [title for title, _ in panels if title in set(frame["panel"])]
    chart = bars.facet(column=alt.Column("panel:N", sort=shown, title=None))
    return _finish(chart.resolve_scale(x="independent"))


def accuracy_vs_speed(points: Sequence[tuple[str, str, float, float]],
                      reference: float | None) -> Spec | None:  # fmt: skip
    """One point per variant: its test accuracy against the best throughput of a trusted
    target serving it, the fp32 reference as a dashed line."""
    import altair as alt

    rows = [{"variant": v, "target": t, "throughput": rps, "accuracy": acc * 100,
             "drop": (reference - acc) * 100 if reference is not None else None}
            for v, t, rps, acc in points
            if np.isfinite(rps) and rps > 0 and np.isfinite(acc)]  # fmt: skip
    if not rows:
        return None
    frame = _clean(pd.DataFrame(rows))
    base = alt.Chart(frame).encode(
        x=alt.X("throughput:Q", title="best throughput of a target serving it (req/s)"),
        y=alt.Y("accuracy:Q", title="test accuracy (%)", scale=alt.Scale(zero=False)),
        tooltip=["variant:N", alt.Tooltip("target:N", title="fastest trusted target"),
                 alt.Tooltip("throughput:Q", format=",.1f", title="throughput (req/s)"),
                 alt.Tooltip("accuracy:Q", format=".2f", title="accuracy (%)"),
                 alt.Tooltip("drop:Q", format=".2f", title="drop vs fp32 (points)")],
    )  # fmt: skip
    layers = [
        base.mark_point(filled=True, size=90).encode(color=alt.Color("variant:N")),
        base.mark_text(align="left", dx=8, dy=-6).encode(text="variant:N"),
    ]
    if reference is not None and np.isfinite(reference):
        layers.append(_limit(reference * 100, "fp32 reference accuracy (%)"))
    return _finish(alt.layer(*layers).properties(width=WIDTH, height=300).interactive())


def slo_search(
    points: Mapping[str, pd.DataFrame], found: Mapping[str, float], slo_ms: float | None,
    percentile: str, order: Sequence[str],
) -> Spec | None:  # fmt: skip
    """The SLO percentile against offered rate (log-log) per searched target; a dashed
    vertical line at the highest rate each sustained within the SLO."""
    import altair as alt

    parts = [frame.assign(target=name) for name, frame in points.items() if not frame.empty]
    if not parts:
        return None
    frame = pd.concat(parts)
    frame = frame[(frame["rate"] > 0) & (frame["latency"] > 0)]
    if frame.empty:
        return None
    names = _ordered(order, points)
    pick = _pick()
    base = alt.Chart(_clean(frame)).encode(
        x=alt.X("rate:Q", title="offered rate (req/s, log)", scale=alt.Scale(type="log")),
        y=alt.Y("latency:Q", title=f"{percentile} latency (ms, log)", scale=alt.Scale(type="log")),
        color=_colour(names),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=["target:N", alt.Tooltip("rate:Q", format=",.1f", title="offered (req/s)"),
                 alt.Tooltip("latency:Q", format=",.2f", title=f"{percentile} (ms)")],
    )  # fmt: skip
    layers = [base.mark_line(point=True).encode(order="rate:Q").add_params(pick)]
    rates = pd.DataFrame([{"target": t, "rate": r} for t, r in found.items() if r and r > 0])
    if not rates.empty:
        layers.append(alt.Chart(rates).mark_rule(strokeDash=[6, 3]).encode(
            x="rate:Q", color=_colour(names),
            tooltip=["target:N", alt.Tooltip("rate:Q", format=",.1f",
                                             title="highest rate within the SLO")]))  # fmt: skip
    if slo_ms:
        layers.append(_limit(slo_ms, "SLO (ms)"))
    return _finish(alt.layer(*layers).properties(width=WIDTH, height=320).interactive())


def metric_by_step(agg: pd.DataFrame, labels: Sequence[str], order: Sequence[str],
                   floors: set[str], series: Sequence[tuple[str, str]], title: str,
                   limit: tuple[str, float] | None = None) -> Spec | None:  # fmt: skip
    """A per-step figure (TTFT, ITL) with one line per target and one dash per percentile
    (`series`: (column, percentile name)); steps on the x axis in the order they ran."""
    import altair as alt

    rows = agg[~agg["target"].isin(floors)]
    parts = [pd.DataFrame({"target": rows["target"], "step": rows["label"],
                           "percentile": name, "value": rows[column]})
             for column, name in series if column in rows]  # fmt: skip
    if not parts:
        return None
    frame = pd.concat(parts)
    frame = frame[frame["value"].notna() & (frame["value"] > 0)]
    if frame.empty:
        return None
    pick = _pick()
    base = alt.Chart(_clean(frame)).encode(
        x=alt.X("step:N", sort=list(labels), title=None, axis=alt.Axis(labelAngle=-30)),
        y=alt.Y("value:Q", title=title, scale=alt.Scale(type="log")),
        color=_colour(order),
        strokeDash=alt.StrokeDash("percentile:N", legend=alt.Legend(title="percentile")),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=["target:N", "step:N", "percentile:N",
                 alt.Tooltip("value:Q", format=",.2f", title=title)],
    )  # fmt: skip
    layers = [base.mark_line(point=True).add_params(pick)]
    if limit is not None and limit[1] > 0:
        layers.append(_limit(limit[1], limit[0]))
    return _finish(alt.layer(*layers).properties(width=WIDTH, height=320))


def pareto(points: pd.DataFrame, order: Sequence[str], floors: set[str]) -> dict[str, Any] | None:
    """Output tokens/s per user against tokens/s in total, one line per target through its
    load levels; the frontier's points (none better in both) are ringed. Up and right is
    better: a stack's line shows what each user gives up for more total throughput."""
    import altair as alt

    frame = points[~points["target"].isin(floors)] if len(points) else points
    if frame.empty:
        return None
    pick = _pick()
    base = alt.Chart(_clean(frame)).encode(
        x=alt.X("per_user:Q", title="output tokens/s per user (1000 / mean TPOT)"),
        y=alt.Y("total:Q", title="output tokens/s in total"),
        color=_colour(order),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=["target:N", "step:N",
                 alt.Tooltip("per_user:Q", format=",.1f", title="tok/s per user"),
                 alt.Tooltip("total:Q", format=",.1f", title="tok/s in total"),
                 alt.Tooltip("frontier:N", title="on the frontier")],
    )  # fmt: skip
    layers = [
        base.mark_line(strokeWidth=1.2).encode(order="per_user:Q"),
        base.mark_point(filled=True, size=50),
        base.transform_filter("datum.frontier").mark_point(size=220, strokeWidth=2, color="black"),
    ]
    chart = alt.layer(*layers).add_params(pick).properties(width=WIDTH, height=340).interactive()
    return _finish(chart)


def server_over_time(series: pd.DataFrame, order: Sequence[str],
                     labels: Sequence[str]) -> dict[str, Any] | None:  # fmt: skip
    """The server's gauges and the client's TTFT p50 over one step at a time (choose the
    step below the chart), one panel per series on a shared time axis."""
    import altair as alt

    if series.empty:
        return None
    steps = [lbl for lbl in labels if lbl in set(series["step"])] or sorted(set(series["step"]))
    choose = alt.param(name="step_shown", value=steps[0],
                       bind=alt.binding_select(options=steps, name="step "))  # fmt: skip
    panels = []
    for name in dict.fromkeys(series["series"]):
        mine = series[series["series"] == name]
        panels.append(
            alt.Chart(_clean(mine)).mark_line(strokeWidth=1.2, interpolate="step-after")
            .encode(
                x=alt.X("t_s:Q", title="time into the step (s)"),
                y=alt.Y("value:Q", title=str(name)),
                color=_colour(order),
                tooltip=["target:N", "step:N", alt.Tooltip("t_s:Q", format=".2f"),
                         alt.Tooltip("value:Q", format=",.2f", title=str(name))],
            )
            .transform_filter(alt.datum.step == choose)
            .properties(width=WIDTH, height=110)
        )  # fmt: skip
    return _finish(alt.vconcat(*panels).add_params(choose))


def convergence(frame: pd.DataFrame, unit: str, maximise: bool) -> Spec | None:
    """A tuning run's search, per stack: each finished trial's figure (points) and the best
    so far (a step line), against the trial number."""
    import altair as alt

    if frame.empty or not frame["value"].notna().any():
        return None
    # inline values: a pruned trial's missing figure stays null (a frame would send NaN)
    data = alt.Data(values=_clean(frame).to_dict("records"))
    pick = alt.selection_point(fields=["stack"], bind="legend", name="pickstack")
    colour = alt.Color("stack:N", legend=alt.Legend(title="stack (click to pick)"))
    base = alt.Chart(data).encode(
        x=alt.X("trial:Q", title="trial"),
        color=colour,
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.2)),
    )
    figure = f"{unit} ({'higher' if maximise else 'lower'} is better)"
    tips = [alt.Tooltip("stack:N"), alt.Tooltip("trial:Q"), alt.Tooltip("state:N"),
            alt.Tooltip("value:Q", format=",.1f"), alt.Tooltip("best:Q", format=",.1f",
                                                               title="best so far")]  # fmt: skip
    best = base.mark_line(interpolate="step-after").encode(y=alt.Y("best:Q", title=figure))
    points = base.mark_point(filled=True, size=45).encode(y="value:Q", tooltip=tips)
    chart = alt.layer(best, points).add_params(pick).properties(width=WIDTH, height=300)
    return _finish(chart.interactive())
