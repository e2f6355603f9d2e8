"""The solver's factorisation in bounded memory gives the very floats of the plain expressions it replaced."""

from __future__ import annotations

import torch

from secure_collab.editing.solve import _symmetrise_, solve_update


def test_the_strip_symmetrisation_equals_the_expression_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    for d in (1, 5, 256, 257, 700):  # one strip, a strip boundary, several strips
        a = torch.randn(d, d, dtype=torch.float64, generator=g)
        want = 0.5 * (a + a.T)
        _symmetrise_(a)
        assert torch.equal(a, want), d


def test_solve_update_equals_the_plain_formula_bit_for_bit():
    """The former body of solve_update, written out: λC + G (+ λ_past G_past), ½(A + Aᵀ), Cholesky, solve."""
    g = torch.Generator().manual_seed(2)
    d_k, d_v, lam = 530, 40, 7.5
    x = torch.randn(d_k, 2 * d_k, dtype=torch.float64, generator=g)
    cov = (x @ x.T / (2 * d_k)).to(torch.float32)  # as a cached covariance is stored
    k = torch.randn(d_k, 12, dtype=torch.float64, generator=g)
    g_sum = k @ k.T + 1e-7 * torch.randn(d_k, d_k, dtype=torch.float64, generator=g)  # not exactly symmetric
    b_sum = torch.randn(d_v, d_k, dtype=torch.float64, generator=g)
    past = k[:, :4] @ k[:, :4].T
    for past_g in (None, past):
        a = lam * cov.to(torch.float64) + g_sum
        if past_g is not None:
            a = a + 0.3 * past_g
        a = 0.5 * (a + a.T)
        want = torch.cholesky_solve(b_sum.T, torch.linalg.cholesky(a)).T
        got = solve_update(b_sum, g_sum, cov, lam, past_g=past_g, lam_past=0.3)
        assert torch.equal(got, want)
        # and it solves the system (an independent check of the formula itself)
        assert torch.allclose(got @ a, b_sum, rtol=0, atol=1e-9 * b_sum.abs().max())
