"""A step plan: what one step of load asks for. A plain value object, shared by the load
profiles that make plans, the load backends that run them and the observers that show them;
it lives apart from the engine's hot path so none of those import the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StepPlan:
    mode: Literal["closed", "open"]
    duration_s: float
    warmup_s: float = 0.0
    concurrency: int = 1
    rate: float = 0.0
    arrival: Literal["constant", "poisson", "gamma", "trace"] = "poisson"
    burstiness: float = 1.0  # gamma: the gaps' shape (1 = Poisson, < 1 bursty)
    # The rate over the step, as knots (seconds from t0, factor of `rate`) joined by straight
    # lines and held after the last one: ramps and step changes. () = `rate` throughout.
    shape: tuple[tuple[float, float], ...] = ()
    shape_label: str = ""
    # trace: the endpoint's own arrival times (a replayed trace), played this much faster
    speedup: float = 1.0
    # an open step past saturation (its queue grows without bound) ends early
    stop_saturated: bool = True
    # "": no ids; else every request carries `X-Request-Id: <id_prefix>-<seed>-<index>`
    # (the records keep it, so they join with the server's own logs)
    id_prefix: str = ""
    timeout_s: float = 10.0
    max_connections: int = 2048
    max_requests: int = 2_000_000
    seed: int = 0
    keep_bodies: bool = False
    # A step ends once it has run duration_s AND has min_samples successful measured
    # requests AND (if settle) its last windows agree, or at max_duration_s, whichever comes
    # first; it ends on a whole stability window (an open-loop schedule stays intact).
    max_duration_s: float | None = None
    stability: tuple[float, int, float, float] | None = None  # window_s, windows, tol, q
    min_samples: int = 0
    settle: bool = False
    # A step whose failed share is already over this at its minimum duration cannot be
    # ranked whatever follows (slo.max_error_rate): it is not extended for samples.
    max_error_rate: float | None = None
    # Several load processes start together at this perf_counter_ns() (CLOCK_MONOTONIC is
    # shared by all processes), so their records share one t0 and merge directly.
    start_at_ns: int | None = None
    phase_s: float = 0.0  # shift of a constant schedule (interleaves split load processes)
    # a gamma schedule is not the sum of thinner gamma schedules: a split process makes the
    # whole one (rate x stride, the same seed) and sends every stride-th arrival of it
    stride: int = 1
    stride_index: int = 0

    @property
    def label(self) -> str:
        if self.mode == "closed":
            return f"closed c={self.concurrency}"
        if self.arrival == "trace":
            return f"trace x{self.speedup:g}"
        tail = f" {self.shape_label}" if self.shape_label else ""
        if self.arrival == "gamma":
            return f"open {self.rate:g}/s gamma b={self.burstiness:g}{tail}"
        return f"open {self.rate:g}/s {self.arrival}{tail}"

    @property
    def whole_schedule(self) -> bool:
        """Split load processes each make the whole schedule and send every stride-th
        arrival of it: a gamma, shaped or replayed schedule is not a sum of thinner ones."""
        return self.arrival in ("gamma", "trace") or bool(self.shape)

    @property
    def level(self) -> float:
        if self.arrival == "trace":
            return self.speedup
        return float(self.concurrency if self.mode == "closed" else self.rate)
