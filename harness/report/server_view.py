"""What the server said while each LLM step ran, beside what the client measured.

The server's gauges (requests running and waiting, KV-cache use, prefix-cache hits) come
from the `server` telemetry sampler (harness/telemetry/server.py); the client's TTFT p50
per window comes from the step's records by the time each first token arrived. Both clocks
start with the step (the sampler starts just before the load), so they share the time
axis to within milliseconds. One repeat per step: the first with both files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.prometheus import SERIES
from harness.results import RunData

WINDOW_S = 0.5
CLIENT = "client TTFT p50 (ms)"
COLUMNS = ["target", "step", "t_s", "series", "value"]


def server_series(data: RunData) -> pd.DataFrame:
    """Long form: (target, step label, t_s, series, value) over every step that has them."""
    steps = data.steps
    if steps.empty or "label" not in steps:
        return pd.DataFrame(columns=COLUMNS)
    parts: list[pd.DataFrame] = []
    seen: set[tuple[str, str]] = set()
    for row in steps.sort_values("repeat", kind="stable").to_dict("records"):
        key = (str(row["target"]), str(row["label"]))
        if key in seen or not _finite(row.get("step")) or not _finite(row.get("repeat")):
            continue
        step, repeat = int(row["step"]), int(row["repeat"])
        path = data.telemetry_path(key[0], step, repeat, "server")
        if path is None:
            continue
        seen.add(key)
        gauges = pd.read_parquet(path)
        for column, title in SERIES.items():
            if column in gauges:
                parts.append(pd.DataFrame({"t_s": gauges["t_s"], "value": gauges[column],
                                           "series": title}).assign(target=key[0],
                                                                    step=key[1]))  # fmt: skip
        client = _client_ttft(data, key[0], step, repeat)
        if client is not None:
            parts.append(client.assign(series=CLIENT, target=key[0], step=key[1]))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def _client_ttft(data: RunData, target: str, step: int, repeat: int) -> pd.DataFrame | None:
    found = data.records(target, step, repeat, ["intended_ns", "first_token_ns", "error"])
    if found is None or "first_token_ns" not in found.frame:
        return None
    frame = found.frame
    got = frame[(frame["first_token_ns"] >= 0) & (frame.get("error", 0) == 0)]
    if got.empty:
        return None
    first_s = got["first_token_ns"].to_numpy(np.int64) / 1e9
    ttft_ms = (got["first_token_ns"] - got["intended_ns"]).to_numpy(np.float64) / 1e6
    window = np.floor(first_s / WINDOW_S).astype(np.int64)
    grouped = pd.Series(ttft_ms).groupby(window).median()
    return pd.DataFrame({"t_s": (grouped.index.to_numpy(float) + 0.5) * WINDOW_S,
                         "value": grouped.to_numpy()})  # fmt: skip


def pareto_points(agg: pd.DataFrame) -> pd.DataFrame:
    """Per target and step: output tokens/s per user (1000 / mean TPOT) and in total, and
    whether the point is on the frontier over all targets (no point is better in both)."""
    need = {"tpot_mean_ms", "output_tokens_per_s", "target", "label"}
    if agg.empty or not need <= set(agg.columns):
        return pd.DataFrame(columns=["target", "step", "per_user", "total", "frontier"])
    rows = agg[(agg["tpot_mean_ms"] > 0) & (agg["output_tokens_per_s"] > 0)]
    frame = pd.DataFrame({
        "target": rows["target"].astype(str), "step": rows["label"].astype(str),
        "per_user": 1000.0 / rows["tpot_mean_ms"], "total": rows["output_tokens_per_s"],
    }).reset_index(drop=True)  # fmt: skip
    per_user, total = frame["per_user"].to_numpy(), frame["total"].to_numpy()
    frame["frontier"] = [
        not bool(((per_user >= u) & (total >= t) & ((per_user > u) | (total > t))).any())
        for u, t in zip(per_user, total, strict=True)
    ]
    return frame


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
