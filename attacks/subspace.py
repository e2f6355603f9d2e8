"""Subspace ranking in the manner of KSTER: candidates whose public keys lie in the recovered span rank first.

score(s) = ‖Qᵀ k_s‖ / ‖k_s‖ for an orthonormal basis Q (d_k, r) of the recovered span and the key k_s that the
public model gives candidate subject s under the public context templates.
"""

from __future__ import annotations

import torch


def projection_scores(basis: torch.Tensor, cand_keys: torch.Tensor) -> torch.Tensor:
    """(N,) fraction of each candidate key's norm inside span(basis)."""
    k = cand_keys.double()
    proj = k @ basis.double()  # (N, r)
    return proj.norm(dim=1) / k.norm(dim=1).clamp_min(1e-300)


def ranks_of(scores: torch.Tensor, targets: list[int]) -> list[int]:
    """0-based rank of each target index when candidates are sorted by descending score (ties count against)."""
    out = []
    for t in targets:
        out.append(int((scores > scores[t]).sum()) + int((scores[torch.arange(len(scores)) != t] == scores[t]).sum()))
    return out


def top(scores: torch.Tensor, n: int) -> list[int]:
    return torch.argsort(scores, descending=True)[:n].tolist()
