"""Per-request record ingestion (the engine's `_Recorder.add`, the only per-request work
besides I/O) and a step's summary with its bootstrap intervals on 100k records."""

from __future__ import annotations

from typing import Any

from harness.load.engine import _Recorder
from harness.load.records import StepRecords
from harness.stats import StatsRules, summarize

BATCH = 10_000


def _ingest() -> _Recorder:
    rec = _Recorder()
    add = rec.add
    for i in range(BATCH):
        add(i, i + 1, i + 2, 200, 0)
    return rec


def test_recorder_add_10k(benchmark: Any, figures: dict[str, str]) -> None:
    rec = benchmark(_ingest)
    assert len(rec.end) == BATCH
    per_request_ns = benchmark.stats.stats.mean / BATCH * 1e9
    benchmark.extra_info["ns_per_request"] = per_request_ns
    figures["record ingestion (_Recorder.add)"] = f"{per_request_ns:,.0f} ns/request"


def test_summarize_100k(benchmark: Any, records_100k: StepRecords, figures: dict[str, str]) -> None:
    summary = benchmark.pedantic(
        summarize,
        args=(records_100k, 20.0, False, StatsRules()),
        rounds=5,
        iterations=1,
        warmup_rounds=1,
    )
    assert summary.requests > 80_000 and summary.p99_ms_ci_low <= summary.p99_ms
    figures["summarize 100k records (with bootstrap)"] = (
        f"{benchmark.stats.stats.mean * 1000:,.0f} ms"
    )
