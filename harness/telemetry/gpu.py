"""GPU telemetry through NVML (nvidia-ml-py): utilisation, memory, power, energy, clocks.

Energy per step comes from the total-energy counter's delta (millijoules since driver
load; a counter that went backwards, i.e. reset, falls back to integrating power). Where no
NVIDIA driver is present the sampler reports "no GPU" once and the run goes on.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.telemetry.base import Sampler

_init_error: str | None = None
_initialised = False


def _nvml() -> Any | None:
    """The initialised pynvml module, or None (reason in `_init_error`)."""
    global _init_error, _initialised
    if _initialised:
        import pynvml

        return pynvml
    if _init_error is not None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
    except ImportError:
        _init_error = "nvidia-ml-py is not installed"
        return None
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        _init_error = f"no GPU: {type(exc).__name__}: {exc}"
        return None
    _initialised = True
    return pynvml


def gpu_inventory() -> tuple[list[dict[str, Any]], str]:
    """([{index, name, memory_total_mb, driver, cuda}], reason when empty)."""
    nvml = _nvml()
    if nvml is None:
        return [], _init_error or "no GPU"
    gpus = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        gpus.append({
            "index": index,
            "name": _text(nvml.nvmlDeviceGetName(handle)),
            "memory_total_mb": nvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20,
            "driver": _text(nvml.nvmlSystemGetDriverVersion()),
            "cuda": _cuda_version(nvml),
        })  # fmt: skip
    return gpus, ""


def _cuda_version(nvml: Any) -> str | None:
    """The CUDA version the driver supports (12040 -> "12.4"), None where NVML cannot say."""
    try:
        number = int(nvml.nvmlSystemGetCudaDriverVersion())
    except Exception:  # NVMLError and an older binding without the call alike
        return None
    return f"{number // 1000}.{number % 1000 // 10}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class GpuSampler(Sampler):
    name = "gpu"

    def __init__(self, interval_s: float = 0.1, index: int = 0) -> None:
        super().__init__(interval_s)
        nvml = _nvml()
        if nvml is None:
            self.available, self.reason = False, _init_error or "no GPU"
            return
        self.nvml = nvml
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> dict[str, Any] | None:
        n, h = self.nvml, self.handle
        util = n.nvmlDeviceGetUtilizationRates(h)
        mem = n.nvmlDeviceGetMemoryInfo(h)
        row: dict[str, Any] = {
            "util_pct": util.gpu,
            "mem_util_pct": util.memory,
            "mem_used_mb": mem.used / 2**20,
            "mem_reserved_mb": getattr(mem, "reserved", 0) / 2**20,
            "power_w": n.nvmlDeviceGetPowerUsage(h) / 1000,
            "sm_clock_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
            "mem_clock_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM),
            "throttle_reasons": int(n.nvmlDeviceGetCurrentClocksThrottleReasons(h)),
        }
        try:
            row["energy_mj"] = n.nvmlDeviceGetTotalEnergyConsumption(h)
        except n.NVMLError:
            row["energy_mj"] = None  # older GPUs: integrate power instead
        return row

    def summary(self, frame: pd.DataFrame, requests: int, duration_s: float) -> dict[str, float]:
        if frame.empty:
            return {}
        energy_j = _energy_j(frame)
        result = {
            "gpu_util_pct": float(frame.util_pct.mean()),
            "gpu_mem_mb": float(frame.mem_used_mb.max()),
            "gpu_power_w": float(frame.power_w.mean()),
            "gpu_energy_j": energy_j,
        }
        if requests:
            result["energy_per_inference_mj"] = energy_j / requests * 1000
        return result


def _energy_j(frame: pd.DataFrame) -> float:
    counter = frame.get("energy_mj")
    if counter is not None and counter.notna().all() and len(counter) > 1:
        delta = float(counter.iloc[-1] - counter.iloc[0])
        if delta >= 0:  # a reset makes the counter go backwards: integrate power instead
            return delta / 1000
    t = frame.t_s.to_numpy()
    p = frame.power_w.to_numpy()
    return float(((p[1:] + p[:-1]) / 2 * (t[1:] - t[:-1])).sum()) if len(t) > 1 else 0.0
