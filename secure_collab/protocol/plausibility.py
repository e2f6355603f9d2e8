"""Plausibility of an opened aggregate: could (ΣG, ΣB, N) be the sum of honest contributions?

The solver runs this on every opened aggregate before solving, and a party on its own statistics before
sending them (so an honest party learns at once that the session's declared bounds are too tight).
Pure numpy, no torch: the solver process stays light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# an honest noised aggregate is refused for its noise with probability at most 3e^-NOISE_TAIL (about 1e-19)
NOISE_TAIL = 45.0


@dataclass(frozen=True)
class Bounds:
    """What a session declares about one edit (and one party), so an opened aggregate can be checked."""

    key_norm: float  # κ ≥ ‖k‖ for every key
    residual_norm: float  # ρ ≥ ‖r‖ for every residual
    max_edits: int  # edit requests per party and round
    quantum: float = 0.0  # absolute error of one encoded entry (fixed-point step), per party
    noise: float = 0.0  # σ of the noise one party adds to each entry (session.defence noise:Z), per party
    ridge: float = 0.0  # the solve's ε where it is B (G + εI)⁻¹ (MALMEN: e^{λ_l}); 0: no leverage check


def noise_slack(noise: float, parties: int, d_k: int, b_values: int) -> tuple[float, float, float]:
    """How far the parties' noise can move (tr ΣG, ΣG's smallest eigenvalue, ‖ΣB‖_F), each except with probability
    ≤ e^-t, t = ``NOISE_TAIL``. Each entry's noise is a sum of ``parties`` independent discrete Gaussians of
    σ = ``noise``, so s²-subgaussian with s² = parties · σ² (a discrete Gaussian is σ²-subgaussian: Canonne, Kamath &
    Steinke 2020); the noise E of ΣG is symmetric, its upper triangle independent.
    - trace: Σ of d_k entries is (d_k s²)-subgaussian: |tr E| ≤ s sqrt(2 d_k (t + ln 2)).
    - eigenvalue: for a unit x, xᵀEx = Σ_a E_aa x_a² + 2 Σ_{a<b} E_ab x_a x_b is subgaussian with proxy
      s² (Σ x_a⁴ + 4 Σ_{a<b} x_a² x_b²) ≤ 2s²; over a ¼-net of the sphere (at most 9^d_k points, and
      ‖E‖ ≤ 2 max over the net of |xᵀEx|), ‖E‖ ≤ 4s sqrt(d_k ln 9 + t + ln 2).
    - ‖E_B‖_F: E[exp(λX²)] ≤ (1 − 2λs²)^-1/2 for a subgaussian X, so the χ² tail of Laurent & Massart holds:
      ‖E_B‖² ≤ s² (D + 2 sqrt(D t) + 2t) for its D = ``b_values`` entries."""
    s = noise * math.sqrt(parties)
    trace = s * math.sqrt(2 * d_k * (NOISE_TAIL + math.log(2)))
    spectral = 4 * s * math.sqrt(d_k * math.log(9) + NOISE_TAIL + math.log(2))
    frob = s * math.sqrt(b_values + 2 * math.sqrt(b_values * NOISE_TAIL) + 2 * NOISE_TAIL)
    return trace, spectral, frob


@dataclass(frozen=True)
class Problem:
    """One failed check: ``check`` names it (what may leave the solver), ``detail`` holds the figures of the
    opened aggregate (which never leave it: they would give away other parties' edit counts and traces)."""

    check: str
    detail: str

    def __str__(self) -> str:
        return self.detail


CHECKS = {
    "edit-count": "the total edit count is not a finite whole number within "
                  "[1, parties × max_edits_per_party × (1 + R)] (decoys:R count as edits)",
    "non-finite": "a statistic, or its trace, eigenvalue or norm, is not finite",
    "trace": "tr ΣG exceeds key_norm_bound² × the total edit count",
    "psd": "ΣG is not positive semi-definite",
    "residual": "‖ΣB‖_F exceeds residual_norm_bound × key_norm_bound × the total edit count",
    "leverage": "‖ΣB (ΣG + εI)^-1/2‖₂ exceeds residual_norm_bound × √(the total edit count) (ε: the solve's ridge)",
}


def plausibility_problems(g: np.ndarray, b: np.ndarray, n: float, parties: int, bounds: Bounds, *,
                          fewest: int = 1) -> list[Problem]:
    """Why (G, B, N) cannot be the sum of ``parties`` honest contributions (empty: plausible).

    Honest: G = Σ k kᵀ is positive semi-definite with tr G = Σ ‖k‖² ≤ κ² N, ‖B‖_F = ‖Σ r kᵀ‖_F ≤ ρ κ N,
    and N is a whole number in [fewest, parties · max_edits]. ``fewest`` is 1 for an aggregate the solver would
    solve (no edit at all is nothing to release) and 0 for one party's own statistics (a party with nothing to
    edit this round sends zeros). Each bound gets the fixed-point slack of ``parties`` encodings and, with noise,
    the slack of ``parties`` parties' noise (``noise_slack``; N carries no noise).

    Where the solve is ΔW = ΣB (ΣG + εI)⁻¹ (``bounds.ridge`` = ε > 0: MALMEN, whose only damping is e^{λ_l}),
    ‖ΣB (ΣG + εI)^-1/2‖₂ ≤ ρ √N too: with V = W^½U and the rows' weights w ≤ 1, ΣB (ΣG + εI)^-1/2 =
    (W^½D)ᵀ V (VᵀV + εI)^-1/2, whose norm is at most ‖W^½D‖_F · 1 ≤ ρ √(Σ w_e) ≤ ρ √N. Without it, one party could
    send B mass along a key direction no edit spans (ΣG has rank ≪ d_k), inside every other bound, and ΔW would
    carry it amplified by 1/ε; with it, what ΔW can carry is ‖ΔW‖₂ ≤ ρ √N / (2√ε). Total: any
    input, NaN and infinities included, gives a list, never an exception (it is the last check behind the MAC).
    A hostile party that stays inside all of these is not caught: see docs/integrity.md.
    """
    d_k = g.shape[0]
    slack = parties * bounds.quantum * d_k
    problems = []
    top = parties * bounds.max_edits
    # the count the other bounds use: N rounded into [0, top] (0 when N is not finite), so that a bad N is one
    # problem and not an exception or a cascade
    count = min(max(round(n), 0), top) if np.isfinite(n) else 0
    if not np.isfinite(n):
        problems.append(Problem("edit-count", f"edit count {n!r} is not finite"))
    elif abs(n - round(n)) > parties * bounds.quantum + 1e-9:
        problems.append(Problem("edit-count", f"edit count {n!r} is not a whole number"))
    elif not fewest <= round(n) <= top:
        problems.append(Problem("edit-count", f"edit count {round(n)} is outside [{fewest}, {parties} x "
                                              "max_edits_per_party]"))
    if not (np.isfinite(g).all() and np.isfinite(b).all()):
        return [*problems, Problem("non-finite", "non-finite statistic")]
    n = count
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is a named problem below, not a warning
        problems += _matrix_problems(g, b, n, parties, bounds, slack)
    return problems


def _matrix_problems(g: np.ndarray, b: np.ndarray, n: int, parties: int, bounds: Bounds, slack: float) -> list[Problem]:
    problems = []
    # Finite entries can still overflow in what is computed from them (|entries| near 1e308: g + g.T is ±inf,
    # eigvalsh then NaN, and NaN < -tol is False): symmetrise as 0.5 g + 0.5 gᵀ, and a trace, eigenvalue or norm
    # that is not finite is a named problem, never a pass. Config caps value_bound (MAX_STAT_BOUND) so that an
    # in-bound aggregate never gets here.
    noisy_trace, noisy_eig, noisy_frob = noise_slack(bounds.noise, parties, g.shape[0], b.size)
    trace = float(np.trace(g))
    if not np.isfinite(trace):
        problems.append(Problem("non-finite", f"tr ΣG = {trace!r} is not finite (overflow)"))
    elif trace > bounds.key_norm**2 * n + slack + noisy_trace:
        problems.append(Problem("trace", f"tr ΣG = {trace:.6g} exceeds κ² · N = {bounds.key_norm**2 * n:.6g}"))
    eigvecs = None
    try:
        eigvals, eigvecs = _spectrum(g, vectors=bounds.ridge > 0)
        lowest = float(eigvals[0])
    except np.linalg.LinAlgError:  # did not converge: nothing says ΣG is positive semi-definite
        lowest = float("nan")
    tolerance = (slack + 1e-9 * max(trace, 1.0) if np.isfinite(trace) else slack + 1e-9) + noisy_eig
    if not np.isfinite(lowest):
        problems.append(Problem("psd", f"ΣG's smallest eigenvalue is {lowest!r}: not finite (overflow)"))
    elif lowest < -tolerance:
        problems.append(Problem("psd", f"ΣG is not positive semi-definite (eigenvalue {lowest:.3g})"))
    frob = float(np.linalg.norm(b))
    limit = bounds.residual_norm * bounds.key_norm * n + parties * bounds.quantum * np.sqrt(b.size) + noisy_frob
    if not np.isfinite(frob):
        problems.append(Problem("non-finite", f"‖ΣB‖_F = {frob!r} is not finite (overflow)"))
    elif frob > limit:
        problems.append(Problem("residual", f"‖ΣB‖_F = {frob:.6g} exceeds ρ κ N = "
                                            f"{bounds.residual_norm * bounds.key_norm * n:.6g}"))
    if bounds.ridge > 0 and eigvecs is not None and np.isfinite(lowest) and lowest >= -tolerance:
        problems += _leverage_problems(b, eigvals, eigvecs, n, parties, bounds, slack)
    return problems


_SYM_ROWS = 128  # rows per step of ``_symmetrised`` (its only temporary: 128 × d values)


def _symmetrised(g: np.ndarray) -> np.ndarray:
    """½ G + ½ Gᵀ in one new (d, d) buffer, row block by row block: no temporary as long as G (at d_k 14,336 one
    is 1.6 GB). Halved before adding, so that finite entries near 1e308 stay finite; exactly symmetric, since
    float addition commutes."""
    out: np.ndarray = np.multiply(g, 0.5)
    for start in range(0, g.shape[0], _SYM_ROWS):
        rows = out[start : start + _SYM_ROWS]
        rows += 0.5 * g[:, start : start + _SYM_ROWS].T
    return out


def _spectrum(g: np.ndarray, *, vectors: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The ascending eigenvalues of ½ G + ½ Gᵀ (and its eigenvectors where ``vectors``), with one (d, d) buffer
    beside G: LAPACK works in the symmetrised copy (overwrite_a, passed in Fortran order, which a symmetric
    matrix already is), where numpy's eigvalsh would copy it once more. Eigenvalues alone through dsyevd (as
    numpy's eigvalsh), vectors through dsyevr (its workspace is O(d); dsyevd's is 2 d² more)."""
    import scipy.linalg

    sym = _symmetrised(g).T  # the same matrix, Fortran-contiguous
    if not vectors:
        return scipy.linalg.eigh(sym, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd"), None
    eigvals, eigvecs = scipy.linalg.eigh(sym, overwrite_a=True, check_finite=False, driver="evr")
    return eigvals, eigvecs


def _leverage_problems(b: np.ndarray, eigvals: np.ndarray, eigvecs: np.ndarray, n: int, parties: int, bounds: Bounds,
                       slack: float) -> list[Problem]:
    """‖ΣB (ΣG + εI)^-1/2‖₂ ≤ ρ √N (``plausibility_problems``), with the fixed-point error of the opened aggregate
    allowed for: ΣG is within ``slack`` ≥ ‖E_G‖₂ of the honest sum, so ΣG + (ε + slack) I ⪰ G_honest + εI and the
    honest B's figure can only shrink; B's own error adds at most ‖E_B‖_F / √(ε + slack). Noise is not allowed for
    (MALMEN refuses the noise defence), so a noised aggregate is not checked here."""
    if bounds.noise:
        return []
    eps = bounds.ridge + slack
    # (ΣG + εI)^-1/2 = V diag(s) Vᵀ, and ‖B V diag(s) Vᵀ‖₂ = ‖B V diag(s)‖₂ (Vᵀ is orthogonal): one (d_v, d_k)
    # product instead of two (d_k, d_k) ones
    scaled = b @ eigvecs
    scaled *= 1.0 / np.sqrt(np.maximum(eigvals + eps, eps * 1e-12))
    figure = float(np.linalg.norm(scaled, 2))
    limit = (bounds.residual_norm * math.sqrt(n) + parties * bounds.quantum * math.sqrt(b.size) / math.sqrt(eps))
    limit *= 1 + 1e-9
    if not np.isfinite(figure):
        return [Problem("non-finite", f"‖ΣB (ΣG + εI)^-1/2‖₂ = {figure!r} is not finite (overflow)")]
    if figure > limit:
        return [Problem("leverage", f"‖ΣB (ΣG + εI)^-1/2‖₂ = {figure:.6g} exceeds ρ √N = "
                                    f"{bounds.residual_norm * math.sqrt(n):.6g} (ε = {bounds.ridge:.6g})")]
    return []
