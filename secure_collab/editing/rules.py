"""Update rules: how one layer's aggregated statistics become ΔW. Pure math, float64, tensors in and out.

Every rule reads only aggregates (ΣB = Σ R Kᵀ, ΣG = Σ K Kᵀ of this round, G_past = Σ of earlier rounds' ΣG)
and public data (the covariance C of the public corpus), so a solver that sees aggregates only can run it:

- ``memit-static``   ΔW = ΣB (λC + ΣG)⁻¹                              (MEMIT; earlier rounds are not protected)
- ``memit-dynamic``  ΔW = ΣB (λC + ΣG + λ_past·G_past)⁻¹, λ_past = λ by default (CollabEdit's dynamic covariance:
                     its single-machine branch adds past keys with the covariance's weight, C += λ·K Kᵀ, i.e.
                     λ(C + G_past)); another λ_past is a setting (``--past-weight``; 1 was this project's first,
                     much weaker rule)
- ``alphaedit``      ΔWᵀ = X, (P(ΣG + G_past) + L2·I) X = P ΣBᵀ       (AlphaEdit, arXiv 2410.02355)

AlphaEdit's P = U Uᵀ projects onto the null space of the preserved knowledge: U holds the eigenvectors of C
whose eigenvalues are below ``nullspace_threshold`` (AlphaEdit takes them from an SVD of the same second
moment). There is no λC term. The system is not symmetric, but its solution lies in the range of P
(L2·X = P(ΣBᵀ − (ΣG + G_past)X)), so with X = U Y it becomes the symmetric positive definite
(Uᵀ(ΣG + G_past)U + L2·I) Y = Uᵀ ΣBᵀ of size r = rank P, solved by Cholesky: ΔW = ΣB U (UᵀAU + L2·I)⁻¹ Uᵀ.
G_past enters with weight 1, as in AlphaEdit's code (``cache_c += K Kᵀ`` after each batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from secure_collab.editing import UPDATE_RULES
from secure_collab.editing.solve import solve_update


def nullspace_basis(cov: torch.Tensor, threshold: float) -> torch.Tensor:
    """(d_k, r) float64 orthonormal eigenvectors of the symmetric ``cov`` with eigenvalue < ``threshold``."""
    c = cov.to(torch.float64)
    evals, evecs = torch.linalg.eigh(0.5 * (c + c.T))  # ascending
    basis = evecs[:, evals < threshold]
    if basis.shape[1] == 0:
        raise ValueError(f"no eigenvalue of C is below nullspace_threshold={threshold:g} (smallest "
                         f"{float(evals[0]):.3g}): raise the threshold")
    return basis


@dataclass(frozen=True)
class UpdateRule:
    """One rule and its hyper-parameters (per model: ``MemitHParams`` holds the defaults)."""

    name: str = "memit-static"
    lam: float = 1000.0  # λ, MEMIT's mom2_update_weight (memit-*)
    lam_past: float | None = None  # λ_past, weight of earlier rounds' ΣG (memit-dynamic); None: λ (CollabEdit)
    nullspace_threshold: float = 2e-2  # alphaedit: eigenvalues of C below this span the preserved null space
    l2: float = 10.0  # alphaedit: ridge term

    def __post_init__(self) -> None:
        if self.name not in UPDATE_RULES:
            raise ValueError(f"update rule must be one of {UPDATE_RULES}, got {self.name!r}")
        for key in ("lam", "nullspace_threshold", "l2"):
            if not 0 < getattr(self, key) < float("inf"):
                raise ValueError(f"update rule {self.name}: {key} must be a finite positive number")
        if self.lam_past is not None and not 0 <= self.lam_past < float("inf"):
            raise ValueError(f"update rule {self.name}: lam_past must be a finite number >= 0")

    @property
    def past_weight(self) -> float:
        """λ_past as applied: the setting, or λ when unset (CollabEdit's weight)."""
        return self.lam if self.lam_past is None else self.lam_past

    def basis(self, cov: torch.Tensor) -> torch.Tensor | None:
        """What the rule needs from C once per layer (alphaedit: the null-space basis), else None."""
        return nullspace_basis(cov, self.nullspace_threshold) if self.name == "alphaedit" else None

    def solve(self, b_sum: torch.Tensor, g_sum: torch.Tensor, cov: torch.Tensor,
              past_g: torch.Tensor | None = None, basis: torch.Tensor | None = None) -> torch.Tensor:
        """ΔW (d_v, d_k) float64. ``basis``: ``self.basis(cov)``, passed to skip the eigendecomposition."""
        if self.name == "memit-static":
            return solve_update(b_sum, g_sum, cov, self.lam)
        if self.name == "memit-dynamic":
            return solve_update(b_sum, g_sum, cov, self.lam, past_g=past_g, lam_past=self.past_weight)
        basis = basis if basis is not None else nullspace_basis(cov, self.nullspace_threshold)
        return alphaedit_update(b_sum, g_sum, basis, past_g, self.l2)


def alphaedit_update(b_sum: torch.Tensor, g_sum: torch.Tensor, basis: torch.Tensor,
                     past_g: torch.Tensor | None, l2: float) -> torch.Tensor:
    """ΔW = ΣB U (Uᵀ(ΣG + G_past)U + L2·I)⁻¹ Uᵀ, (d_v, d_k) float64, by Cholesky in the range of P = U Uᵀ."""
    d_k = g_sum.shape[0]
    if g_sum.shape != (d_k, d_k) or b_sum.shape[1] != d_k or basis.shape[0] != d_k:
        raise ValueError(f"shapes do not fit: B {tuple(b_sum.shape)}, G {tuple(g_sum.shape)}, "
                         f"U {tuple(basis.shape)}")
    u = basis.to(torch.float64)  # (d_k, r)
    a = g_sum.to(torch.float64)
    if past_g is not None:
        a = a + past_g.to(torch.float64)
    m = u.T @ a @ u  # (r, r)
    m = 0.5 * (m + m.T) + l2 * torch.eye(u.shape[1], dtype=torch.float64, device=u.device)
    chol, info = torch.linalg.cholesky_ex(m)
    if int(info) != 0:
        raise ValueError(f"Uᵀ(ΣG + G_past)U + L2·I is not positive definite (leading minor {int(info)})")
    bu = b_sum.to(torch.float64) @ u  # (d_v, r)
    y = torch.cholesky_solve(bu.T, chol)  # (r, d_v)
    return y.T @ u.T  # (d_v, d_k)
