"""The two sufficient statistics a party contributes per layer, and their packing for transport.

G = K Kᵀ (d_k, d_k), symmetric, and B = R Kᵀ (d_v, d_k), both float64. How they travel (G as its upper
triangle) is the wire layer's business: ``secure_collab.protocol.statistics``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


@dataclass(frozen=True)
class Bounds:
    """What a session declares about one edit (and one party), so an opened aggregate can be checked."""

    key_norm: float  # κ ≥ ‖k‖ for every key
    residual_norm: float  # ρ ≥ ‖r‖ for every residual
    max_edits: int  # edit requests per party and round
    quantum: float = 0.0  # absolute error of one encoded entry (fixed-point step), per party


def plausibility_problems(g: np.ndarray, b: np.ndarray, n: float, parties: int, bounds: Bounds) -> list[str]:
    """Why (G, B, N) cannot be the sum of ``parties`` honest contributions (empty: plausible).

    Honest: G = Σ k kᵀ is positive semi-definite with tr G = Σ ‖k‖² ≤ κ² N, ‖B‖_F = ‖Σ r kᵀ‖_F ≤ ρ κ N,
    and N is a whole number ≤ parties · max_edits. Each bound gets the fixed-point slack of ``parties``
    encodings. A hostile party that stays inside all of these is not caught: see docs/integrity.md.
    """
    d_k = g.shape[0]
    slack = parties * bounds.quantum * d_k
    problems = []
    if not (np.isfinite(n) and abs(n - round(n)) <= parties * bounds.quantum + 1e-9):
        problems.append(f"edit count {n!r} is not a whole number")
    elif not 0 <= round(n) <= parties * bounds.max_edits:
        problems.append(f"edit count {round(n)} is outside [0, {parties} x max_edits_per_party]")
    if not (np.isfinite(g).all() and np.isfinite(b).all()):
        return [*problems, "non-finite statistic"]
    n = max(round(n), 0)
    trace = float(np.trace(g))
    if trace > bounds.key_norm**2 * n + slack:
        problems.append(f"tr ΣG = {trace:.6g} exceeds κ² · N = {bounds.key_norm**2 * n:.6g}")
    lowest = float(np.linalg.eigvalsh(0.5 * (g + g.T))[0])
    if lowest < -(slack + 1e-9 * max(trace, 1.0)):
        problems.append(f"ΣG is not positive semi-definite (eigenvalue {lowest:.3g})")
    frob = float(np.linalg.norm(b))
    limit = bounds.residual_norm * bounds.key_norm * n + parties * bounds.quantum * np.sqrt(b.size)
    if frob > limit:
        problems.append(f"‖ΣB‖_F = {frob:.6g} exceeds ρ κ N = {bounds.residual_norm * bounds.key_norm * n:.6g}")
    return problems
