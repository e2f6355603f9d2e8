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


def test_the_spectrum_and_leverage_equal_numpy_on_the_symmetrised_matrix():
    """The in-place LAPACK path (one (d, d) buffer beside G) against numpy's eigvalsh / eigh of ½G + ½Gᵀ built the
    plain way, and the leverage figure ‖B V diag(s)‖₂ against ‖B (G + εI)^-1/2‖₂ with the inverse root formed."""
    from secure_collab.protocol.plausibility import _spectrum

    rng = np.random.default_rng(7)
    d = 300  # more than one row block of the symmetrisation
    k = rng.standard_normal((40, d))
    g = k.T @ k + np.eye(d) + 1e-9 * rng.standard_normal((d, d))  # not exactly symmetric, as a party's G may be
    ref = 0.5 * g + 0.5 * g.T
    vals, vecs = _spectrum(g, vectors=False)
    assert vecs is None
    assert np.allclose(vals, np.linalg.eigvalsh(ref), rtol=0, atol=1e-9 * np.abs(vals).max())
    vals, vecs = _spectrum(g, vectors=True)
    assert np.allclose(vecs @ np.diag(vals) @ vecs.T, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    b = rng.standard_normal((20, d)) @ np.diag(rng.uniform(0, 1, d))
    eps = 0.5
    w, v = np.linalg.eigh(ref)
    inv_sqrt = v @ np.diag(1 / np.sqrt(np.maximum(w + eps, eps * 1e-12))) @ v.T
    want = np.linalg.norm(b @ inv_sqrt, 2)
    got = np.linalg.norm((b @ vecs) / np.sqrt(np.maximum(vals + eps, eps * 1e-12)), 2)
    assert abs(got - want) <= 1e-10 * want
    # and the check itself decides on that figure: just above ρ√N refused, just below accepted
    n = 4.0
    for factor, refused in ((1.001, True), (0.999, False)):
        bounds = Bounds(key_norm=1e6, residual_norm=want / (factor * np.sqrt(n)), max_edits=10, ridge=eps)
        problems = plausibility_problems(ref, b, n, parties=1, bounds=Bounds(
            bounds.key_norm, bounds.residual_norm, 10, ridge=eps), fewest=0)
        assert ("leverage" in {p.check for p in problems}) is refused, problems


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_the_check_holds_at_most_two_matrices_beside_g(ridge):
    """At d_k 14,336 one (d, d) float64 is 1.6 GB: the check may add one such buffer (two with eigenvectors, for
    the leverage check), not the three to four that ½G + ½Gᵀ and numpy's own LAPACK copy took (issue 22: a party's
    peak ≤ 2× its statistics). numpy's and f2py's buffers are traced by tracemalloc."""
    import tracemalloc

    rng = np.random.default_rng(3)
    d = 1200  # the symmetrisation's row block (128 rows) is a small part of G, as at real size
    k = rng.standard_normal((30, d))
    g, b = k.T @ k, rng.standard_normal((8, 30)) @ k * 1e-3
    one = g.nbytes
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        problems = plausibility_problems(g, b, 30.0, parties=1, bounds=Bounds(1e3, 1e3, 30, ridge=ridge), fewest=0)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert problems == []
    budget = (1 if ridge == 0 else 2) * one + 0.3 * one  # the matrices; a row block, the isfinite mask, O(d) work
    assert peak <= budget, f"peak {peak / one:.2f} × G"


@pytest.mark.parametrize("where", ["G", "B"])
def test_a_party_refuses_its_own_non_finite_statistic_in_either_matrix(where):
    """The party's pre-send check takes max and −min per matrix (no |G| temporary): a NaN in B beside a finite G
    must not be lost in the max over the matrices (Python's max keeps its first argument against a NaN)."""
    from types import SimpleNamespace

    from parties.client import Fatal, Party

    party = Party.__new__(Party)
    party.s = SimpleNamespace(d_k=3, d_v=2, value_bound=10.0, counted_edits=5, max_edits_per_party=5,
                              key_norm_bound=2.0, residual_norm_bound=3.0)
    party.noise_plan = None
    g, b, n = stats([[2.0, 0, 0], [0, 0, 2.0]], [[3.0, 0], [0, -3.0]])
    assert party._checked(4, {"G": g, "B": b.ravel(), "N": n})["N"] == n  # honest: passes
    (g if where == "G" else b)[1, 1] = np.nan
    with pytest.raises(Fatal, match="non-finite"):
        party._checked(4, {"G": g, "B": b.ravel(), "N": n})
    (g if where == "G" else b)[1, 1] = -11.0  # out of bound on the negative side: caught by −min
    with pytest.raises(Fatal, match="exceeds session.value_bound"):
        party._checked(4, {"G": g, "B": b.ravel(), "N": n})
