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


def _malmen_like(rng, parties=3, edits=4, tokens=2, d_k=64, d_v=32, weights=None):
    """Honest MALMEN-shaped sums: per edit a few answer-token rows U_e (keys sharing a large common direction, as a
    language model's do) and value differences D_e; G = Σ w_e U_eᵀU_e, B = Σ w_e D_eᵀU_e."""
    mean = rng.normal(size=d_k)
    mean *= 20 / np.linalg.norm(mean)
    us = [mean + rng.normal(size=(tokens, d_k)) for _ in range(parties * edits)]
    ds = [0.5 * rng.normal(size=(tokens, d_v)) for _ in range(parties * edits)]
    w = np.ones(len(us)) if weights is None else np.asarray(weights)
    g = sum(wi * u.T @ u for wi, u in zip(w, us, strict=True))
    b = sum(wi * d.T @ u for wi, u, d in zip(w, us, ds, strict=True))
    kappa = max(np.linalg.norm(u) for u in us)
    rho = max(np.linalg.norm(d) for d in ds)
    return g, b, float(len(us)), kappa, rho


@pytest.mark.parametrize("ridge", [1.0, 0.05, 20.0])
def test_leverage_check_passes_honest_sums_and_refuses_mass_off_the_keys(ridge):
    """The red team's attack on a MALMEN session (solve ΔW = ΣB (ΣG + εI)⁻¹): one party declares one edit, sends
    G = 0 and B along a random key direction that no edit spans, with one edit's budget ‖B‖_F = ρκ. Every earlier
    check passes it and ΔW grows 11-1000×; the leverage check refuses it, and passes every honest sum (weights 1/m
    too)."""
    rng = np.random.default_rng(7)
    g, b, n, kappa, rho = _malmen_like(rng)
    bounds = Bounds(kappa, rho, max_edits=5, ridge=ridge)
    assert plausibility_problems(g, b, n, 3, bounds) == []
    gw, bw, nw, kw, rw = _malmen_like(rng, weights=[1.0, 0.5, 0.5, 1 / 3] * 3)
    assert plausibility_problems(gw, bw, nw, 3, Bounds(kw, rw, max_edits=5, ridge=ridge)) == []

    z, y = rng.normal(size=g.shape[0]), rng.normal(size=b.shape[0])
    hostile = rho * kappa * np.outer(y / np.linalg.norm(y), z / np.linalg.norm(z))
    before = Bounds(kappa, rho, max_edits=5)  # the checks without the ridge: the attack passes them
    assert plausibility_problems(g, b + hostile, n + 1, 4, before) == []

    def solve(bb):
        return np.linalg.solve(g + ridge * np.eye(g.shape[0]), bb.T).T

    assert np.linalg.norm(solve(b + hostile), 2) > 5 * np.linalg.norm(solve(b), 2)  # 11× at ε = 20, 100× at 1
    problems = plausibility_problems(g, b + hostile, n + 1, 4, bounds)
    assert [p.check for p in problems] == ["leverage"]
    assert "leverage" in CHECKS


def test_leverage_check_allows_the_fixed_point_error_of_the_opened_sum():
    """Rounded to a grid of step q per party, an honest sum still passes (the slack of ``parties`` encodings)."""
    rng = np.random.default_rng(3)
    g, b, n, kappa, rho = _malmen_like(rng)
    q = 2.0 ** -12
    bounds = Bounds(kappa, rho, max_edits=5, quantum=q, ridge=1e-3)
    for _ in range(5):
        eg = rng.uniform(-3 * q, 3 * q, size=g.shape)
        eg = 0.5 * (eg + eg.T)
        eb = rng.uniform(-3 * q, 3 * q, size=b.shape)
        assert plausibility_problems(g + eg, b + eb, n, 3, bounds) == []
