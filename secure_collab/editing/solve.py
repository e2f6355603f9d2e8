"""The MEMIT update from (summed) statistics, by Cholesky in float64, and the dynamic covariance."""

from __future__ import annotations

import torch


def solve_update(b_sum: torch.Tensor, g_sum: torch.Tensor, cov: torch.Tensor, lam: float,
                 past_g: torch.Tensor | None = None, lam_past: float = 1.0) -> torch.Tensor:
    """ΔW = B (λC + G [+ λ_past·G_past])⁻¹ as (d_v, d_k) float64, never forming an inverse.

    A = λC + G is symmetric positive definite (C is a second moment over many tokens), so
    ΔWᵀ = A⁻¹ Bᵀ comes from one Cholesky factorisation and two triangular solves.
    ``past_g`` is Σ K Kᵀ of earlier rounds (CollabEdit's dynamic covariance against forgetting).
    """
    d_k = g_sum.shape[0]
    if g_sum.shape != (d_k, d_k) or cov.shape != (d_k, d_k) or b_sum.shape[1] != d_k:
        raise ValueError(f"shapes do not fit: B {tuple(b_sum.shape)}, G {tuple(g_sum.shape)}, C {tuple(cov.shape)}")
    a = lam * cov.to(torch.float64) + g_sum.to(torch.float64)
    if past_g is not None:
        a = a + lam_past * past_g.to(torch.float64)
    a = 0.5 * (a + a.T)  # exact symmetry for the factorisation
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ValueError(f"λC + ΣKKᵀ is not positive definite (leading minor {int(info)}); raise λ or the corpus")
    return torch.cholesky_solve(b_sum.to(torch.float64).T, chol).T  # (d_v, d_k)
