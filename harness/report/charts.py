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
