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
    a = lam * cov.to(torch.float64)  # the one (d_k, d_k) buffer this builds beside the factor: 1.6 GB at d_k 14,336
    a += g_sum.to(torch.float64)
    if past_g is not None:
        a += lam_past * past_g.to(torch.float64)
    _symmetrise_(a)  # exact symmetry for the factorisation
    chol, info = torch.linalg.cholesky_ex(a)
    del a
    if int(info) != 0:
        raise ValueError(f"λC + ΣKKᵀ is not positive definite (leading minor {int(info)}); raise λ or the corpus")
    return torch.cholesky_solve(b_sum.to(torch.float64).T, chol).T  # (d_v, d_k)


_SYM_ROWS = 256  # rows per step of ``_symmetrise_`` (its temporaries: a 256-row strip)


def _symmetrise_(a: torch.Tensor) -> None:
    """a ← ½(a + aᵀ) in place, strip by strip: the same floats as the expression (x + y = y + x, each pair summed
    and halved once), without its two (d, d) temporaries. Strip s writes rows and columns [s, e) from column and
    row s on; a later strip reads only rows and columns from its own start, which no earlier strip wrote."""
    d = a.shape[0]
    for s in range(0, d, _SYM_ROWS):
        e = min(s + _SYM_ROWS, d)
        sym = 0.5 * (a[s:e, s:] + a[s:, s:e].T)
        a[s:e, s:] = sym
        a[s:, s:e] = sym.T

