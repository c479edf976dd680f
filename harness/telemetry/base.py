"""A sampler thread: take a reading every interval until stopped; readings become a frame."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any

import pandas as pd


class Sampler(ABC):
    name: str = "sampler"

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = True
        self.reason = ""

    @abstractmethod
    def read(self) -> dict[str, Any] | None:
        """One reading (None to skip); called from the sampler thread."""

    def summary(self, frame: pd.DataFrame, requests: int, duration_s: float) -> dict[str, float]:
        """Figures for the step's row in steps.csv."""
        return {}

    def start(self) -> None:
        if not self.available:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"telemetry-{self.name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _loop(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            reading = self.read()
            if reading is not None:
                self.rows.append({"t_s": time.perf_counter() - t0, **reading})
            self._stop.wait(self.interval_s)  # sleeps; never spins beside the server

    def stop(self) -> pd.DataFrame:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5)
            self._thread = None
        frame = pd.DataFrame(self.rows)
        self.rows = []
        return frame


def start_all(samplers: list[Sampler]) -> None:
    for sampler in samplers:
        sampler.start()


def stop_all(samplers: list[Sampler]) -> dict[str, pd.DataFrame]:
    return {s.name: s.stop() for s in samplers if s.available}
