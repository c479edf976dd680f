"""CPU and memory of a server's whole process tree (workers and children included)."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import psutil

from harness.telemetry.base import Sampler


class ProcessTreeSampler(Sampler):
    name = "process"

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        super().__init__(interval_s)
        self.pid = pid
        self._last: tuple[float, float] | None = None  # (monotonic, cpu seconds)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def read(self) -> dict[str, Any] | None:
        cpu = rss = 0.0
        procs = self._tree()
        for proc in procs:
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
            except psutil.Error:
                continue  # a worker that exited between listing and reading
        now = time.monotonic()
        last, self._last = self._last, (now, cpu)
        if last is None or now <= last[0]:
            return None
        return {
            "cpu_pct": max(0.0, (cpu - last[1]) / (now - last[0]) * 100),
            "rss_mb": rss / 2**20,
            "processes": len(procs),
        }

    def summary(self, frame: pd.DataFrame, requests: int, duration_s: float) -> dict[str, float]:
        if frame.empty:
            return {}
        return {"server_cpu_pct": float(frame.cpu_pct.mean()),
                "server_rss_mb": float(frame.rss_mb.max())}  # fmt: skip
