"""The calibrated-noise defence ``noise:Z``: party-side clipping, a discrete Gaussian added in shares, its plan.

What a party sends for a layer is one vector v = (the upper triangle of G, row-major as ``numpy.triu_indices``,
off-diagonal entries once and not doubled: ``protocol.statistics``; then B raveled), G = Σ_j w_j k_j k_jᵀ and
B = Σ_j w_j r_j k_jᵀ over its edit requests j with weights 0 < w_j ≤ 1.

**Clipping.** Each key is scaled to ‖k_j‖ ≤ κ (``session.key_norm_bound``) and each residual to ‖r_j‖ ≤ ρ
(``session.residual_norm_bound``) before G and B are formed, after camouflage when both are on: the sensitivity is
then a declared bound, not a data value. The scale carries a relative margin ``CLIP_MARGIN`` = 2^-30 so that the
float64 result has a true norm ≤ κ even with the rounding of the norm itself (≤ d·2^-53 relative, d ≤ 2^20).

**Sensitivity** Δ₂ = sqrt(κ⁴ + ρ²κ²) = κ sqrt(κ² + ρ²) (``sensitivity``). Adding or removing one request of
weight w ≤ 1 changes v by u = w · (upper(k kᵀ), vec(r kᵀ)). The upper triangle of k kᵀ holds k_a k_b for a ≤ b:
    Σ_{a≤b} (k_a k_b)² = Σ_a k_a⁴ + Σ_{a<b} k_a² k_b² = (‖k‖⁴ + Σ_a k_a⁴) / 2 ≤ ‖k‖⁴,
since Σ_a k_a⁴ ≤ (Σ_a k_a²)² (equality for k along one axis: the bound is tight); ‖vec(r kᵀ)‖² = ‖r‖²‖k‖². So
‖u‖² ≤ w² (‖k‖⁴ + ‖r‖²‖k‖²) ≤ κ⁴ + ρ²κ². (The full matrix would give exactly ‖k‖⁴; a packing with the
off-diagonal entries doubled, 2‖k‖⁴ − Σ_a k_a⁴, nearly twice. The wire sends them once, and the noise is added to
the values sent.)

**Noise.** A party adds to every value of v an independent g · N_Z(0, σ_g²) (``dgauss``), g = 2^-``grid_bits`` a
power of two that is a multiple of the session's encoding step (``protection.encoding_frac_bits`` at
``MAX_PARTIES``, a multiple of the step of any roster) and σ_g an integer ≤ 2^24. The statistic is first rounded to
the grid, so the party sends g · (round(v/g) + Y) exactly: every term is a multiple of g below 2^53 g in float64,
and the encoding multiplies by 2^f ≥ 1/g without rounding (shares and ckks both sum exact integers; ckks decrypts
them exactly, ``protection/ckks.py``). The noise of G is drawn for the upper triangle and mirrored, so the party's
G stays symmetric and the lower triangle, which is never sent, carries the same noise. A party with nothing to
edit in a round still adds its noise to its zeros.

**Calibration** against min_parties − 1 honest others: σ_total = Z · Δ₂ and each party's σ = σ_total /
sqrt(min_parties), so the noise of the victim's own party and of min_parties − 1 others adds up to σ_total
whatever the rest do (parties that drop their noise, or whose noise colluders subtract, are not counted).
The accounting (``accounting``) takes the noise as n = min_parties independent discrete Gaussians of σ_g grid
steps each and the sensitivity in grid steps Δ_g = (Δ₂ + ε_float)/g + sqrt(D) (D values): the sqrt(D) is the
rounding to the grid (each value moves by less than one step more than the exact difference), ε_float
(``float_slack``) the float64 error of forming G and B from up to max_edits + 1 clipped requests.

**After the sum** (the solver, and the simulation's ``combine``): ΣG + noise need not be positive semi-definite,
and λC + ΣG may then have no Cholesky factor; ``psd_part`` replaces it by its nearest positive semi-definite matrix
(eigenvalues clipped at 0) before the solve. That is post-processing of the released sum: it costs no privacy.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from secure_collab.editing.dgauss import MAX_SIGMA, discrete_gaussian
from secure_collab.protection.encoding import pack_symmetric, triangle_size, unpack_symmetric

if TYPE_CHECKING:  # torch and the hazmat-backed word source load where they run: the coordinator reads plans only
    import torch

    from secure_collab.editing.statistics import LayerStats
    from secure_collab.protection.randomness import WordSource

CLIP_MARGIN = 2.0**-30  # clipped norms are at most κ (1 − 2^-30) as computed: at most κ in exact arithmetic
SIGMA_BITS = 24  # σ_g ≤ 2^SIGMA_BITS grid steps (dgauss.MAX_SIGMA): the sampler's integers stay in 64 bits
HEADROOM = 40  # value_bound must leave this many σ for the noise (beyond it with probability below 1e-340)
_UNIT_ROUNDOFF = 2.0**-53
assert 1 << SIGMA_BITS == MAX_SIGMA


def sensitivity(key_norm: float, residual_norm: float) -> float:
    """Δ₂ = sqrt(κ⁴ + ρ²κ²): the L2 change of what a party sends when one request of weight ≤ 1 is added or
    removed (module docstring: the derivation)."""
    return key_norm * math.sqrt(key_norm**2 + residual_norm**2)


def float_slack(key_norm: float, residual_norm: float, max_edits: int) -> float:
    """A bound on how far the float64 (upper(G), B) of up to ``max_edits`` + 1 clipped requests can lie from the
    exact one, counted twice (both neighbours): |fl(Σ_j w_j x_j y_j) − Σ_j w_j x_j y_j| ≤ γ_m Σ_j w_j |x_j||y_j|
    for m = max_edits + 3 roundings per term (the weight, the product, the sum; any order, any BLAS), γ_m =
    m u / (1 − m u), and the Frobenius norm of Σ_j |k_j||k_j|ᵀ and of Σ_j |r_j||k_j|ᵀ is at most Σ_j κ² and Σ_j ρκ."""
    m = max_edits + 3
    gamma = m * _UNIT_ROUNDOFF / (1 - m * _UNIT_ROUNDOFF)
    return 2 * gamma * (max_edits + 1) * key_norm * (key_norm + residual_norm)


@dataclass(frozen=True)
class NoisePlan:
    """The mechanism of one session: what each party adds, and what the accountant is told."""

    multiplier: float  # Z: σ_total = Z Δ₂
    key_norm: float  # κ
    residual_norm: float  # ρ
    min_parties: int  # n: the parties whose noise is counted (the victim's and min_parties − 1 others)
    grid_bits: int  # the noise lies on the grid g = 2^-grid_bits
    sigma_grid: int  # each party's σ, in grid steps
    values: int  # D: values per release (G's triangle and B)
    max_edits: int  # requests per party and round (the float slack)

    @property
    def grid(self) -> float:
        return 2.0**-self.grid_bits

    @property
    def delta2(self) -> float:
        return sensitivity(self.key_norm, self.residual_norm)

    @property
    def sigma(self) -> float:
        """One party's σ in value units (at least σ_total / sqrt(min_parties): σ_g is rounded up)."""
        return self.sigma_grid * self.grid

    @property
    def sigma_total(self) -> float:
        """The σ of the counted parties' noise together."""
        return self.sigma * math.sqrt(self.min_parties)

    @property
    def delta_grid(self) -> float:
        """The sensitivity the accountant uses, in grid steps (module docstring)."""
        slack = float_slack(self.key_norm, self.residual_norm, self.max_edits)
        return (self.delta2 + slack) / self.grid + math.sqrt(self.values)

    def summary(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier, "key_norm_bound": self.key_norm,
                "residual_norm_bound": self.residual_norm, "sensitivity": self.delta2,
                "min_parties": self.min_parties, "sigma_per_party": self.sigma, "sigma_total": self.sigma_total,
                "grid": self.grid, "values_per_release": self.values}


