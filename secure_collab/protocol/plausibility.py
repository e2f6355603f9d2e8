"""Plausibility of an opened aggregate: could (ΣG, ΣB, N) be the sum of honest contributions?

The solver runs this on every opened aggregate before solving, and a party on its own statistics before
sending them (so an honest party learns at once that the session's declared bounds are too tight).
Pure numpy, no torch: the solver process stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bounds:
    """What a session declares about one edit (and one party), so an opened aggregate can be checked."""

    key_norm: float  # κ ≥ ‖k‖ for every key
    residual_norm: float  # ρ ≥ ‖r‖ for every residual
    max_edits: int  # edit requests per party and round
    quantum: float = 0.0  # absolute error of one encoded entry (fixed-point step), per party


@dataclass(frozen=True)
class Problem:
    """One failed check: ``check`` names it (what may leave the solver), ``detail`` holds the figures of the
    opened aggregate (which never leave it: they would give away other parties' edit counts and traces)."""

    check: str
    detail: str

    def __str__(self) -> str:
        return self.detail


CHECKS = {
    "edit-count": "the total edit count is not a whole number within parties × max_edits_per_party",
    "non-finite": "a statistic is not finite",
    "trace": "tr ΣG exceeds key_norm_bound² × the total edit count",
    "psd": "ΣG is not positive semi-definite",
    "residual": "‖ΣB‖_F exceeds residual_norm_bound × key_norm_bound × the total edit count",
}


def plausibility_problems(g: np.ndarray, b: np.ndarray, n: float, parties: int, bounds: Bounds) -> list[Problem]:
    """Why (G, B, N) cannot be the sum of ``parties`` honest contributions (empty: plausible).

    Honest: G = Σ k kᵀ is positive semi-definite with tr G = Σ ‖k‖² ≤ κ² N, ‖B‖_F = ‖Σ r kᵀ‖_F ≤ ρ κ N,
    and N is a whole number ≤ parties · max_edits. Each bound gets the fixed-point slack of ``parties``
    encodings. A hostile party that stays inside all of these is not caught: see docs/integrity.md.
    """
    d_k = g.shape[0]
    slack = parties * bounds.quantum * d_k
    problems = []
    if not (np.isfinite(n) and abs(n - round(n)) <= parties * bounds.quantum + 1e-9):
        problems.append(Problem("edit-count", f"edit count {n!r} is not a whole number"))
    elif not 0 <= round(n) <= parties * bounds.max_edits:
        problems.append(Problem("edit-count", f"edit count {round(n)} is outside [0, {parties} x max_edits_per_party]"))
    if not (np.isfinite(g).all() and np.isfinite(b).all()):
        return [*problems, Problem("non-finite", "non-finite statistic")]
    n = max(round(n), 0)
    trace = float(np.trace(g))
    if trace > bounds.key_norm**2 * n + slack:
        problems.append(Problem("trace", f"tr ΣG = {trace:.6g} exceeds κ² · N = {bounds.key_norm**2 * n:.6g}"))
    lowest = float(np.linalg.eigvalsh(0.5 * (g + g.T))[0])
    if lowest < -(slack + 1e-9 * max(trace, 1.0)):
        problems.append(Problem("psd", f"ΣG is not positive semi-definite (eigenvalue {lowest:.3g})"))
    frob = float(np.linalg.norm(b))
    limit = bounds.residual_norm * bounds.key_norm * n + parties * bounds.quantum * np.sqrt(b.size)
    if frob > limit:
        problems.append(Problem("residual", f"‖ΣB‖_F = {frob:.6g} exceeds ρ κ N = "
                                            f"{bounds.residual_norm * bounds.key_norm * n:.6g}"))
    return problems
