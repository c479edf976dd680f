"""Confidence intervals, stability and verdict words on data with known truth (no network)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.confidence import (
    bootstrap,
    ci_block_seconds,
    enough_samples,
    interval,
    make_blocks,
    rate_ci,
    ratio_ci,
    stable,
    verdict_word,
)


def uniform_blocks(seed: int, n: int = 5000, low: float = 10, high: float = 30, rate_skew=1.0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 5e9, n)).astype(np.int64)
    latency = rng.uniform(low, high, n) * np.where(t > 2.5e9, rate_skew, 1.0)
    return make_blocks(t, latency, 0, int(5e9), ci_block_seconds(5.0))


def test_percentile_intervals_cover_the_truth_most_of_the_time() -> None:
    hits = {"p50": 0, "p99": 0}
    trials = 40
    for seed in range(trials):
        boot = bootstrap(uniform_blocks(seed), [50, 99], seed)
        lo, hi = interval(boot["p50"])
        hits["p50"] += lo <= 20.0 <= hi
        lo, hi = interval(boot["p99"])
        hits["p99"] += lo <= 29.8 <= hi
    # nominal 95%: allow for the bootstrap's known small under-coverage in the tail
    assert hits["p50"] >= 0.85 * trials and hits["p99"] >= 0.80 * trials, hits


def test_throughput_interval_and_cv() -> None:
    blocks = uniform_blocks(1, n=20_000)
    low, high, cv = rate_ci(blocks)
    assert low < 4000 < high  # 20k requests over 5 s
    assert 0 < cv < 0.2


def test_too_few_samples_give_no_percentile() -> None:
    assert enough_samples(20, 50) and not enough_samples(19, 50)
    assert enough_samples(1000, 99) and not enough_samples(999, 99)
    assert enough_samples(100, 90)  # 100 x 0.1 is not quite 10 in floating point
    boot = bootstrap(uniform_blocks(0, n=500), [50, 99])
    assert math.isnan(interval(boot["p99"])[0])
    assert not math.isnan(interval(boot["p50"])[0])


def test_ratio_verdicts() -> None:
    same_a = bootstrap(uniform_blocks(1), [50], 1)
    same_b = bootstrap(uniform_blocks(2), [50], 2)
    lo, hi = ratio_ci(same_a["p50"], same_b["p50"])
    assert verdict_word(lo, hi, higher_is_better=False) == "no significant difference"
    faster = bootstrap(uniform_blocks(3, low=8, high=24), [50], 3)  # 20% lower latency
    lo, hi = ratio_ci(faster["p50"], same_a["p50"])
    assert hi < 1 and verdict_word(lo, hi, higher_is_better=False) == "faster"
    assert verdict_word(lo, hi, higher_is_better=True) == "slower"
    assert verdict_word(math.nan, 1.0, True) == "insufficient data"


@pytest.mark.parametrize(("skew", "expected"), [(1.0, True), (1.5, False)])
def test_stability_windows(skew: float, expected: bool) -> None:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 5e9, 20_000)).astype(np.int64)
    latency = rng.uniform(10, 30, len(t)) * np.where(t > 3.5e9, skew, 1.0)
    windows = make_blocks(t, latency, 0, int(5e9), 1.0)
    assert stable(windows, 99, 3, 0.10) is expected
    assert stable(make_blocks(t, latency, 0, int(2e9), 1.0), 99, 3, 0.1) is None  # 2 windows


def test_margin_keeps_a_tiny_difference_from_being_a_verdict() -> None:
    assert verdict_word(1.01, 1.02, higher_is_better=True) == "faster"  # significant...
    assert verdict_word(1.01, 1.02, True, margin=0.03) == "no significant difference"
    assert verdict_word(1.05, 1.10, True, margin=0.03) == "faster"
    assert verdict_word(0.80, 0.90, False, margin=0.03) == "faster"


def _stalling(phase_s: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """200 req/s for 10 s against a server that holds every answer for 400 ms every 3.4 s
    (an event-loop stall), starting `phase_s` into the step; latencies in ms."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 10e9, 2000)).astype(np.int64)
    base = rng.exponential(1.0, len(t)) + 2.0
    into = (t / 1e9 - phase_s) % 3.4  # seconds since the last stall began
    held = np.where(into < 0.4, (0.4 - into) * 1000, 0.0)
    return t, base + held


@pytest.mark.parametrize("phase", [0.0, 0.7, 1.9, 2.6, 3.3])
def test_a_periodic_stall_is_unstable_whatever_its_phase(phase: float) -> None:
    t, latency = _stalling(phase)
    windows = make_blocks(t, latency, 0, int(10e9), 1.0)
    assert stable(windows, 99, 3, 0.10) is False


@pytest.mark.parametrize("seed", range(6))
def test_steady_noise_is_stable(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 10e9, 5000)).astype(np.int64)
    latency = rng.exponential(1.0, len(t)) + 2.0  # a long-tailed but steady server
    assert stable(make_blocks(t, latency, 0, int(10e9), 1.0), 99, 3, 0.10) is True


def test_too_few_samples_per_window_cannot_be_judged() -> None:
    t = np.linspace(0, 4e9, 40, endpoint=False).astype(np.int64)  # 10 per 1 s window
    assert stable(make_blocks(t, np.full(len(t), 5.0), 0, int(4e9), 1.0), 99, 3, 0.1) is None
