"""Telemetry samplers run beside each step: the server's processes, and the GPU via NVML.

Each sampler is a thread taking a reading every `interval_s`; `stop()` returns the time
series (kept per step in the run folder) and `summary()` the few figures that go into the
step's row. A sampler that cannot work here (no NVIDIA driver) says so once and yields
nothing; the run goes on.
"""

from harness.telemetry.base import Sampler, start_all, stop_all
from harness.telemetry.gpu import GpuSampler, gpu_inventory
from harness.telemetry.process import ProcessTreeSampler
from harness.telemetry.server import ServerSeriesSampler

__all__ = [
    "GpuSampler",
    "ProcessTreeSampler",
    "Sampler",
    "ServerSeriesSampler",
    "gpu_inventory",
    "start_all",
    "stop_all",
]
