"""The study's statistics against scipy and hand-computed values (simulations.study)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from simulations.study import cohen_dz, holm, paired, wilcoxon_p

A = [0.61, 0.72, 0.55, 0.80, 0.67, 0.59, 0.74, 0.70, 0.63, 0.58]
B = [0.69, 0.75, 0.52, 0.91, 0.77, 0.60, 0.83, 0.69, 0.71, 0.66]  # differences without ties
# differences 1, 1, 0, 1, 1, -1, 1, 2, -2, 1 (exact in binary): |d| = 1 seven times, a zero
A_TIES = [float(k) for k in range(10)]
B_TIES = [a + d for a, d in zip(A_TIES, [1, 1, 0, 1, 1, -1, 1, 2, -2, 1], strict=True)]


def test_paired_t_interval_matches_scipy() -> None:
    p = paired(A, B)
    ci = stats.ttest_rel(B, A).confidence_interval(0.95)
    assert (p.ci_low, p.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert p.mean_diff == pytest.approx(np.mean(np.subtract(B, A)))
    assert p.seeds == 10 and p.verdict == "better"


@pytest.mark.parametrize(("a", "b"), [(A, B), (A_TIES, B_TIES)], ids=["no-ties", "ties-and-a-zero"])
def test_wilcoxon_exact_matches_scipy(a: list[float], b: list[float]) -> None:
    # scipy: exact without ties; with ties (and zeros dropped, zero_method "wilcox") an exact
    # permutation test when every sign assignment fits its resamples (2 ** 9 here)
    expected = stats.wilcoxon(b, a, zero_method="wilcox").pvalue
    assert wilcoxon_p(a, b) == pytest.approx(expected, rel=1e-9)


def test_wilcoxon_exact_by_hand() -> None:
    """d = 1, 2, 3, -4 (ranks 1..4): R+ = 6 of the 16 sign assignments' sums 0..10;
    P(R+ <= 6) = 11/16, P(R+ >= 6) = 7/16 -> p = 2 * 7/16 = 0.875."""
    assert wilcoxon_p([0, 0, 0, 0], [1, 2, 3, -4]) == pytest.approx(0.875)
    assert wilcoxon_p([0] * 5, [1, 2, 3, 4, 5]) == pytest.approx(2 / 32)  # all positive
    assert math.isnan(wilcoxon_p([1, 2], [1, 2]))


def test_wilcoxon_normal_approximation_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=60).round(1)  # rounded: ties
    b = a + rng.normal(0.2, 1.0, size=60).round(1)
    expected = stats.wilcoxon(b, a, method="asymptotic", correction=False).pvalue
    assert wilcoxon_p(a, b) == pytest.approx(expected, rel=1e-9)


def test_holm_by_hand() -> None:
    # sorted 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1) -> input order
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # made non-decreasing
    out = holm([0.9, math.nan, 0.6])
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1]) and out[2] == pytest.approx(1.0)


def test_cohen_dz() -> None:
    d = np.subtract(B, A)
    assert cohen_dz(A, B) == pytest.approx(d.mean() / d.std(ddof=1))
    assert math.isnan(cohen_dz([1, 2], [2, 3]))  # constant difference: no spread
