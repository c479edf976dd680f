"""Synthetic request records and a large run folder, written with the real RunFolder API.

Kept fast on purpose (vectorised numpy, point statistics without the bootstrap): the suite
measures the report, not its own setup.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.load.records import ERR_NONE, ERR_TIMEOUT, StepRecords
from harness.results import RunFolder


def step_records(
    n: int, rate: float, median_ms: float, seed: int, warmup_s: float = 0.0
) -> StepRecords:
    """`n` requests at `rate`/s (Poisson arrivals), lognormal latency, 0.1% timeouts."""
    rng = np.random.default_rng(seed)
    intended = np.cumsum(rng.exponential(1e9 / rate, n)).astype(np.int64)
    latency = (rng.lognormal(math.log(median_ms), 0.35, n) * 1e6).astype(np.int64)
    error = np.where(rng.random(n) < 0.001, ERR_TIMEOUT, ERR_NONE).astype(np.int8)
    return StepRecords(
        intended_ns=intended,
        sent_ns=intended + rng.integers(2_000, 60_000, n),
        end_ns=intended + latency,
        status=np.where(error == ERR_NONE, 200, 0).astype(np.int16),
        error=error,
        warmup_ns=int(warmup_s * 1e9),
        window_ns=int(intended[-1]) + 1,
        wall_t0=1.7e9,
        client_cpu_s=n * 20e-6,
        client_wall_s=float(intended[-1]) / 1e9,
        requested_rate=rate,
        connections=16,
    )


def _row(name: str, level: int, rate: float, rec: StepRecords) -> dict[str, Any]:
    mask = rec.measured()
    ok = mask & (rec.error == 0)
    lat = rec.latency_ns[ok] / 1e6
    seconds = (rec.window_ns - rec.warmup_ns) / 1e9
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    rps = len(lat) / seconds
    return {
        "target": name, "adapter": "fastapi", "variant": "onnx", "launcher": "process",
        "profile": "sweep", "level": rate, "duration_s": seconds, "requests": int(mask.sum()),
        "errors": int((mask & (rec.error != 0)).sum()), "throughput_rps": rps,
        "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": lat.max(),
        "mean_ms": lat.mean(), "client_cpu_pct": 40.0, "achieved_rate_ratio": 1.0,
        "step": level, "repeat": 0, "label": f"open {rate:g}/s poisson", "mode": "open",
        "requested_rate": rate, "concurrency": None, "error_rate": 0.001, "goodput_rps": rps,
        "slo_ms": 20.0, "send_lag_p99_ms": 0.05, "loadgen_saturated": False, "loadgen_note": "",
        "connections": 16, "started_at": "2025-01-01T00:01:00+00:00",
        "p50_ms_ci_low": p50 * 0.98, "p50_ms_ci_high": p50 * 1.02,
        "p99_ms_ci_low": p99 * 0.95, "p99_ms_ci_high": p99 * 1.05,
        "throughput_rps_ci_low": rps * 0.99, "throughput_rps_ci_high": rps * 1.01,
        "cv": 0.01, "stable": True, "valid": True, "invalid_reason": "", "insufficient": "",
        "slo_percentile_ms": p99,
    }  # fmt: skip


def write_run(root: Path, targets: int, levels: int, per_step: int) -> Path:
    folder = RunFolder.create(root, "20250101-000000-perf")
    names = [f"target-{i:02d}" for i in range(targets)]
    folder.write_run({
        "run_id": folder.path.name, "scenario_name": "perf", "scenario_file": "perf.yaml",
        "scenario": {"name": "perf", "slo": {"latency_ms": 20.0, "percentile": 99.0},
                     "targets": [{"name": n} for n in names]},
        "command": ["servingbench", "run", "perf.yaml"], "started_at": "2025-01-01T00:00:00",
        "finished_at": "2025-01-01T02:00:00", "status": "finished", "failures": [],
        "provenance": {"versions": {}, "hardware": {"cores": 2}, "git": {}, "seed": 0},
    })  # fmt: skip
    folder.write_model({"name": "digits-cnn", "key": "0" * 16})
    folder.write_variants([])
    for t, name in enumerate(names):
        folder.update_target(name, {
            "adapter": "fastapi", "variant": "onnx", "launcher": "process",
            "settings": {"kind": "fastapi"}, "baseline": False, "status": "ok", "error": None,
            "startup_s": 1.0, "log": f"logs/{name}.log", "repeat": 0,
            "fidelity": {"passed": True, "samples": 64, "max_abs_diff": 1e-6, "agreement": 1.0,
                         "message": "ok"},
        })  # fmt: skip
        folder.log_path(name).write_text(f"{name} started\n")
        for level in range(levels):
            rate = 1000.0 * (level + 1)
            # targets differ a little, so verdicts have both ties and clear differences
            rec = step_records(per_step, rate, 1.0 + 0.05 * t + 0.1 * level, seed=t * 100 + level)
            folder.append_step(_row(name, level, rate, rec))
            folder.write_records(name, level, 0, rec)
    return folder.path
