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
