"""The two sufficient statistics a party contributes per layer, and their packing for transport.

G = K Kᵀ (d_k, d_k), symmetric, and B = R Kᵀ (d_v, d_k), both float64. How they travel (G as its upper
triangle) is the wire layer's business: ``secure_collab.protocol.statistics``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerStats:
    g: torch.Tensor  # (d_k, d_k) float64, K Kᵀ
    b: torch.Tensor  # (d_v, d_k) float64, R Kᵀ

    def __add__(self, other: LayerStats) -> LayerStats:
        return LayerStats(self.g + other.g, self.b + other.b)


def layer_statistics(keys: torch.Tensor, residuals: torch.Tensor, weights: torch.Tensor | None = None) -> LayerStats:
    """keys (n, d_k), residuals (n, d_v) -> G = K Kᵀ, B = R Kᵀ in MEMIT's convention (K, R have one column per edit).

    ``weights`` (n,): G = Σ w_j k_j k_jᵀ, B = Σ w_j r_j k_jᵀ; a duplicate held by m parties is contributed by each at
    w = 1/m (``overlap.decide``), so the m copies add up to one."""
    if keys.ndim != 2 or residuals.ndim != 2 or keys.shape[0] != residuals.shape[0]:
        raise ValueError(f"keys {tuple(keys.shape)} and residuals {tuple(residuals.shape)} must be (n, d)")
    k = keys.to(torch.float64)
    r = residuals.to(torch.float64)
    if weights is None:
        return LayerStats(g=k.T @ k, b=r.T @ k)
    w = weights.to(device=k.device, dtype=torch.float64)
    if w.shape != (k.shape[0],) or not bool(torch.isfinite(w).all()) or bool((w <= 0).any()) or bool((w > 1).any()):
        raise ValueError(f"weights must be (n,) = ({k.shape[0]},) in (0, 1]")
    wk = k * w[:, None]  # (n, d_k)
    return LayerStats(g=wk.T @ k, b=r.T @ wk)


def sum_stats(stats: list[LayerStats]) -> LayerStats:
    if not stats:
        raise ValueError("no statistics to add")
    total = stats[0]
    for s in stats[1:]:
        total = total + s
    return total