def plan_noise(multiplier: float, key_norm: float, residual_norm: float, min_parties: int, d_k: int, d_v: int,
               frac_bits: int, max_edits: int, value_bound: float) -> NoisePlan:
    """The plan for ``noise:multiplier`` under the declared bounds. ``frac_bits``: the coarsest encoding step the
    session may set up with (``protection.encoding_frac_bits`` at ``MAX_PARTIES``). ValueError (one line) when the
    settings cannot carry it."""
    if not (math.isfinite(multiplier) and multiplier > 0):
        raise ValueError(f"noise multiplier must be a finite number > 0, got {multiplier!r}")
    if not (math.isfinite(key_norm) and key_norm > 0 and math.isfinite(residual_norm) and residual_norm > 0):
        raise ValueError("noise needs finite positive key_norm_bound and residual_norm_bound")
    if min_parties < 1 or max_edits < 1:
        raise ValueError("noise needs min_parties >= 1 and max_edits_per_party >= 1")
    target = multiplier * sensitivity(key_norm, residual_norm) / math.sqrt(min_parties)  # one party's σ
    # the finest grid that keeps σ_g ≤ 2^SIGMA_BITS, but never finer than the encoding's step
    grid_bits = min(frac_bits, SIGMA_BITS - math.ceil(math.log2(target)))
    if 2.0**-grid_bits * 2.0**52 < value_bound:
        raise ValueError(f"the noise grid 2^{-grid_bits} is too fine for value_bound={value_bound:g}: float64 "
                         "would round the noised values")
    sigma_grid = math.ceil(target * 2.0**grid_bits)
    if HEADROOM * target > value_bound:
        d2 = sensitivity(key_norm, residual_norm)
        raise ValueError(f"noise:{multiplier:g} gives each party σ = {target:.4g} (Δ₂ = {d2:.4g} for κ = "
                         f"{key_norm:g}, ρ = {residual_norm:g}): value_bound={value_bound:g} leaves no room for "
                         f"{HEADROOM}σ of it; declare bounds κ, ρ that fit the model (docs/dp.md) or a larger "
                         "value_bound")
    if target < 2.0**-grid_bits:
        raise ValueError(f"noise:{multiplier:g} gives each party σ = {target:.3g}, below the encoding's step "
                         f"{2.0**-grid_bits:.3g}: raise the multiplier or lower value_bound")
    return NoisePlan(float(multiplier), float(key_norm), float(residual_norm), int(min_parties), int(grid_bits),
                     int(sigma_grid), triangle_size(d_k) + d_v * d_k, int(max_edits))


