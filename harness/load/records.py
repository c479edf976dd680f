"""Per-request records of one step: flat numpy columns, cheap to pickle, merge and save."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Error codes on the hot path are small ints; their meaning lives here, once.
ERR_NONE = 0
ERR_HTTP_STATUS = 1
ERR_TIMEOUT = 2
ERR_CONNECTION = 3
ERR_PROTOCOL = 4
ERR_CONNECT = 5
ERR_INFERENCE = 6
ERROR_NAMES = {
    ERR_NONE: "",
    ERR_HTTP_STATUS: "http_status",
    ERR_TIMEOUT: "timeout",
    ERR_CONNECTION: "connection_lost",
    ERR_PROTOCOL: "bad_response",
    ERR_CONNECT: "connect_failed",
    ERR_INFERENCE: "inference_error",
}


@dataclass
class StepRecords:
    """Columns are aligned; times are ns relative to the step's t0 (perf_counter based)."""

    intended_ns: np.ndarray
    sent_ns: np.ndarray
    end_ns: np.ndarray
    status: np.ndarray
    error: np.ndarray
    warmup_ns: int
    window_ns: int  # end of the measured window (warm-up + duration)
    wall_t0: float  # wall clock (time.time) at t0, for timestamps only
    client_cpu_s: float = 0.0  # CPU of the load process over the whole step (with warm-up, drain)
    client_wall_s: float = 0.0
    requested_rate: float | None = None
    connections: int = 0
    connection_cap_hit: bool = False
    error_samples: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    t0_ns: int = 0  # perf_counter_ns() at t0 (CLOCK_MONOTONIC: comparable across processes)

    def __len__(self) -> int:
        return len(self.intended_ns)

    @property
    def latency_ns(self) -> np.ndarray:
        return self.end_ns - self.intended_ns

    @property
    def send_lag_ns(self) -> np.ndarray:
        return self.sent_ns - self.intended_ns

    def measured(self) -> np.ndarray:
        """Mask of requests intended inside the measured window (warm-up excluded)."""
        return (self.intended_ns >= self.warmup_ns) & (self.intended_ns < self.window_ns)

    def to_columns(self) -> dict[str, np.ndarray]:
        return {
            "intended_ns": self.intended_ns,
            "sent_ns": self.sent_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "error": self.error,
        }
