"""Statistics over raw timing samples (seconds). Pure functions: no torch, no printing.

Results store raw samples; everything here is derived from them when shown or compared, so a
better statistic later needs no re-run.

Quartiles are pytest-benchmark's own (`pytest_benchmark.stats.Stats`: Wikipedia's "method 3" for
an odd number of samples, the medians of the two halves for an even number), so the IQR in
results.json, the tables and the engine's pytest-benchmark.json are the same numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_benchmark.stats import Stats

NOISY_SPREAD = 0.10  # IQR/median above this flags a cell as noisy


@dataclass(frozen=True)
class Summary:
    """Median, interquartile range and their ratio (the spread) of n samples."""

    n: int
    median: float
    iqr: float | None
    spread: float | None

    @property
    def noisy(self) -> bool:
        return self.spread is not None and self.spread > NOISY_SPREAD


QUARTILE_METHOD = "pytest-benchmark's (Wikipedia method 3 for odd n, halves' medians for even n)"


def quartiles(samples: Sequence[float]) -> tuple[float, float]:
    """(Q1, Q3) exactly as pytest-benchmark computes them for the same samples."""
    stats = Stats()
    for sample in samples:
        stats.update(sample)
    return stats.q1, stats.q3


def summarize(samples: Sequence[float]) -> Summary:
    """Median and IQR/median; with fewer than two samples the spread is unknown (None), not zero."""
    if not samples:
        raise ValueError("no samples to summarize")
    median = statistics.median(samples)
    if len(samples) < 2:
        return Summary(len(samples), median, None, None)
    q1, q3 = quartiles(samples)
    iqr = q3 - q1
    return Summary(len(samples), median, iqr, iqr / median if median > 0 else None)


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only on this side
        return 1.0 - _incomplete_beta(1 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-12:
            break
    return math.exp(log_front) * fraction / a


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function."""
    tail = 0.5 * _incomplete_beta(df / (df + t * t), df / 2, 0.5)
    return 1.0 - tail if t > 0 else tail


def t_quantile(probability: float, df: float) -> float:
    """Inverse of `t_cdf` by bisection (probability in (0.5, 1)); exact to about 1e-9."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        if t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@dataclass(frozen=True)
class RatioEstimate:
    """B/A ratio of geometric means with a confidence interval (Welch's t on log times)."""

    ratio: float
    low: float
    high: float
    n_a: int
    n_b: int

    @property
    def testable(self) -> bool:
        return self.n_a >= 2 and self.n_b >= 2

    @property
    def significant(self) -> bool:
        """True when the interval excludes 1 (no change); never with a single sample on a side."""
        return self.testable and (self.low > 1.0 or self.high < 1.0)


def safe_exp(value: float) -> float:
    """exp() that saturates to infinity instead of raising on absurd inputs (hand-edited files)."""
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> RatioEstimate:
    """Welch's t interval for mean(log b) - mean(log a), returned as a ratio B/A.

    Timings are compared on a log scale because noise is multiplicative (a busy machine slows
    everything by a factor). The inputs should be independent units: one value per pass or per
    epoch, not rounds from one stretch of time, whose noise is correlated.
    """
    if not a or not b or min(a) <= 0 or min(b) <= 0:
        raise ValueError("ratio_interval needs positive samples on both sides")
    log_a, log_b = [math.log(x) for x in a], [math.log(x) for x in b]
    mean_a, mean_b = statistics.fmean(log_a), statistics.fmean(log_b)
    ratio = safe_exp(mean_b - mean_a)
    if len(a) < 2 or len(b) < 2:
        return RatioEstimate(ratio, ratio, ratio, len(a), len(b))
    var_a, var_b = statistics.variance(log_a) / len(a), statistics.variance(log_b) / len(b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return RatioEstimate(ratio, ratio, ratio, len(a), len(b))
    df = (var_a + var_b) ** 2 / (
        (var_a**2 / (len(a) - 1) if var_a else 0) + (var_b**2 / (len(b) - 1) if var_b else 0)
    )
    margin = t_quantile(1 - (1 - confidence) / 2, df) * se
    return RatioEstimate(
        ratio, safe_exp(mean_b - mean_a - margin), safe_exp(mean_b - mean_a + margin), len(a), len(b)
    )


def block_medians(samples: Sequence[float], blocks: int = 5) -> list[float]:
    """Medians of `blocks` consecutive stretches of time-ordered samples (fewer if there are few)."""
    count = min(blocks, len(samples))
    if count == 0:
        return []
    size = len(samples) / count
    return [statistics.median(samples[round(i * size) : round((i + 1) * size)]) for i in range(count)]


def log_variance(samples: Sequence[float]) -> float | None:
    """Sample variance of log times (None below two samples): the noise the interval sees."""
    if len(samples) < 2 or min(samples) <= 0:
        return None
    return statistics.variance([math.log(x) for x in samples])


def detectable_ratio(a: Sequence[float], b: Sequence[float], confidence: float) -> float | None:
    """The smallest slowdown B/A whose interval would exclude 1, given these units and their noise.

    It is the half-width of the Welch interval (`ratio_interval`) as a factor: a change smaller than
    this cannot be told apart from noise with these units, whatever its real size.
    """
    var_a, var_b = log_variance(a), log_variance(b)
    if var_a is None or var_b is None:
        return None
    va, vb = var_a / len(a), var_b / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return 1.0
    df = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0) + (vb**2 / (len(b) - 1) if vb else 0))
    return safe_exp(t_quantile(1 - (1 - confidence) / 2, df) * se)


def units_needed(
    a: Sequence[float], b: Sequence[float], confidence: float, target: float, limit: int = 1000
) -> int | None:
    """Units per side (passes) at which the detectable ratio falls to `target`, at this noise level.

    Assumes both sides keep their pooled log-variance; None when even `limit` units are not enough.
    """
    var_a, var_b = log_variance(a), log_variance(b)
    if var_a is None or var_b is None:
        return None
    pooled = (var_a + var_b) / 2

    def enough(n: int) -> bool:
        se = math.sqrt(2 * pooled / n)
        return safe_exp(t_quantile(1 - (1 - confidence) / 2, 2 * (n - 1)) * se) <= target

    if not enough(limit):
        return None
    low, high = 1, limit  # enough(high) holds; the detectable ratio only shrinks as n grows
    while high - low > 1:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    return max(high, 2)


def paired_ratio_interval(ratios: Sequence[float], confidence: float = 0.95) -> RatioEstimate:
    """Student's t interval for the mean of log ratios of paired measurements, returned as a ratio.

    Each ratio is B/A of two measurements taken side by side (`bench ab`'s pairs of blocks), so the
    machine's drift between pairs divides out and the pairs are the independent units. The ratio is
    their geometric mean; with one ratio, or ratios all alike, the interval is the ratio itself.
    """
    if not ratios or min(ratios) <= 0:
        raise ValueError("paired_ratio_interval needs positive ratios")
    logs = [math.log(x) for x in ratios]
    mean = statistics.fmean(logs)
    n = len(logs)
    if n < 2 or statistics.variance(logs) == 0:
        return RatioEstimate(safe_exp(mean), safe_exp(mean), safe_exp(mean), n, n)
    margin = t_quantile(1 - (1 - confidence) / 2, n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return RatioEstimate(safe_exp(mean), safe_exp(mean - margin), safe_exp(mean + margin), n, n)
