"""Charts as inline `data:image/png;base64,...` URIs, drawn with matplotlib's Agg renderer.

Figures are built with `matplotlib.figure.Figure` directly rather than through pyplot: no
global figure registry, no GUI backend, nothing to close, and the caller's own pyplot
backend (a notebook, say) is left alone. Saving a bare Figure to PNG always uses Agg.
Text that comes from the run folder goes through `plain()` so matplotlib never reads it
as mathtext (`$...$`) or as a hidden legend entry (a leading underscore).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter

DPI = 100
CDF_POINTS = 400  # quantiles drawn per line; enough for a smooth curve, small PNG
MAX_TEXT = 48


def plain(text: object) -> str:
    """A run-folder string made safe to show as literal matplotlib text."""
    value = str(text)
    if len(value) > MAX_TEXT:
        value = value[: MAX_TEXT - 1] + "…"
    value = value.replace("$", r"\$")
    return "\u200b" + value if value.startswith("_") else value


def _name(name: str, marks: Mapping[str, str] | None) -> str:
    """Legend text for a target, with its mark (e.g. "fidelity failed") when it has one."""
    mark = (marks or {}).get(name)
    return f"{plain(name)} [{plain(mark)}]" if mark else plain(name)


def _plain_numbers(axis: Axis) -> None:
    """Log-scale tick labels as 1, 10, 100 rather than 10^0, 10^1, 10^2."""
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))


def _colors(count: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    size = 10 if count <= 10 else 20
    return [cmap(i % size) for i in range(max(count, 1))]


def to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _legend(ax: Axes, count: int) -> None:
    if count:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def latency_vs_throughput(
    agg: pd.DataFrame,
    targets: Sequence[str],
    slo_ms: float | None,
    marks: Mapping[str, str] | None = None,
) -> str | None:
    """p50 (dashed) and p99 (solid) against throughput, one colour per target."""
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for name, color in zip(targets, _colors(len(targets)), strict=False):
        # one curve per target: its load levels ordered by the throughput they reached
        rows = agg[agg["target"] == name].sort_values("throughput_rps", kind="stable")
        for column, style, suffix in (("p99_ms", "-", "p99"), ("p50_ms", "--", "p50")):
            x, y = _positive_pairs(rows["throughput_rps"], rows[column])
            if len(x):
                ax.plot(
                    x,
                    y,
                    style,
                    marker="o",
                    markersize=3,
                    color=color,
                    label=f"{_name(name, marks)} {suffix}",
                )
                drawn += 1
    if not drawn:
        return None
    if slo_ms is not None and slo_ms > 0:
        ax.axhline(slo_ms, color="black", linewidth=1, linestyle=":", label=f"SLO {slo_ms:g} ms")
    ax.set_yscale("log")
    _plain_numbers(ax.yaxis)
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, drawn)
    return to_data_uri(fig)


def _positive_pairs(x: pd.Series, y: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    xs = x.to_numpy(dtype=float)
    ys = y.to_numpy(dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys) & (ys > 0)
    return xs[ok], ys[ok]


def throughput_bars(
    agg: pd.DataFrame,
    labels: Sequence[str],
    targets: Sequence[str],
    marks: Mapping[str, str] | None = None,
) -> str | None:
    """Grouped bars: one group per step label, one bar per target."""
    if agg.empty or not labels or not targets:
        return None
    table = agg.pivot_table(
        index="label", columns="target", values="throughput_rps", aggfunc="mean"
    )
    table = table.reindex(index=list(labels), columns=list(targets))
    if not np.isfinite(table.to_numpy(dtype=float)).any():
        return None
    width = 0.8 / len(targets)
    fig = Figure(figsize=(max(6.0, min(18.0, 1.2 + 0.9 * len(labels))), 4.4), layout="constrained")
    ax = fig.add_subplot()
    base = np.arange(len(labels))
    for i, (name, color) in enumerate(zip(targets, _colors(len(targets)), strict=False)):
        heights = np.nan_to_num(table[name].to_numpy(dtype=float), nan=0.0)
        ax.bar(
            base + (i - (len(targets) - 1) / 2) * width,
            heights,
            width,
            color=color,
            label=_name(name, marks),
        )
    ax.set_xticks(
        base, [plain(label) for label in labels], rotation=30, ha="right", fontsize="small"
    )
    ax.set_ylabel("throughput (requests/s)")
    ax.grid(True, axis="y", alpha=0.3)
    _legend(ax, len(targets))
    return to_data_uri(fig)


def latency_cdf(
    samples: Mapping[str, np.ndarray],
    targets: Sequence[str],
    slo_ms: float | None,
    marks: Mapping[str, str] | None = None,
) -> str | None:
    """Empirical CDF of per-request latency for one step label, one line per target."""
    names = [t for t in targets if t in samples and len(samples[t])]
    if not names:
        return None
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.add_subplot()
    quantiles = np.linspace(0.0, 1.0, CDF_POINTS)
    colors = dict(zip(targets, _colors(len(targets)), strict=False))
    for name in names:
        values = samples[name]
        values = values[np.isfinite(values) & (values > 0)]
        if len(values):
            ax.plot(
                np.quantile(values, quantiles),
                quantiles,
                color=colors[name],
                label=f"{_name(name, marks)} (n={len(values):,})",
            )
    if slo_ms is not None and slo_ms > 0:
        ax.axvline(slo_ms, color="black", linewidth=1, linestyle=":", label=f"SLO {slo_ms:g} ms")
    ax.set_xscale("log")
    _plain_numbers(ax.xaxis)
    ax.set_xlabel("latency from intended send (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, len(names))
    return to_data_uri(fig)


def slo_search(
    points: Mapping[str, pd.DataFrame],
    found: Mapping[str, float],
    slo_ms: float | None,
    percentile_name: str,
    marks: Mapping[str, str] | None = None,
) -> str | None:
    """The SLO percentile against offered rate, per searched target; the rate found dotted.

    `points` maps a target to a frame with `rate` and `latency` columns, ordered by rate.
    """
    names = list(points)
    fig = Figure(figsize=(9, 4.4), layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for name, color in zip(names, _colors(len(names)), strict=False):
        x, y = _positive_pairs(points[name]["rate"], points[name]["latency"])
        if not len(x):
            continue
        label = f"{_name(name, marks)} {plain(percentile_name)}"
        ax.plot(x, y, "-", marker="o", markersize=4, color=color, label=label)
        drawn += 1
        if name in found and found[name] > 0:
            ax.axvline(found[name], color=color, linewidth=1, linestyle="--", alpha=0.7)
    if not drawn:
        return None
    if slo_ms is not None and slo_ms > 0:
        ax.axhline(slo_ms, color="black", linewidth=1, linestyle=":", label=f"SLO {slo_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_numbers(ax.xaxis)
    _plain_numbers(ax.yaxis)
    ax.set_xlabel("offered rate (requests/s, log scale; dashed: highest rate within the SLO)")
    ax.set_ylabel(f"{plain(percentile_name)} latency (ms, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, drawn)
    return to_data_uri(fig)


def throughput_vs_concurrency(
    agg: pd.DataFrame,
    targets: Sequence[str],
    marks: Mapping[str, str] | None = None,
    column: str = "throughput_rps",
    ylabel: str = "throughput (requests/s)",
    xlabel: str = "concurrency (requests in flight, log scale)",
) -> str | None:
    """Closed-loop steps only: a rate (with its interval where the run has one: `<column>_lo`
    / `_hi`) against concurrency."""
    closed = agg[agg["mode"] == "closed"]
    fig = Figure(figsize=(9, 4.4), layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for name, color in zip(targets, _colors(len(targets)), strict=False):
        rows = closed[closed["target"] == name].sort_values("concurrency", kind="stable")
        x, y = (rows[c].to_numpy(dtype=float) for c in ("concurrency", column))
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        if not ok.any():
            continue
        errors = None
        if f"{column}_lo" in rows:
            low, high = (rows[f"{column}_{end}"].to_numpy(dtype=float)[ok] for end in ("lo", "hi"))
            errors = np.nan_to_num(np.vstack([y[ok] - low, high - y[ok]]).clip(min=0), nan=0.0)
        ax.errorbar(x[ok], y[ok], yerr=errors, fmt="-o", markersize=4, capsize=3, color=color,
                    label=_name(name, marks))  # fmt: skip
        drawn += 1
    if not drawn:
        return None
    ax.set_xscale("log", base=2)
    _plain_numbers(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, drawn)
    return to_data_uri(fig)


def startup_and_memory(
    startup_s: Mapping[str, float],
    memory_mb: Mapping[str, Mapping[str, float]],
    targets: Sequence[str],
) -> str | None:
    """Horizontal bars per target: time to ready, then each peak memory series given
    (e.g. {"peak server RSS (MB)": {...}, "peak GPU memory (MB)": {...}}); empty ones skipped."""
    panels = [("time to ready (s)", startup_s), *memory_mb.items()]
    panels = [(title, values) for title, values in panels if _finite_values(values, targets)]
    if not panels:
        return None
    names = [t for t in targets if any(t in values for _, values in panels)]
    fig = Figure(figsize=(9, max(2.4, 1.2 + 0.4 * len(names))), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colors = dict(zip(targets, _colors(len(targets)), strict=False))
    base = np.arange(len(names))
    for ax, (title, values) in zip(axes, panels, strict=True):
        heights = np.array([values.get(n, np.nan) for n in names], dtype=float)
        ax.barh(base, np.nan_to_num(heights, nan=0.0), color=[colors[n] for n in names])
        for y, value in zip(base, heights, strict=True):
            text = f" {value:.3g}" if np.isfinite(value) else " n/a"
            ax.text(np.nan_to_num(value, nan=0.0), y, text, va="center", fontsize="small")
        ax.set_title(title, fontsize="medium")
        ax.margins(x=0.25)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(base, [plain(n) for n in names], fontsize="small")
    axes[0].invert_yaxis()
    return to_data_uri(fig)


def _finite_values(values: Mapping[str, float], targets: Sequence[str]) -> bool:
    return any(np.isfinite(values.get(t, np.nan)) for t in targets)


def accuracy_vs_speed(
    points: Sequence[tuple[str, str, float, float]], reference: float | None
) -> str | None:
    """One labelled point per variant: (variant, served by, best throughput, accuracy 0-1)."""
    shown = [p for p in points if np.isfinite(p[2]) and p[2] > 0 and np.isfinite(p[3])]
    if not shown:
        return None
    fig = Figure(figsize=(9, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for (variant, target, rps, accuracy), color in zip(shown, _colors(len(shown)), strict=False):
        ax.scatter([rps], [accuracy * 100], s=50, color=color, zorder=3)
        ax.annotate(f"{plain(variant)}\n({plain(target)})", (rps, accuracy * 100),
                    textcoords="offset points", xytext=(6, 4), fontsize="small")  # fmt: skip
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference * 100, color="black", linewidth=1, linestyle=":",
                   label=f"fp32 reference {reference * 100:.2f}%")  # fmt: skip
        ax.legend(fontsize="small", loc="lower left", frameon=False)
    levels = [p[3] * 100 for p in shown]
    if reference is not None and np.isfinite(reference):
        levels.append(reference * 100)
    pad = max(1.0, (max(levels) - min(levels)) * 0.3)  # room for the labels
    ax.set_ylim(min(levels) - pad, min(max(levels) + pad, 100 + pad / 2))
    ax.set_xlim(0, max(p[2] for p in shown) * 1.25)
    ax.set_xlabel("best throughput of a target serving the variant (requests/s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    return to_data_uri(fig)


def latency_over_time(
    latency: Mapping[str, pd.DataFrame],
    process: Mapping[str, pd.DataFrame],
    gpu: Mapping[str, pd.DataFrame],
    warmup_s: float | None,
    slo_ms: float | None,
    marks: Mapping[str, str] | None = None,
) -> str | None:
    """Per-window p50 (dashed) / p99 (solid) over one step, with the server's CPU % and,
    when sampled, GPU utilisation (solid) and power (dotted) in panels below on the same
    time axis. Frames: latency (t_s, p50_ms, p99_ms), process (t_s, cpu_pct), gpu (t_s,
    util_pct, power_w)."""
    names = [n for n, frame in latency.items() if not frame.empty]
    if not names:
        return None
    rows = 1 + bool(process) + bool(gpu)
    # one legend entry per target (its colour); tall enough for many targets' entries
    top_height = max(3.6, 0.22 * (len(names) + 1) + 0.8)
    fig = Figure(figsize=(9, top_height + 2.0 * (rows - 1)), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    every = list(dict.fromkeys([*latency, *process, *gpu]))
    colors = dict(zip(every, _colors(len(every)), strict=False))
    top = axes[0]
    for name in names:
        frame = latency[name]
        top.plot(frame["t_s"], frame["p99_ms"], "-", color=colors[name], linewidth=1,
                 label=_name(name, marks))  # fmt: skip
        top.plot(frame["t_s"], frame["p50_ms"], "--", color=colors[name], linewidth=1)
    if slo_ms is not None and slo_ms > 0:
        top.axhline(slo_ms, color="black", linewidth=1, linestyle=":", label=f"SLO {slo_ms:g} ms")
    top.set_yscale("log")
    _plain_numbers(top.yaxis)
    top.set_ylabel("latency per window (ms)\nsolid p99, dashed p50")
    _legend(top, len(names))
    if process:
        ax = axes[1]
        for name, frame in process.items():
            ax.plot(frame["t_s"], frame["cpu_pct"], color=colors[name], label=_name(name, marks))
        ax.set_ylabel("server CPU (%)")
        ax.set_ylim(bottom=0)
        _legend(ax, len(process))
    if gpu:
        ax = axes[-1]
        power = ax.twinx()
        for name, frame in gpu.items():
            ax.plot(frame["t_s"], frame["util_pct"], color=colors[name])
            if "power_w" in frame:
                power.plot(frame["t_s"], frame["power_w"], ":", color=colors[name])
        ax.set_ylabel("GPU utilisation (%)")
        power.set_ylabel("GPU power (W, dotted)")
        ax.set_ylim(0, 105)  # colours as in the latency panel's legend
    for ax in axes:
        if warmup_s:
            ax.axvspan(0, warmup_s, color="0.85", alpha=0.5, linewidth=0)
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].set_xlabel("time since step start (s); grey: warm-up, not measured")
    return to_data_uri(fig)


def metric_by_step(
    agg: pd.DataFrame,
    labels: Sequence[str],
    targets: Sequence[str],
    series: Sequence[tuple[str, str, str]],
    ylabel: str,
    limit: tuple[str, float] | None = None,
    marks: Mapping[str, str] | None = None,
) -> str | None:
    """Per-step lines, one colour per target, one line style per `series` entry
    (column, style, suffix); steps on the x axis in the order they ran. `limit` is an
    optional (name, value) horizontal line, e.g. ("TTFT SLO", 250.0)."""
    if agg.empty or not labels:
        return None
    fig = Figure(figsize=(max(9.0, min(18.0, 1.2 + 0.9 * len(labels))), 4.6), layout="constrained")
    ax = fig.add_subplot()
    base = np.arange(len(labels))
    drawn = 0
    for name, color in zip(targets, _colors(len(targets)), strict=False):
        rows = agg[agg["target"] == name].set_index("label").reindex(list(labels))
        for column, style, suffix in series:
            y = rows[column].to_numpy(dtype=float)
            ok = np.isfinite(y) & (y > 0)
            if ok.any():
                ax.plot(base[ok], y[ok], style, marker="o", markersize=4, color=color,
                        label=f"{_name(name, marks)} {suffix}")  # fmt: skip
                drawn += 1
    if not drawn:
        return None
    if limit is not None and limit[1] > 0:
        ax.axhline(limit[1], color="black", linewidth=1, linestyle=":",
                   label=f"{plain(limit[0])} {limit[1]:g}")  # fmt: skip
    ax.set_yscale("log")
    _plain_numbers(ax.yaxis)
    ax.set_xticks(
        base, [plain(label) for label in labels], rotation=30, ha="right", fontsize="small"
    )
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, drawn)
    return to_data_uri(fig)
