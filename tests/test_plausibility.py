"""Plausibility of an opened aggregate, on hand-made statistics with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from secure_collab.protocol.plausibility import CHECKS, Bounds, plausibility_problems

BOUNDS = Bounds(key_norm=2.0, residual_norm=3.0, max_edits=5)


def stats(keys, residuals):
    k, r = np.asarray(keys, float), np.asarray(residuals, float)  # (n, d_k), (n, d_v)
    return k.T @ k, r.T @ k, float(len(k))


def test_honest_sums_at_the_bounds_are_plausible():
    # two edits whose keys and residuals sit exactly on the declared norms
    g, b, n = stats([[2.0, 0, 0], [0, 0, 2.0]], [[3.0, 0], [0, -3.0]])
    assert plausibility_problems(g, b, n, parties=2, bounds=BOUNDS) == []
    # one party with nothing to edit this round sends zeros: plausible for its own check (fewest=0) only
    assert plausibility_problems(np.zeros((3, 3)), np.zeros((2, 3)), 0.0, parties=1, bounds=BOUNDS, fewest=0) == []


@pytest.mark.parametrize("n", [float("nan"), float("inf"), -float("inf"), 0.0, 0.4, -0.0])
def test_an_edit_count_that_is_not_finite_or_below_one_is_a_named_problem(n):
    """The check is total (it is the last line behind the MAC): a non-finite N is a problem, never an exception,
    and an aggregate of no edits at all (N < 1, here with zero statistics that pass every other check) is
    not solved."""
    zeros = np.zeros((3, 3)), np.zeros((2, 3))
    problems = plausibility_problems(*zeros, n, parties=2, bounds=BOUNDS)
    assert [p.check for p in problems] == ["edit-count"], problems
    g, b, _ = stats([[2.0, 0, 0], [0, 0, 2.0]], [[3.0, 0], [0, -3.0]])
    problems = plausibility_problems(g, b, n, parties=2, bounds=BOUNDS)  # real sums beside the bad count
    assert "edit-count" in {p.check for p in problems} and all(p.check in CHECKS for p in problems), problems
    with_nan = plausibility_problems(g * np.nan, b, n, parties=2, bounds=BOUNDS)
    assert {p.check for p in with_nan} == {"edit-count", "non-finite"}, with_nan


@pytest.mark.parametrize(("change", "why"), [
    (lambda g, b, n: (g - 0.5 * np.eye(3), b, n), "not positive semi-definite"),
    (lambda g, b, n: (g * 1.5, b, n), "tr ΣG"),
    (lambda g, b, n: (g, b * 2.0, n), "‖ΣB‖_F"),
    (lambda g, b, n: (g, b, n + 0.5), "not a whole number"),
    (lambda g, b, n: (g, b, 11.0), "outside"),
    (lambda g, b, n: (g, b, -1.0), "outside"),
    (lambda g, b, n: (g * np.nan, b, n), "non-finite"),
])
def test_implausible_aggregates_name_the_check(change, why):
    g, b, n = stats([[2.0, 0, 0], [0, 0, 2.0]], [[3.0, 0], [0, -3.0]])
    problems = plausibility_problems(*change(g, b, n), parties=2, bounds=BOUNDS)
    assert any(why in str(p) for p in problems), problems
    assert all(p.check in CHECKS for p in problems)


def test_fixed_point_slack_tolerates_rounding_but_not_more():
    g, b, n = stats([[2.0, 0, 0]], [[3.0, 0]])
    quantum = 2.0**-20
    bounds = Bounds(2.0, 3.0, 5, quantum)
    rounded = g + quantum * np.array([[0.5, -0.5, 0], [-0.5, 0.5, 0], [0, 0, -0.5]])
    assert plausibility_problems(rounded, b, n, parties=1, bounds=bounds) == []
    assert plausibility_problems(g - 1e-3 * np.eye(3), b, n, parties=1, bounds=bounds)
