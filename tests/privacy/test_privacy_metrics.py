"""Leakage metrics on hand-made cases, the χ² tail against tabulated values, and the judge on hand-made pairs."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from attacks import metrics, wire


def test_recall_at_m_and_5m():
    ranks = [0, 3, 7, 40]  # four edited subjects, 0-based ranks among N candidates
    assert metrics.recall_at(ranks, 4) == 0.5  # recall@m with m = 4
    assert metrics.recall_at(ranks, 20) == 0.75  # recall@5m
    assert metrics.recall_at([0], 1) == 1.0 and metrics.recall_at([1], 1) == 0.0  # plain top-1 at m = 1


def test_token_f1_hand_pairs():
    assert metrics.token_f1("Danielle Darrieux", "danielle darrieux") == 1.0
    assert metrics.token_f1("the mother tongue", "Danielle Darrieux") == 0.0
    # pred {a, b, c}, truth {a, b}: precision 2/3, recall 1 -> F1 0.8
    assert metrics.token_f1("a b c", "a b") == pytest.approx(0.8)


def test_intervals():
    mean, lo, hi = metrics.bootstrap_ci([0.0, 1.0] * 50)
    assert mean == 0.5 and 0.38 < lo < 0.5 < hi < 0.62
    lo, hi = metrics.wilson_ci(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)  # textbook values
    assert metrics.wilson_ci(0, 10)[0] == 0.0


def test_binomial_tail_matches_direct_sum():
    n, p = 20, 0.1
    direct = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(4, n + 1))
    assert metrics.binomial_sf(4, n, p) == pytest.approx(direct, rel=1e-12)
    assert metrics.binomial_sf(0, n, p) == 1.0


def test_chi2_tail_tabulated():
    assert wire.chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert wire.chi2_sf(293.2478, 255) == pytest.approx(0.05, abs=1e-4)  # 95th percentile of χ²(255)


def test_byte_tests_separate_random_from_structured_bytes():
    rnd = os.urandom(1 << 16)
    assert wire.byte_uniformity(rnd)["p_value"] > 1e-6  # fails with probability 1e-6 at most
    assert wire.byte_uniformity(bytes(range(200)) * 300)["p_value"] < 1e-12
    assert wire.byte_homogeneity(rnd, os.urandom(1 << 16))["p_value"] > 1e-6
    assert wire.byte_homogeneity(rnd, bytes(1 << 16))["p_value"] < 1e-12


def test_random_pair_baseline_ignores_the_diagonal():
    sim = np.full((5, 5), 0.2)
    np.fill_diagonal(sim, 1.0)
    assert metrics.random_pair_baseline(sim) == pytest.approx(0.2)


def test_judge_on_hand_made_pairs():
    from attacks.judge import default_judge

    j = default_judge()
    s = j.similarity(["The capital of France is Paris."],
                     ["Paris is the capital city of France.", "Bananas are rich in potassium."])
    assert s[0, 0] > 0.8 > 0.3 > s[0, 1]
    e = j.embed(["anything"])
    assert e.shape == (1, 384) and abs(float(np.linalg.norm(e)) - 1.0) < 1e-5


def test_greedy_matching_is_one_to_one():
    sim = np.array([[0.9, 0.8, 0.1], [0.85, 0.2, 0.3]])
    assert metrics.greedy_matching(sim) == [(0, 0), (1, 2)]  # row 1 cannot reuse column 0


def test_permutation_test_of_sizes():
    assert wire.permutation_p([5, 5, 5], [5, 5, 5]) == 1.0
    assert wire.permutation_p([10, 11, 12, 10, 11, 12], [1, 2, 1, 2, 1, 2], n=2000) < 0.01
    assert wire.permutation_p([1, 2, 3, 4], [2, 3, 1, 4], n=2000) > 0.5
