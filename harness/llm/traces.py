"""Production traces: when requests came, how long they were, which prompt blocks they shared.

Two public layouts are read:

- **Mooncake** JSONL, one request per line: `timestamp` (ms from the trace's start),
  `input_length`, `output_length`, `hash_ids` (ids of the 512-token prompt blocks: two
  requests that start with the same ids share that prefix, which is what a prefix cache
  can reuse);
- **Azure LLM inference trace** CSV: `TIMESTAMP` (a date and time), `ContextTokens`,
  `GeneratedTokens` (no prefix structure: every prompt is its own).

`scale` shrinks lengths and blocks alike, so a trace from a 128k-context model keeps its
shape on a small one; rows that still do not fit the model's context are clipped, and the
count is recorded in workload.json. `synthetic_mooncake` makes a small trace by code (tests,
the example scenario): Poisson arrivals, a few shared "system prompt" groups, varied lengths.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from harness.config import StrictModel

MOONCAKE_BLOCK_TOKENS = 512


@dataclass(frozen=True)
class TraceRow:
    t_s: float  # arrival, seconds from the trace's first request
    input_tokens: int
    output_tokens: int
    blocks: tuple[int, ...] = ()  # prompt block ids (shared prefixes); () = a prompt of its own


class TraceError(ValueError):
    """A trace file that cannot be read: says which line and what was expected."""


class TraceSpec(StrictModel):
    """Requests (lengths, shared prompt blocks) and their arrival times from a trace file."""

    path: str = Field(description="the trace file (relative: to the scenario file's folder)")
    format: Literal["mooncake", "azure"] | None = Field(
        None, description="default: from the suffix (.jsonl mooncake, .csv azure)"
    )
    scale: PositiveFloat = Field(
        1.0, le=1.0, description="multiply every length (and block size) by this"
    )
    block_tokens: PositiveInt = Field(
        MOONCAKE_BLOCK_TOKENS, description="tokens per hash_id block in the trace"
    )
    max_rows: PositiveInt | None = Field(None, description="replay only the first rows")
    skip_rows: NonNegativeInt = 0

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str) -> str:
        if not Path(value).is_file():
            raise ValueError(f"no trace file at {value} (a relative path is taken from the "
                             "scenario file's folder)")  # fmt: skip
        return value

    def layout(self) -> str:
        if self.format is not None:
            return self.format
        return "azure" if self.path.lower().endswith(".csv") else "mooncake"

    def read(self) -> list[TraceRow]:
        path = Path(self.path)
        rows = read_azure(path) if self.layout() == "azure" else read_mooncake(path)
        rows = rows[self.skip_rows :]
        if self.max_rows is not None:
            rows = rows[: self.max_rows]
        if not rows:
            raise TraceError(f"{path}: no requests to replay")
        start = rows[0].t_s
        return [TraceRow(r.t_s - start, r.input_tokens, r.output_tokens, r.blocks) for r in rows]


def _open(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror}") from exc


def read_mooncake(path: Path) -> list[TraceRow]:
    rows = []
    for number, line in enumerate(_open(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            row = TraceRow(
                float(obj["timestamp"]) / 1000.0,
                int(obj["input_length"]),
                int(obj["output_length"]),
                tuple(int(h) for h in obj.get("hash_ids") or ()),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise TraceError(
                f"{path}:{number}: expected a JSON object with timestamp (ms), input_length, "
                f"output_length and hash_ids, got {line[:80]!r} ({exc})"
            ) from exc
        if row.input_tokens < 1 or row.output_tokens < 1:
            raise TraceError(f"{path}:{number}: input_length and output_length must be >= 1")
        rows.append(row)
    return sorted(rows, key=lambda r: r.t_s)


def read_azure(path: Path) -> list[TraceRow]:
    from datetime import datetime

    rows = []
    reader = csv.DictReader(_open(path).splitlines())
    need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
    if not need <= set(reader.fieldnames or ()):
        raise TraceError(f"{path}: expected the columns {', '.join(sorted(need))}, "
                         f"got {', '.join(reader.fieldnames or ()) or 'none'}")  # fmt: skip
    for number, rec in enumerate(reader, 2):
        try:
            stamp = rec["TIMESTAMP"].strip()
            if "." in stamp:  # the trace has 7 fractional digits; datetime takes 6
                head, frac = stamp.split(".", 1)
                stamp = f"{head}.{frac[:6]}"
            when = datetime.fromisoformat(stamp).timestamp()
            row = TraceRow(when, int(rec["ContextTokens"]), int(rec["GeneratedTokens"]))
        except (ValueError, TypeError) as exc:
            raise TraceError(f"{path}:{number}: {exc}") from exc
        if row.input_tokens >= 1 and row.output_tokens >= 1:  # the trace has a few zeros
            rows.append(row)
    return sorted(rows, key=lambda r: r.t_s)


def synthetic_mooncake(
    rows: int = 300,
    rate: float = 4.0,
    seed: int = 0,
    groups: int = 4,
    block_tokens: int = MOONCAKE_BLOCK_TOKENS,
) -> list[dict[str, object]]:
    """A small Mooncake-layout trace: Poisson arrivals at `rate`/s; each request opens with
    one of `groups` shared system prompts (1-3 blocks) and continues with blocks of its own;
    inputs of 1-8 blocks, outputs of 16-256 tokens."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1000.0 / rate, rows)) - 0.0
    group_blocks = [list(range(g * 100, g * 100 + int(rng.integers(1, 4)))) for g in range(groups)]
    next_id = groups * 100
    out: list[dict[str, object]] = []
    for t in times:
        shared = group_blocks[int(rng.integers(0, groups))]
        own = int(rng.integers(0, 6))
        blocks = shared + list(range(next_id, next_id + own))
        next_id += own
        length = (len(blocks) - 1) * block_tokens + int(rng.integers(block_tokens // 4,
                                                                     block_tokens + 1))  # fmt: skip
        out.append({
            "timestamp": int(t),
            "input_length": length,
            "output_length": int(rng.integers(16, 257)),
            "hash_ids": blocks,
        })  # fmt: skip
    return out


def write_mooncake(rows: list[dict[str, object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
