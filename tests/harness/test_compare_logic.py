"""The gate's reasoning on run folders whose figures are known: the machine as a control,
broken targets, what one measurement a side can say. (The runs themselves are exercised
against real servers in tests/integration/test_compare.py and benchmarks/gate_bench.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.compare import compare, estimate
from harness.results import RunFolder


def write_run(root: Path, name: str, p50: dict[str, list[float]], *, duration: float = 2.0,
              eligible: bool = True, status: str = "ok") -> Path:  # fmt: skip
    folder = RunFolder.create(root, name)
    folder.write_run({"scenario": {"name": "known", "load": {"duration_s": duration}},
                      "status": "finished", "started_at": name})  # fmt: skip
    for target, values in p50.items():
        floor = target == "floor"
        folder.update_target(target, {"adapter": "inprocess" if floor else "http",
                                      "baseline": floor, "status": "ok" if floor else status,
                                      "fidelity": {"passed": True}})  # fmt: skip
        for repeat, value in enumerate(values):
            folder.append_step({"target": target, "profile": "closed", "level": 4,
                                "label": "closed c=4", "step": 0, "repeat": repeat,
                                "p50_ms": value, "p99_ms": value * 2,
                                "throughput_rps": 4000 / value, "valid": True,
                                "eligible": floor or eligible,
                                "ineligible_reason": "" if eligible else "93% errors"})  # fmt: skip
    return folder.path


def spread(centre: float, n: int = 4, seed: int = 0) -> list[float]:
    return list(centre * np.exp(np.random.default_rng(seed).normal(0, 0.01, n)))


def test_a_machine_that_moved_is_not_a_regression(tmp_path: Path) -> None:
    base = write_run(tmp_path, "a", {"floor": spread(1.0), "svc": spread(5.0, seed=1)})
    # everything 30% slower, the floor too: the machine moved, not the target
    slow = write_run(tmp_path, "b", {"floor": spread(1.3, seed=2), "svc": spread(6.5, seed=3)})
    result = compare([base], [slow], threshold=0.10)
    svc = result.changes[result.changes.target == "svc"].set_index("metric")
    assert svc.loc["p50_ms", "ratio"] == pytest.approx(1.3, rel=0.02)
    assert svc.loc["p50_ms", "word"] == "machine" and svc.loc["p50_ms", "machine"]
    assert not result.changes["regression"].any() and result.exit_code() == 0
    assert any(
        n.startswith("the floor (floor) moved x1.") and "the machine" in n for n in result.notes
    )
    floor = result.changes[result.changes.target == "floor"]
    assert (floor["word"] == "floor").all()  # the control itself is never gated
    # ... but a target 60% slower on a machine 30% slower has regressed by itself
    worse = write_run(tmp_path, "c", {"floor": spread(1.3, seed=4), "svc": spread(8.0, seed=5)})
    result = compare([base], [worse], threshold=0.10)
    svc = result.changes[result.changes.target == "svc"].set_index("metric")
    assert svc.loc["p50_ms", "word"] == "regression" and result.exit_code() == 1


def test_a_target_that_broke_fails_the_gate_with_its_reason(tmp_path: Path) -> None:
    base = write_run(tmp_path, "a", {"svc": spread(5.0)})
    broken = write_run(tmp_path, "b", {"svc": spread(5.0, seed=1)}, eligible=False,
                       status="failed")  # fmt: skip
    result = compare([base], [broken])
    assert result.exit_code() == 1
    words = set(result.changes["word"])
    assert words == {"broken"}
    assert any("93% errors" in r for r in result.changes["reason"])


def test_scenario_content_that_differs_blocks_and_is_named(tmp_path: Path) -> None:
    base = write_run(tmp_path, "a", {"svc": spread(5.0)})
    other = write_run(tmp_path, "b", {"svc": spread(5.0, seed=1)}, duration=5.0)
    result = compare([base], [other])
    [found] = [m for m in result.mismatches if m.kind == "scenario"]
    assert found.what == "load.duration_s" and (found.base, found.new) == ("2.0", "5.0")
    assert found.blocking and result.exit_code() == 2
    assert result.exit_code(allow_mismatch=True) == 0


def test_detectable_change_shrinks_with_more_units() -> None:
    rng = np.random.default_rng(0)
    few = estimate(np.exp(rng.normal(0, 0.05, 3)), np.exp(rng.normal(0, 0.05, 3)))
    many = estimate(np.exp(rng.normal(0, 0.05, 12)), np.exp(rng.normal(0, 0.05, 12)))
    assert few is not None and many is not None
    assert many.detectable() < few.detectable()
    assert estimate(np.array([1.0]), np.array([1.1])) is None  # one a side: unknown
    # a new run against a history of five borrows the history's spread
    borrowed = estimate(np.exp(rng.normal(0, 0.05, 5)), np.array([1.0]))
    assert borrowed is not None and borrowed.df == 4
