"""Spectral attacks: K up to a rotation from a Gram matrix, and the span of the edited keys from any view.

G = K Kᵀ = U Λ Uᵀ gives K = U Λ^½ Q for an unknown orthogonal Q (m × m). At m = 1 that is k = ±√λ₁ u₁:
exact up to its sign, which the mean of public keys settles (keys of a trained model share a mean direction).
Every view whose range is the span of the edited keys yields that span:
- G or ΣG: its eigenvectors with non-negligible eigenvalues;
- B = R Kᵀ or ΣB: its right singular vectors (rows of B are combinations of the keys);
- ΔW = B (λC + G)⁻¹ with the public λC: λC·v lies in span(K) for every row-space vector v of ΔW, because
  λC v = (λC + G) v − G v and both terms lie in span(K). So span(K) = λC · rowspace(ΔW), exactly.
"""

from __future__ import annotations

import torch


def effective_rank(values: torch.Tensor, rel_tol: float = 1e-8) -> int:
    """Number of (singular or eigen) values above ``rel_tol`` times the largest."""
    v = values.abs()
    if v.numel() == 0 or float(v.max()) == 0.0:
        return 0
    return int((v > rel_tol * v.max()).sum())


def keys_from_gram(g: torch.Tensor, m: int | None = None, mean_key: torch.Tensor | None = None) -> torch.Tensor:
    """K up to rotation from G = K Kᵀ: (r, d_k) rows √λ_i u_iᵀ, largest first; r = ``m`` or the numeric rank.

    With ``mean_key`` each row's sign is chosen to agree with it (exact at m = 1)."""
    g = 0.5 * (g.double() + g.double().T)
    evals, evecs = torch.linalg.eigh(g)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    r = m if m is not None else effective_rank(evals)
    rows = evecs[:, :r].T * evals[:r].clamp_min(0).sqrt()[:, None]  # (r, d_k)
    if mean_key is not None:
        sign = torch.sign(rows @ mean_key.double())
        rows = rows * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
    return rows


def basis_from_gram(g: torch.Tensor, m: int | None = None) -> torch.Tensor:
    """Orthonormal basis (d_k, r) of the range of a symmetric PSD G."""
    g = 0.5 * (g.double() + g.double().T)
    evals, evecs = torch.linalg.eigh(g)
    evals, evecs = evals.flip(0), evecs.flip(1)
    r = m if m is not None else effective_rank(evals)
    return evecs[:, :r]


def basis_from_rows(mat: torch.Tensor, m: int | None = None) -> torch.Tensor:
    """Orthonormal basis (d_k, r) of the row space of ``mat`` (d_v, d_k), r = ``m`` or the numeric rank."""
    _, s, vh = torch.linalg.svd(mat.double(), full_matrices=False)
    r = m if m is not None else effective_rank(s)
    return vh[:r].T


def basis_from_delta(delta: torch.Tensor, lam_cov: torch.Tensor, m: int | None = None) -> torch.Tensor:
    """span(K) from a released ΔW (d_v, d_k) and the public λC (d_k, d_k): λC · rowspace(ΔW)."""
    _, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    r = m if m is not None else effective_rank(s, 1e-6)
    mapped = lam_cov.double() @ vh[:r].T  # (d_k, r), spans span(K)
    q, _ = torch.linalg.qr(mapped)
    return q


def remove_known(basis: torch.Tensor, known_keys: torch.Tensor) -> torch.Tensor:
    """The part of span(basis) orthogonal to keys the attacker already knows (a party's own edits)."""
    if known_keys.numel() == 0:
        return basis
    kq, _ = torch.linalg.qr(known_keys.double().T)  # (d_k, n_known)
    rest = basis - kq @ (kq.T @ basis)
    u, s, _ = torch.linalg.svd(rest, full_matrices=False)
    keep = basis.shape[1] - known_keys.shape[0]
    return u[:, :max(0, keep)]
