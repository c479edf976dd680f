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
ERR_SHORT_OUTPUT = 7  # a generation that returned fewer tokens than it was asked for
ERROR_NAMES = {
    ERR_NONE: "",
    ERR_HTTP_STATUS: "http_status",
    ERR_TIMEOUT: "timeout",
    ERR_CONNECTION: "connection_lost",
    ERR_PROTOCOL: "bad_response",
    ERR_CONNECT: "connect_failed",
    ERR_INFERENCE: "inference_error",
    ERR_SHORT_OUTPUT: "short_output",
}


@dataclass
class StreamColumns:
    """Token-level outcomes of streamed generations, aligned with a step's request columns.

    `first_ns` is the arrival of the first token (relative to t0, -1: none); token counts
    come from the server's `usage` (-1: not reported); inter-token gaps are kept flat with
    per-request offsets (`itl_offsets[i]:itl_offsets[i+1]`), so a step stays a few arrays.
    """

    first_ns: np.ndarray  # int64
    output_tokens: np.ndarray  # int32, usage.completion_tokens
    prompt_tokens: np.ndarray  # int32, usage.prompt_tokens
    events: np.ndarray  # int32, content chunks received
    itl_ns: np.ndarray  # int64, flat
    itl_offsets: np.ndarray  # int64, len n + 1

    def take(self, order: np.ndarray) -> StreamColumns:
        starts, ends = self.itl_offsets[:-1][order], self.itl_offsets[1:][order]
        lengths = ends - starts
        flat = (
            np.concatenate([self.itl_ns[s:e] for s, e in zip(starts, ends, strict=True)])
            if len(order)
            else self.itl_ns[:0]
        )
        return StreamColumns(
            self.first_ns[order], self.output_tokens[order], self.prompt_tokens[order],
            self.events[order], flat.astype(np.int64),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        )  # fmt: skip

    @staticmethod
    def concat(parts: list[StreamColumns]) -> StreamColumns:
        offsets, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            offsets.append(p.itl_offsets[1:] + base)
            base += int(p.itl_offsets[-1])

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return StreamColumns(
            joined("first_ns"),
            joined("output_tokens"),
            joined("prompt_tokens"),
            joined("events"),
            joined("itl_ns"),
            np.concatenate(offsets),
        )  # fmt: skip


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
    stream: StreamColumns | None = None  # streamed generations only (LLM endpoints)
    request_id: list[str] | None = None  # the X-Request-Id each request carried, if any
    turn: np.ndarray | None = None  # conversations: each request's turn (0 = the first)

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

    def to_columns(self) -> dict[str, Any]:
        columns: dict[str, Any] = {
            "intended_ns": self.intended_ns,
            "sent_ns": self.sent_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "error": self.error,
        }
        if self.request_id is not None:
            columns["request_id"] = self.request_id
        if self.turn is not None:
            columns["turn"] = self.turn
        if self.stream is not None:
            import pyarrow as pa

            s = self.stream
            columns |= {
                "first_token_ns": s.first_ns,
                "output_tokens": s.output_tokens,
                "prompt_tokens": s.prompt_tokens,
                "token_events": s.events,
                "itl_ns": pa.ListArray.from_arrays(pa.array(s.itl_offsets.astype(np.int32)),
                                                   pa.array(s.itl_ns)),
            }  # fmt: skip
        return columns
