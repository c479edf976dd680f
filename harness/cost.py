"""What a throughput costs: $ per million inferences (or, for an LLM, per million output
tokens) and requests/s per $/hour.

Prices are on-demand list prices per hour for one accelerator (or a small CPU instance),
rounded, as a starting point only: set your own in the scenario (`cost.usd_per_hour`, or
extra `cost.prices` entries). The hardware is the scenario's `cost.hardware`, else the
first GPU NVML reports, else the CPU default.
"""

from __future__ import annotations

import math
import re

# Illustrative defaults (USD per hour, on-demand, one device); override in the scenario.
DEFAULT_PRICES: dict[str, float] = {
    "nvidia-h200": 3.80,
    "nvidia-h100": 3.00,
    "nvidia-a100-80gb": 1.90,
    "nvidia-a100-40gb": 1.30,
    "nvidia-l40s": 1.10,
    "nvidia-a10g": 1.00,
    "nvidia-l4": 0.80,
    "nvidia-t4": 0.40,
    "cpu-2vcpu": 0.08,
    "cpu-8vcpu": 0.34,
}
CPU_DEFAULT = "cpu-2vcpu"


def hardware_key(gpu_name: str | None) -> str:
    """Map an NVML device name ('NVIDIA H100 80GB HBM3') to a price-table key."""
    if not gpu_name:
        return CPU_DEFAULT
    text = gpu_name.lower()
    for key in sorted(DEFAULT_PRICES, key=len, reverse=True):
        model = key.removeprefix("nvidia-")
        parts = model.split("-")
        if all(re.search(rf"\b{re.escape(p)}", text) for p in parts):
            return key
    return CPU_DEFAULT


def price_per_hour(hardware: str, prices: dict[str, float], override: float | None) -> float:
    if override is not None:
        return override
    table = {**DEFAULT_PRICES, **prices}
    if hardware not in table:
        raise KeyError(f"no price for hardware {hardware!r}; known: {', '.join(sorted(table))}")
    return table[hardware]


def usd_per_million(throughput_rps: float, usd_per_hour: float) -> float:
    if not (throughput_rps > 0 and math.isfinite(throughput_rps)):
        return math.nan
    return usd_per_hour / (throughput_rps * 3600) * 1e6


def usd_per_million_tokens(tokens_per_s: float, usd_per_hour: float) -> float:
    """$ per million output tokens at a sustained generation rate (LLM runs)."""
    return usd_per_million(tokens_per_s, usd_per_hour)


def rps_per_dollar_hour(throughput_rps: float, usd_per_hour: float) -> float:
    return throughput_rps / usd_per_hour if usd_per_hour > 0 else math.nan
