"""The two sufficient statistics a party contributes per layer, and their packing for transport.

G = K Kᵀ (d_k, d_k), symmetric: only its upper triangle (row-major, diagonal included) travels.
B = R Kᵀ (d_v, d_k), raveled row-major. Both in float64.
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


def layer_statistics(keys: torch.Tensor, residuals: torch.Tensor) -> LayerStats:
    """keys (n, d_k), residuals (n, d_v) -> G = K Kᵀ, B = R Kᵀ in MEMIT's convention (K, R have one column per edit)."""
    if keys.ndim != 2 or residuals.ndim != 2 or keys.shape[0] != residuals.shape[0]:
        raise ValueError(f"keys {tuple(keys.shape)} and residuals {tuple(residuals.shape)} must be (n, d)")
    k = keys.to(torch.float64)
    r = residuals.to(torch.float64)
    return LayerStats(g=k.T @ k, b=r.T @ k)


def sum_stats(stats: list[LayerStats]) -> LayerStats:
    if not stats:
        raise ValueError("no statistics to add")
    total = stats[0]
    for s in stats[1:]:
        total = total + s
    return total


def pack_upper(g: torch.Tensor) -> torch.Tensor:
    """Upper triangle (diagonal included) of a square matrix, row-major: d(d+1)/2 values."""
    d = g.shape[0]
    i, j = torch.triu_indices(d, d, device=g.device)
    return g[i, j]


def unpack_upper(flat: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of ``pack_upper``: the symmetric (d, d) matrix."""
    if flat.numel() != d * (d + 1) // 2:
        raise ValueError(f"{flat.numel()} values do not form the upper triangle of a {d}x{d} matrix")
    i, j = torch.triu_indices(d, d, device=flat.device)
    g = torch.zeros((d, d), dtype=flat.dtype, device=flat.device)
    g[i, j] = flat
    g[j, i] = flat
    return g
