"""Spectral recovery is exact on synthetic cases: K up to sign at rank 1, up to rotation at rank M, and the span
of the keys from the released ΔW with the public λC."""

from __future__ import annotations

import pytest
import torch

from attacks import spectral
from secure_collab.editing.solve import solve_update
from tests.conftest import random_spd


def _keys(m: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=torch.float64) + 2.0  # a shared mean component, as real keys


def test_rank1_exact_up_to_sign_and_sign_resolved():
    k = _keys(1, 40, 0)
    g = k.T @ k
    est = spectral.keys_from_gram(g, 1)
    assert min((est - k).norm(), (est + k).norm()) / k.norm() < 1e-12
    signed = spectral.keys_from_gram(g, 1, mean_key=torch.ones(40, dtype=torch.float64))
    assert (signed - k).norm() / k.norm() < 1e-12


@pytest.mark.parametrize("m", [2, 5, 12])
def test_rank_m_exact_up_to_rotation(m):
    k = _keys(m, 30, m)
    g = k.T @ k
    est = spectral.keys_from_gram(g)  # numeric rank found by itself
    assert est.shape == (m, 30)
    assert torch.allclose(est.T @ est, g, atol=1e-10 * g.norm())  # same Gram: K = Q est for an orthogonal Q
    q = torch.linalg.lstsq(est.T, k.T).solution  # (m, m)
    assert torch.allclose(q.T @ q, torch.eye(m, dtype=torch.float64), atol=1e-9)
    basis = spectral.basis_from_gram(g, m)
    assert (k.T - basis @ (basis.T @ k.T)).norm() / k.norm() < 1e-10  # every key lies in the recovered span


def test_basis_from_delta_is_the_span_of_the_keys():
    m, d_k, d_v, lam = 4, 24, 10, 50.0
    k = _keys(m, d_k, 1)
    r = torch.randn(m, d_v, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cov = random_spd(d_k, 3)
    delta = solve_update(r.T @ k, k.T @ k, cov, lam)  # the engine's ΔW = R Kᵀ (λC + K Kᵀ)⁻¹
    basis = spectral.basis_from_delta(delta, lam * cov, m)
    assert (k.T - basis @ (basis.T @ k.T)).norm() / k.norm() < 1e-9
    # a party that knows its own first key keeps exactly the others' span
    rest = spectral.remove_known(basis, k[:1])
    assert rest.shape == (d_k, m - 1)
    assert (rest.T @ k[0]).norm() / k[0].norm() < 1e-9
    others = k[1:]
    inside = rest @ (rest.T @ others.T)
    own = torch.linalg.qr(k[:1].T)[0]
    assert (others.T - inside - own @ (own.T @ others.T)).norm() / others.norm() < 1e-9


def test_effective_rank_ignores_round_off():
    assert spectral.effective_rank(torch.tensor([3.0, 1e-3, 1e-14])) == 2
    assert spectral.effective_rank(torch.zeros(3)) == 0


def test_residuals_from_the_statistics_are_exact():
    from attacks.target import residual_from_stats

    k = _keys(3, 20, 4)
    r = torch.randn(3, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = residual_from_stats(r.T @ k, k.T @ k, k)  # B = R Kᵀ, G = K Kᵀ in MEMIT's convention
    assert torch.allclose(got, r, atol=1e-9)
