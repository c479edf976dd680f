"""Confidence intervals and stability over time blocks of a step. Pure numpy, no I/O.

Requests within a step are not independent (a queue that builds up slows a run of
consecutive requests), so resampling single requests would make intervals too narrow.
Instead a step is cut into equal time blocks (the stability windows) and whole blocks
are resampled: the block bootstrap. Repeats of a step simply contribute more blocks.

- percentiles: bootstrap over ~50 short blocks per step (latencies thinned above a cap)
- throughput: Student-t interval over per-block rates
- ratios between two targets: bootstrap both sides independently
- a percentile is reported only with enough samples beyond it (MLPerf's rule of thumb:
  at least MIN_TAIL_SAMPLES past the percentile), else it is "insufficient data"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_TAIL_SAMPLES = 10
BOOTSTRAP_RESAMPLES = 300
POOL_CAP = 20_000  # latencies kept per bootstrap (thinned uniformly above this, for speed)
CI_BLOCKS = 50  # blocks per step for intervals: short enough to resample, long enough to
CI_BLOCK_MIN_S = 0.05  # keep a queue's busy period inside one block
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Blocks:
    """One step (or several repeats of it) cut into equal time blocks."""

    latencies: list[np.ndarray]  # successful requests' latencies (ms) per block
    seconds: float  # duration of one block

    @property
    def rates(self) -> np.ndarray:
        return np.array([len(b) / self.seconds for b in self.latencies])

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.latencies)

    def __add__(self, other: Blocks) -> Blocks:
        return Blocks(self.latencies + other.latencies, self.seconds)


def make_blocks(
    intended_ns: np.ndarray, latency_ms: np.ndarray, start_ns: int, end_ns: int, block_s: float
) -> Blocks:
    """Split successful requests by intended send time into blocks of `block_s` seconds."""
    n_blocks = max(1, round((end_ns - start_ns) / 1e9 / block_s))
    seconds = (end_ns - start_ns) / 1e9 / n_blocks
    index = np.clip(((intended_ns - start_ns) / 1e9 // seconds).astype(np.int64), 0, n_blocks - 1)
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(n_blocks + 1))
    sorted_lat = latency_ms[order]
    return Blocks([sorted_lat[bounds[i] : bounds[i + 1]] for i in range(n_blocks)], seconds)


def ci_block_seconds(duration_s: float) -> float:
    return max(CI_BLOCK_MIN_S, duration_s / CI_BLOCKS)


def enough_samples(n: int, q: float) -> bool:
    """Is a q-th percentile (0..100) of n samples meaningful?"""
    return n * (1 - q / 100) >= MIN_TAIL_SAMPLES - 1e-9  # 100 x 0.1 is 9.999... in floats


def _thin(blocks: Blocks, rng: np.random.Generator) -> list[np.ndarray]:
    total = blocks.count
    if total <= POOL_CAP:
        return blocks.latencies
    keep = POOL_CAP / total
    return [b[rng.random(len(b)) < keep] for b in blocks.latencies]


def bootstrap(blocks: Blocks, qs: Sequence[float], seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap distributions over blocks: each percentile in `qs` and the mean rate.

    Computed once per (target, step) and reused for its own intervals and for every ratio
    against another target (independent resamples divided index by index).
    """
    rng = np.random.default_rng(seed)
    parts = _thin(blocks, rng)
    rates = blocks.rates
    k = len(parts)
    out = {f"p{q:g}": np.full(BOOTSTRAP_RESAMPLES, math.nan) for q in qs}
    out["rate"] = np.full(BOOTSTRAP_RESAMPLES, math.nan)
    if k < 2:
        return out
    usable = [q for q in qs if enough_samples(blocks.count, q)]
    for i in range(BOOTSTRAP_RESAMPLES):
        pick = rng.integers(0, k, k)
        out["rate"][i] = rates[pick].mean()
        pooled = np.concatenate([parts[j] for j in pick])
        if usable and len(pooled):
            for q, value in zip(usable, np.percentile(pooled, usable), strict=True):
                out[f"p{q:g}"][i] = value
    return out


def percentile_ci(blocks: Blocks, q: float, seed: int = 0) -> tuple[float, float]:
    """95% block-bootstrap interval of the q-th percentile; NaNs if too few samples."""
    return interval(bootstrap(blocks, [q], seed)[f"p{q:g}"])


def rate_ci(blocks: Blocks) -> tuple[float, float, float]:
    """(low, high, coefficient of variation) of the mean per-block throughput (t-interval)."""
    rates = blocks.rates
    if len(rates) < 2:
        return math.nan, math.nan, math.nan
    from scipy import stats as scipy_stats  # lazy: the load process never needs it

    mean, sd = float(rates.mean()), float(rates.std(ddof=1))
    t = float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, len(rates) - 1))
    half = t * sd / math.sqrt(len(rates))
    return mean - half, mean + half, (sd / mean if mean > 0 else math.nan)