def session_noise_plan(defence: Any, session: Any) -> NoisePlan | None:
    """The plan of a session (a ``config.SessionConfig``) with ``defence`` (a ``defences.Defence``), or None without
    noise. The same on every role: it depends on the session file alone."""
    if not defence.noise:
        return None
    from secure_collab.protection import encoding_frac_bits
    from secure_collab.protocol.messages import MAX_PARTIES

    frac = encoding_frac_bits(session.mode, session.value_bound, MAX_PARTIES, session.protection)
    return plan_noise(defence.noise, session.key_norm_bound, session.residual_norm_bound, session.min_parties,
                      session.d_k, session.d_v, frac, session.max_edits_per_party * defence.edit_factor,
                      session.value_bound)


# ------------------------------------------------------------------------------------------- the party side

def clip_rows(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Each row scaled to norm ≤ ``bound`` (float64; rows already inside are unchanged)."""
    x = x.double()
    norms = x.norm(dim=1, keepdim=True)
    limit = bound * (1 - CLIP_MARGIN)
    return x * (limit / norms.clamp_min(limit)).clamp(max=1.0)


def noise_source(rng: random.Random | None) -> WordSource:
    """A party's noise words: a fresh secret key for ``None`` or a ``random.SystemRandom`` (the networked party); for
    a seeded ``random.Random`` (tests, the simulation), a key derived from its state without drawing from it, so
    the camouflage's draws from the same generator are unchanged."""
    from secure_collab.protection.randomness import WordSource

    if rng is None or isinstance(rng, random.SystemRandom):
        return WordSource.fresh()
    state = repr(rng.getstate()).encode()
    return WordSource(hashlib.sha256(b"secure-collab seeded noise key\0" + state).digest())


def add_noise(values: np.ndarray, plan: NoisePlan, words: Any) -> np.ndarray:
    """g (round(values / g) + Y), Y ~ N_Z(0, σ_g²) per value: float64, exact (module docstring)."""
    g = plan.grid
    return (np.rint(values / g) + discrete_gaussian(plan.sigma_grid, values.size, words)) * g


class PartyNoise:
    """One party's noise in a session: clipping to the declared bounds, then the discrete Gaussian on its
    statistics, each (round, layer, statistic) from its own stream of the party's secret ``source``."""

    def __init__(self, plan: NoisePlan, source: WordSource) -> None:
        self.plan, self.source = plan, source

    def clip(self, keys: torch.Tensor, residuals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return clip_rows(keys, self.plan.key_norm), clip_rows(residuals, self.plan.residual_norm)

    def __call__(self, stats: LayerStats, round_: int, layer: int) -> LayerStats:
        import torch

        from secure_collab.editing.statistics import LayerStats

        g = stats.g.detach().double().cpu().numpy()
        b = stats.b.detach().double().cpu().numpy()
        upper = add_noise(pack_symmetric(g), self.plan, self.source.stream(f"round {round_} layer {layer} G").words)
        flat = add_noise(b.reshape(-1), self.plan, self.source.stream(f"round {round_} layer {layer} B").words)
        return LayerStats(torch.from_numpy(unpack_symmetric(upper, g.shape[0])),
                          torch.from_numpy(flat.reshape(b.shape)))


# --------------------------------------------------------------------------------------------- after the sum

def psd_part(g: torch.Tensor) -> torch.Tensor:
    """The positive semi-definite matrix nearest (Frobenius) to the symmetric part of ``g``: its eigenvalues clipped
    at 0. The solver's post-processing of a noised ΣG, so that λC + ΣG stays positive definite."""
    import torch

    sym = 0.5 * (g.double() + g.double().T)
    evals, evecs = torch.linalg.eigh(sym)
    return (evecs * evals.clamp_min(0.0)) @ evecs.T
