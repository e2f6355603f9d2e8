"""The exact discrete Gaussian sampler (secure_collab.editing.dgauss) against pmfs computed here independently, by
normalising exp(−x²/2σ²) (and exp(−|x|/t)) over a wide integer range; each test's words come from a fixed key, so it
is deterministic, and each chi-square test is shown able to fail (a 5 % wrong σ is caught)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from secure_collab.editing import dgauss
from secure_collab.protection.randomness import WordSource


def _words(seed: int):
    return WordSource(bytes([seed]) * 32).stream("test").words


def _pmf(support: np.ndarray, log_weight) -> np.ndarray:
    w = np.exp(log_weight(support.astype(np.float64)))
    return w / w.sum()


def _chi2(samples: np.ndarray, sigma: float, log_weight) -> tuple[float, float]:
    """(statistic, the 1 − 1e-4 quantile of its χ² law): bins of the integers with ≥ 20 expected, the tails pooled."""
    span = int(60 * sigma) + 60
    support = np.arange(-span, span + 1)
    p = _pmf(support, log_weight)
    n = samples.size
    keep = p * n >= 20
    lo, hi = support[keep][0], support[keep][-1]
    inner = support[(support >= lo) & (support <= hi)]
    expected = np.concatenate([[p[support < lo].sum()], p[(support >= lo) & (support <= hi)], [p[support > hi].sum()]])
    counts = np.concatenate([[np.sum(samples < lo)], np.bincount(samples[(samples >= lo) & (samples <= hi)] - lo,
                                                                  minlength=inner.size), [np.sum(samples > hi)]])
    expected *= n
    mask = expected > 0
    stat = float(((counts[mask] - expected[mask]) ** 2 / expected[mask]).sum())
    return stat, float(stats.chi2.ppf(1 - 1e-4, mask.sum() - 1))


@pytest.mark.parametrize("sigma", [1, 3, 10])
def test_discrete_gaussian_fits_the_exact_pmf_and_a_wrong_sigma_does_not(sigma):
    x = dgauss.discrete_gaussian(sigma, 200_000, _words(sigma))
    assert x.dtype == np.int64 and x.shape == (200_000,)
    stat, limit = _chi2(x, sigma, lambda v: -v * v / (2 * sigma**2))
    assert stat < limit, (stat, limit)
    wrong = 1.05 * sigma
    stat, limit = _chi2(x, wrong, lambda v: -v * v / (2 * wrong**2))
    assert stat > limit, (stat, limit)  # the test sees a 5 % error in σ


def test_discrete_laplace_fits_the_exact_pmf():
    t = 3
    y = dgauss.discrete_laplace(t, 200_000, _words(40))
    stat, limit = _chi2(y, t, lambda v: -np.abs(v) / t)
    assert stat < limit, (stat, limit)


@pytest.mark.parametrize("sigma", [1 << 16, (1 << 23) + 12345, dgauss.MAX_SIGMA])
def test_at_a_sessions_sigma_the_moments_are_the_gaussians(sigma):
    """A session's σ_g is 2^23..2^24 grid steps: the mean, variance and fourth moment of 400,000 draws are within
    5 standard errors of N_Z(0, σ²)'s (at these σ, within 1e-100 of the continuous Gaussian's: 0, σ², 3σ⁴)."""
    n = 400_000
    x = dgauss.discrete_gaussian(sigma, n, _words(7)).astype(np.float64) / sigma
    assert abs(x.mean()) < 5 / math.sqrt(n)
    assert abs((x**2).mean() - 1) < 5 * math.sqrt(2 / n)
    assert abs((x**4).mean() - 3) < 5 * math.sqrt(96 / n)  # Var(X⁴) = 105 − 9 for a standard normal
    assert np.all(x == np.rint(x * sigma) / sigma)


def test_the_generator_decides_the_draws_and_bad_sigmas_are_refused():
    a = dgauss.discrete_gaussian(1000, 1000, _words(1))
    assert np.array_equal(a, dgauss.discrete_gaussian(1000, 1000, _words(1)))
    assert not np.array_equal(a, dgauss.discrete_gaussian(1000, 1000, _words(2)))
    assert dgauss.discrete_gaussian(5, 0, _words(1)).shape == (0,)
    for bad in (0, 2.5, dgauss.MAX_SIGMA + 1, True):
        with pytest.raises(ValueError, match="integer in"):
            dgauss.discrete_gaussian(bad, 10, _words(1))


def test_uniform_below_rejects_the_top_partial_block():
    """b = 3·2^62: a word below 2^64 mod b = 2^62 is drawn again, so [0, 2^62) holds a third of the values; taking
    every word mod b would put half of them there."""
    b = 3 << 62
    u = dgauss._below(b, 100_000, _words(3))
    assert int(u.max()) < b
    low = float(np.mean(u < np.uint64(1 << 62)))
    assert abs(low - 1 / 3) < 0.01
    small = dgauss._below(7, 70_000, _words(4))
    assert set(np.unique(small).tolist()) == set(range(7))
    assert stats.chisquare(np.bincount(small.astype(np.int64), minlength=7)).pvalue > 1e-4


@pytest.mark.parametrize(("num", "den"), [(7, 10), (23, 10), (0, 3)])
def test_bernoulli_exp_of_a_ratio_in_both_paths(num, den):
    """Algorithm 1 vectorised and in Python integers (the path of the rare huge γ) both give exp(−num/den)."""
    n = 20_000
    vec = dgauss._bern_exp(np.full(n, num, dtype=np.uint64), den, _words(5))
    words = _words(6)
    exact = [dgauss._bern_exp_exact(num, den, words) for _ in range(4000)]
    p = math.exp(-num / den)
    assert abs(vec.mean() - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-12
    assert abs(np.mean(exact) - p) < 5 * math.sqrt(p * (1 - p) / 4000) + 1e-12
