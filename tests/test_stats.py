"""Median, spread and the bootstrap ratio."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from bench.core.stats import (
    NOISY_SPREAD,
    block_medians,
    detectable_ratio,
    quartiles,
    ratio_interval,
    safe_exp,
    summarize,
    t_cdf,
    t_quantile,
    units_needed,
)


def test_summary_of_known_samples() -> None:
    summary = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert summary.median == 3.0
    # pytest-benchmark's quartiles (Wikipedia method 3 for odd n): 1.75 and 4.25
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (1.75, 4.25)
    assert summary.iqr == pytest.approx(2.5)
    assert summary.spread == pytest.approx(2.5 / 3.0)
    assert summary.noisy
    assert quartiles([1.0, 2.0, 3.0, 4.0]) == (1.5, 3.5)  # even n: the medians of the two halves


def test_single_sample_has_unknown_spread_not_zero() -> None:
    summary = summarize([0.5])
    assert summary.n == 1 and summary.spread is None and not summary.noisy


def test_empty_samples_are_an_error() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_quiet_samples_are_not_noisy() -> None:
    rng = random.Random(0)
    samples = [1.0 + rng.uniform(-0.01, 0.01) for _ in range(100)]
    assert summarize(samples).spread < NOISY_SPREAD


def test_interval_finds_a_real_slowdown_and_not_a_fake_one() -> None:
    rng = random.Random(1)
    a = [1.0 * math.exp(rng.gauss(0, 0.05)) for _ in range(5)]
    same = [1.0 * math.exp(rng.gauss(0, 0.05)) for _ in range(5)]
    slower = [1.3 * math.exp(rng.gauss(0, 0.05)) for _ in range(5)]
    assert not ratio_interval(a, same).significant
    estimate = ratio_interval(a, slower)
    assert estimate.significant and estimate.low > 1.1 and estimate.ratio == pytest.approx(1.3, rel=0.1)


def test_interval_matches_a_textbook_welch_computation() -> None:
    a, b = [1.0, 1.2, 1.1], [2.0, 2.2, 2.1]
    estimate = ratio_interval(a, b)
    log_a, log_b = [math.log(x) for x in a], [math.log(x) for x in b]
    va, vb = statistics.variance(log_a) / 3, statistics.variance(log_b) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    margin = t_quantile(0.975, df) * math.sqrt(va + vb)
    center = statistics.fmean(log_b) - statistics.fmean(log_a)
    assert estimate.low == pytest.approx(math.exp(center - margin))
    assert estimate.high == pytest.approx(math.exp(center + margin))


def test_single_samples_are_never_significant() -> None:
    single = ratio_interval([1.0], [3.0])
    assert single.ratio == pytest.approx(3.0) and not single.testable and not single.significant


@pytest.mark.parametrize(
    ("probability", "df", "expected"),
    [
        (0.975, 1, 12.7062),
        (0.975, 4, 2.7764),
        (0.975, 30, 2.0423),
        (0.995, 3, 5.8409),
        (0.9995, 10, 4.5869),
        (0.975, 1e6, 1.9600),
    ],
)
def test_t_quantiles_match_published_tables(probability: float, df: float, expected: float) -> None:
    assert t_quantile(probability, df) == pytest.approx(expected, abs=2e-4)
    assert t_cdf(expected, df) == pytest.approx(probability, abs=1e-5)


def test_block_medians_follow_time_order() -> None:
    assert block_medians([1, 1, 5, 5, 9, 9], blocks=3) == [1, 5, 9]
    assert block_medians([3.0], blocks=5) == [3.0]


def test_the_detectable_change_shrinks_with_units_and_grows_with_noise() -> None:
    rng = random.Random(2)
    quiet = [[math.exp(rng.gauss(0, 0.02)) for _ in range(5)] for _ in range(2)]
    noisy = [[math.exp(rng.gauss(0, 0.4)) for _ in range(5)] for _ in range(2)]
    many = [[math.exp(rng.gauss(0, 0.4)) for _ in range(40)] for _ in range(2)]
    small, large, more = (detectable_ratio(a, b, 0.95) for a, b in (quiet, noisy, many))
    assert small is not None and large is not None and more is not None
    assert 1 < small < 1.1 < large and more < large
    # a ratio just beyond the detectable one gives an interval that excludes 1
    a, b = noisy
    estimate = ratio_interval(a, [x * large * 1.01 * math.exp(statistics.fmean(map(math.log, a)) -
                                    statistics.fmean(map(math.log, b))) for x in b])  # fmt: skip
    assert estimate.low > 1.0
    assert detectable_ratio([1.0], [1.0, 2.0], 0.95) is None  # one unit: no test, nothing detectable


def test_units_needed_reaches_the_wanted_detectable_change() -> None:
    rng = random.Random(3)
    a = [math.exp(rng.gauss(0, 0.5)) for _ in range(3)]
    b = [math.exp(rng.gauss(0, 0.5)) for _ in range(3)]
    assert detectable_ratio(a, b, 0.99) > 2
    needed = units_needed(a, b, 0.99, target=1.2)
    assert needed is not None and needed > 3
    pooled = (
        statistics.variance([math.log(x) for x in a]) + statistics.variance([math.log(x) for x in b])
    ) / 2
    margin = t_quantile(0.995, 2 * (needed - 1)) * math.sqrt(2 * pooled / needed)
    assert (
        math.exp(margin)
        <= 1.2
        < math.exp(t_quantile(0.995, 2 * (needed - 2)) * math.sqrt(2 * pooled / (needed - 1)))
    )
    assert units_needed(a, b, 0.99, target=1.0001, limit=50) is None


def test_absurd_ratios_saturate_instead_of_crashing() -> None:
    assert safe_exp(10_000) == math.inf
    estimate = ratio_interval([1e-9, 2e-9], [1e6, 3e6])
    assert estimate.ratio > 1e14 and estimate.high > 1e14 and estimate.low > 1
