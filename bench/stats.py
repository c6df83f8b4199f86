"""Statistics over raw timing samples (seconds). Pure functions: no torch, no printing.

Results store raw samples; everything here is derived from them when shown or compared, so a
better statistic later needs no re-run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


def summarize(samples: Sequence[float]) -> Summary:
    """Median and IQR/median; with fewer than two samples the spread is unknown (None), not zero."""
    if not samples:
        raise ValueError("no samples to summarize")
    median = statistics.median(samples)
    if len(samples) < 2:
        return Summary(len(samples), median, None, None)
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    iqr = q3 - q1
    return Summary(len(samples), median, iqr, iqr / median if median > 0 else None)


@dataclass(frozen=True)
class RatioEstimate:
    """B/A ratio of medians with a bootstrap confidence interval."""

    ratio: float
    low: float
    high: float
    confidence: float
    resampled: bool = True

    @property
    def significant(self) -> bool:
        """True when the interval excludes 1 (no change); never on a single sample per side."""
        return self.resampled and (self.low > 1.0 or self.high < 1.0)


def bootstrap_ratio(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> RatioEstimate:
    """Percentile-bootstrap interval of median(b)/median(a), resampling each run's samples independently.

    Deterministic (fixed seed) so a comparison reads the same every time it is rendered. With fewer
    than two samples on either side there is nothing to resample: the interval is the point itself
    and the result is never called significant.
    """
    ratio = statistics.median(b) / statistics.median(a)
    if len(a) < 2 or len(b) < 2:
        return RatioEstimate(ratio, ratio, ratio, confidence, resampled=False)
    rng = np.random.default_rng(seed)
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    medians_a = np.median(rng.choice(a_arr, size=(resamples, len(a_arr))), axis=1)
    medians_b = np.median(rng.choice(b_arr, size=(resamples, len(b_arr))), axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians_b / medians_a, [tail, 1 - tail])
    return RatioEstimate(ratio, float(low), float(high), confidence)