def ratio_ci(boot_a: np.ndarray, boot_b: np.ndarray) -> tuple[float, float]:
    """Interval of a/b from two independent bootstrap distributions of the same size."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return interval(boot_a / boot_b)


def interval(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return math.nan, math.nan
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def settled(
    blocks: Blocks, q: float, windows: int, tolerance: float, check_rate: bool = True
) -> bool | None:
    """Have the last `windows` blocks settled: do they agree within `tolerance` on
    throughput and the q-th percentile? What a step extended until it settles waits for
    (harness/load/engine.py); whether the step as a whole was stable is `stable`'s call.
    None when there are too few blocks to say. In open loop the arrival schedule sets the
    throughput (a Poisson count varies by itself), so only latency is judged there."""
    last = blocks.latencies[-windows:]
    if len(blocks.latencies) < windows:
        return None
    rates = np.array([len(b) for b in last], dtype=float)
    if rates.min() <= 0:
        return False
    if check_rate and rates.max() / rates.min() - 1 > tolerance:
        return False
    tails = [float(np.percentile(b, q)) for b in last if enough_samples(len(b), q)]
    if len(tails) < len(last):  # too few samples per window for this percentile: use p50
        tails = [float(np.percentile(b, 50)) for b in last]
    return bool(min(tails) > 0 and max(tails) / min(tails) - 1 <= tolerance)


# A window is out of line only beyond its own sampling noise: an interval (distribution-free,
# from order statistics) for its percentile, a Poisson one for its count, at a level that
# keeps the chance of a false alarm over all of a step's windows at 1%.
FALSE_ALARM = 0.01


def _z(windows: int) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - FALSE_ALARM / (2 * max(1, windows)))


def stable(
    blocks: Blocks, q: float, windows: int, tolerance: float, check_rate: bool = True
) -> bool | None:
    """Was the step steady over its whole measured window?

    Every window, not only the last ones, is compared with the step as a whole: on the q-th
    percentile (or the highest one every window has enough samples for, never below the
    median), and in closed loop on its request count. A window differs when it lies beyond
    `tolerance` of the step's figure *and* beyond its own sampling noise; one such window
    (a periodic stall, whatever its phase; a trend; a warm-up that never ended) makes the
    step unstable. None when there are fewer than `windows` windows, or windows too small
    to judge even a median. In open loop the arrival schedule sets the throughput, so only
    latency is judged there (`check_rate=False`)."""
    parts = blocks.latencies
    if len(parts) < windows:
        return None
    counts = np.array([len(b) for b in parts], dtype=float)
    mean = float(counts.mean())
    if mean * 0.5 < MIN_TAIL_SAMPLES:  # not even a median per window: cannot say
        return None
    if counts.min() == 0:  # a window without a single answer: a stall or an outage
        return False
    # the percentile every window can carry (MLPerf's tail rule), at most q
    q = min(q, 100 * (1 - MIN_TAIL_SAMPLES / counts.min()))
    if q < 50:
        q = 50.0
    reference = float(np.percentile(np.concatenate(parts), q))
    z = _z(len(parts))
    for part in parts:
        low, high = _quantile_interval(part, q, z)
        if low > reference * (1 + tolerance) or high < reference * (1 - tolerance):
            return False
    if check_rate:
        allowed = np.maximum(tolerance * mean, z * np.sqrt(mean))
        if (np.abs(counts - mean) > allowed).any():
            return False
    return True


def _quantile_interval(values: np.ndarray, q: float, z: float) -> tuple[float, float]:
    """A distribution-free interval for the q-th percentile of `values` (order statistics)."""
    ordered = np.sort(values)
    n, p = len(ordered), q / 100
    half = z * math.sqrt(n * p * (1 - p))
    low = ordered[max(0, math.floor(n * p - half))]
    high = ordered[min(n - 1, math.ceil(n * p + half))]
    return float(low), float(high)


def verdict_word(low: float, high: float, higher_is_better: bool, margin: float = 0.0) -> str:
    """'faster'/'slower' only when the whole interval of the ratio lies beyond 1 +- margin:
    a difference smaller than the machine's noise floor is no difference worth a word."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "insufficient data"
    if low > 1 + margin:
        return "faster" if higher_is_better else "slower"
    if high < 1 - margin:
        return "slower" if higher_is_better else "faster"
    return "no significant difference"


def pooled(blocks: Sequence[Blocks]) -> Blocks:
    result = blocks[0]
    for more in blocks[1:]:
        result = result + more
    return result
