"""Defences for what a session releases: tensors in, tensors out (docs/privacy.md measures each).

Every party receives ΔW = ΣB (λC + ΣG)⁻¹, and span(K) = λC · rowspace(ΔW) exactly: whoever holds ΔW ranks the
edited subjects among public candidates by how much of each candidate's key lies in that span. A defence is a
session setting (``session.defence`` in the session file, ``--defence`` in the simulation and the attacks):

- ``camouflage:S`` (party side, KSTER's "subspace camouflage", arXiv 2602.10134): each key k is sent as
  k' = k + n, with n a random mix of ``CAMOUFLAGE_MIX`` public decoy subjects' keys (drawn by the party's CSPRNG
  from the public corpus titles), made orthogonal to k in the metric A = (λC)⁻¹ and scaled to ‖n‖ = S‖k‖; the
  residual is scaled by ρ = (1 + w k'ᵀAk') / (1 + w kᵀAk) (w: the request's weight). For one edit against λC
  alone this is exact: ΔW k is then what it is without camouflage (Sherman-Morrison; tested). The exact rescale
  for a session would need (λC + ΣG)⁻¹, which no party sees: the party-local rescale ignores the other edits'
  keys, and the edits' cross-talk in the sequential variant is corrected by the later layers' residuals. The
  span the release gives is then span(K + N): it holds the decoy keys as much as the true ones.
- ``rank:K`` (solver side): ΔW replaced by its best rank-K approximation in the metric of the keys it acts on,
  argmin over rank-K M of E‖(ΔW − M) x‖² for x with covariance C: the truncated SVD of ΔW C^½, mapped back.
  The release's row space then has K dimensions, fewer than the edits.

- ``noise:Z`` (party side, with the solver's accountant): each party clips its keys to ‖k‖ ≤ κ and residuals to
  ‖r‖ ≤ ρ (the session's declared bounds) and adds a discrete Gaussian to every value it sends, calibrated so that
  the noise of min_parties parties together has σ = Z · sqrt(κ⁴ + ρ²κ²); ``delta:D`` sets the δ the session's ε is
  given at (default ``DEFAULT_DELTA`` = 1e-6). ``editing/noise.py`` has the mechanism, ``editing/accounting.py``
  the (ε, δ), docs/dp.md both.

- ``decoys:R[@P]`` (party side, ``editing/decoys.py``): R public decoy subjects per real edit, each one whose
  current answer the model gives with p >= P (default ``DECOY_CONFIDENCE`` = 0.9), edited toward that answer with
  a residual as large as one of the party's real ones; they enter only G and B (and the edit count N, which
  becomes (1 + R)·n: the solver's expected count and bounds scale by ``edit_factor``).

All combine (``camouflage:3+decoys:3+rank:20+noise:1``; decoys are added to the party's keys and residuals before
camouflage, camouflage before clipping). What is not built yet is refused by name (``NOT_BUILT``), not silently
ignored. A served release is not a transform of ΔW but a release policy
(who holds ΔW at all): it is the session's ``release = "served"`` setting (``secure_collab.config.RELEASES``), and
``served`` written here is refused with a pointer to it, so the policy has one home.

torch is imported where the math runs, not at the top: the session file's loader parses the setting here, and the
coordinator, which loads it, stays free of torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CAMOUFLAGE_MIX = 8  # public decoy keys mixed into one camouflage direction
NOT_BUILT: tuple[str, ...] = ()
FORMS = ("none | camouflage:S (S > 0) | decoys:R[@P] (R >= 1; P in [0, 1], the least answer probability of a decoy, "
         "default 0.9) | rank:K (K >= 1) | noise:Z (Z > 0) [delta:D (0 < D < 1)], joined with '+'")
DEFAULT_DEFENCE = "none"  # `default`: the session setting's default (config.SessionConfig.defence; tested equal)
DEFAULT_DELTA = 1e-6  # the edit count is private, unknown at setup: 1/1000², i.e. 1/n² up to n = 1000 edits
MAX_DECOYS = 100  # decoys per real edit: a party's statistics time grows with 1 + R
# The decoy sampler's public floor (``decoys.draw_decoys``): a decoy is a subject whose current answer the model gives
# with p(top-1) >= this (why 0.9: secure_collab/editing/decoys.py). ``decoys:R@P`` sets another (0 admits any
# subject: only for models that are never sure, such as the tests' tiny random ones).
DECOY_CONFIDENCE = 0.9
MAX_SPEC = 100  # characters of a setting's text: it comes from a session file


class DefenceError(ValueError):
    """A defence setting that cannot be parsed (one-line message)."""


@dataclass(frozen=True)
class Defence:
    camouflage: float = 0.0  # S: ‖n‖ = S‖k‖; 0: off
    rank: int = 0  # K: ΔW truncated to rank K at the solver; 0: off
    noise: float = 0.0  # Z: σ_total = Z Δ₂ (editing.noise); 0: off
    delta: float = DEFAULT_DELTA  # δ of the session's (ε, δ) (with noise only)
    decoys: int = 0  # R: decoy edits per real edit at each party; 0: off
    decoy_floor: float = DECOY_CONFIDENCE  # P: the least current-answer probability of a decoy subject

    @property
    def none(self) -> bool:
        return self.camouflage == 0 and self.rank == 0 and self.noise == 0 and self.decoys == 0

    @property
    def edit_factor(self) -> int:
        """Edits a party counts in N per real edit: 1 + R (decoys count as edits; R is public, a session setting)."""
        return 1 + self.decoys

    def repair_rounds(self, served: bool) -> int:
        """Rounds a session adds for this defence: decoys:R's repair round (1) when the weights are released (a
        served release hands no party the edited model to check its decoys on), else 0."""
        return int(bool(self.decoys) and not served)

    def spec(self) -> str:
        """The canonical text of this setting (what the session file and the results carry)."""
        parts = ([f"camouflage:{self.camouflage:g}"] if self.camouflage else []) + (
            [f"decoys:{self.decoys}" + (f"@{self.decoy_floor:g}" if self.decoy_floor != DECOY_CONFIDENCE else "")]
            if self.decoys else []) + (
            [f"rank:{self.rank}"] if self.rank else []) + ([f"noise:{self.noise:g}"] if self.noise else []) + (
            [f"delta:{self.delta:g}"] if self.noise and self.delta != DEFAULT_DELTA else [])
        return "+".join(parts) or "none"


def parse_defence(text: str) -> Defence:
    """``none`` (or ``default``) | ``camouflage:S`` | ``decoys:R`` | ``rank:K`` | ``noise:Z`` [``delta:D``] | ``A+B``: a
    ``Defence``, or ``DefenceError`` saying what is wrong."""
    text = str(text).strip()
    if len(text) > MAX_SPEC:
        raise DefenceError(f"defence setting of {len(text)} characters (at most {MAX_SPEC}): use {FORMS}")
    if text == "default":  # what `session init` and the demo set: none (docs/privacy.md measured none worth its cost)
        text = DEFAULT_DEFENCE
    if text in ("", "none"):
        return Defence()
    camouflage, rank, noise, delta, decoys, floor = 0.0, 0, 0.0, 0.0, 0, DECOY_CONFIDENCE
    for part in text.split("+"):
        name, _, value = part.strip().partition(":")
        if name == "served":
            raise DefenceError("a served release is the session setting release = \"served\" (with query_budget), "
                               f"not a defence; use {FORMS} here")
        if name in NOT_BUILT:
            raise DefenceError(f"defence {name!r} is not built yet (docs/privacy.md lists what is); use {FORMS}")
        try:
            if name == "camouflage" and not camouflage:
                camouflage = float(value)
                if not (0 < camouflage <= 100 and math.isfinite(camouflage)):
                    raise ValueError
                continue
            if name == "decoys" and not decoys:
                count, at, least = value.partition("@")
                decoys, floor = int(count), float(least) if at else DECOY_CONFIDENCE
                if not (1 <= decoys <= MAX_DECOYS and 0 <= floor <= 1):
                    raise ValueError
                continue
            if name == "rank" and not rank:
                rank = int(value)
                if not 1 <= rank <= 1_000_000:
                    raise ValueError
                continue
            if name == "noise" and not noise:
                noise = float(value)
                if not (0 < noise <= 1e6 and math.isfinite(noise)):
                    raise ValueError
                continue
            if name == "delta" and not delta:
                delta = float(value)
                if not 0 < delta < 1:
                    raise ValueError
                continue
        except ValueError:
            pass
        raise DefenceError(f"bad defence {part.strip()!r} in {text!r}: use {FORMS}")
    if delta and not noise:
        raise DefenceError(f"delta:D is the δ of noise:Z's (ε, δ): it needs noise in {text!r}; use {FORMS}")
    return Defence(camouflage, rank, noise, delta or DEFAULT_DELTA, decoys, floor)


# --------------------------------------------------------------------------------------------- camouflage

def _a_solve(lam_cov: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(λC)⁻¹ x for x (d_k, n), by Cholesky (λC is symmetric positive definite)."""
    import torch

    chol = torch.linalg.cholesky(lam_cov.double())
    return torch.cholesky_solve(x.double(), chol)


def draw_mixes(rng: random.Random, n: int, pool_size: int, mix: int = CAMOUFLAGE_MIX
               ) -> list[tuple[list[int], list[float]]]:
    """For each of ``n`` keys: which ``mix`` pool entries its camouflage mixes, and their N(0, 1) weights."""
    mix = min(mix, pool_size)
    out = []
    for _ in range(n):
        idx = rng.sample(range(pool_size), mix)
        out.append((idx, [rng.gauss(0.0, 1.0) for _ in idx]))
    return out


def camouflage(keys: torch.Tensor, residuals: torch.Tensor, lam_cov: torch.Tensor, pool: torch.Tensor,
               scale: float, rng: random.Random, weights: torch.Tensor | None = None,
               mix: int = CAMOUFLAGE_MIX) -> tuple[torch.Tensor, torch.Tensor]:
    """Camouflaged (keys, residuals), (n, d_k) and (n, d_v) float64, for one party's edits at one layer.

    ``pool`` (M, d_k): keys of public decoy subjects at this layer; each key's direction n mixes ``mix`` of them
    (indices and N(0, 1) weights from ``rng``: the party passes ``random.SystemRandom()``, tests a seeded
    ``random.Random``). See the module docstring for the rule and what is exact.
    """
    if pool.ndim != 2 or pool.shape[0] < 1:
        raise ValueError(f"camouflage needs a non-empty decoy pool (M, d_k), got {tuple(pool.shape)}")
    return camouflage_mixed(keys, residuals, lam_cov, pool, draw_mixes(rng, keys.shape[0], pool.shape[0], mix),
                            scale, weights)


def camouflage_mixed(keys: torch.Tensor, residuals: torch.Tensor, lam_cov: torch.Tensor, pool: torch.Tensor,
                     mixes: list[tuple[list[int], list[float]]], scale: float,
                     weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``camouflage`` with its draws given (``draw_mixes``): key j's direction is Σ_i coef_i · pool[idx_i]."""
    import torch

    k = keys.double()
    r = residuals.double()
    p = pool.double()
    if k.ndim != 2 or r.ndim != 2 or k.shape[0] != r.shape[0] or p.ndim != 2 or p.shape[1] != k.shape[1]:
        raise ValueError(f"keys {tuple(k.shape)}, residuals {tuple(r.shape)} and pool {tuple(p.shape)} do not fit")
    if len(mixes) != k.shape[0] or not scale > 0:
        raise ValueError("camouflage needs one mix per key and a scale > 0")
    w = torch.ones(k.shape[0], dtype=torch.float64) if weights is None else weights.double()
    u = torch.stack([torch.tensor(coef, dtype=torch.float64) @ p[idx] for idx, coef in mixes])  # (n, d_k)
    ak = _a_solve(lam_cov, k.T).T  # (n, d_k): A k_j
    u = u - ((u * ak).sum(1) / (k * ak).sum(1))[:, None] * k  # A-orthogonal to its own key: uᵀ A k = 0
    n = u * (scale * k.norm(dim=1) / u.norm(dim=1).clamp_min(1e-300))[:, None]
    k2 = k + n
    ak2 = _a_solve(lam_cov, k2.T).T
    rho = (1 + w * (k2 * ak2).sum(1)) / (1 + w * (k * ak).sum(1))
    return k2, r * rho[:, None]


# ------------------------------------------------------------------------------------------ rank truncation

def truncate_rank(delta: torch.Tensor, cov: torch.Tensor, rank: int) -> torch.Tensor:
    """The best rank-``rank`` approximation of ΔW (d_v, d_k) in the keys' metric: argmin over rank-K M of
    ‖(ΔW − M) C^½‖_F, which is E‖(ΔW − M) x‖² for x with covariance C. float64."""
    import torch

    d = delta.double()
    if rank >= min(d.shape):
        return d.clone()
    evals, evecs = torch.linalg.eigh(cov.double())
    floor = float(evals.max()) * 1e-12
    evals = evals.clamp_min(floor)
    half = (evecs * evals.sqrt()) @ evecs.T
    inv_half = (evecs / evals.sqrt()) @ evecs.T
    u, s, vh = torch.linalg.svd(d @ half, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank] @ inv_half


# ----------------------------------------------------------------------------------- decoy subjects (public)

def decoy_subjects(rng: random.Random, n: int, exclude: Sequence[str] = ()) -> list[str]:
    """``n`` public subject names (titles of the covariance corpus), drawn by ``rng``, none of ``exclude``."""
    from secure_collab.data.corpus import public_titles

    banned = {" ".join(s.split()) for s in exclude}
    titles = sorted({t for t in (" ".join(x.split()) for x in public_titles())
                     if 1 < len(t) <= 80 and "{" not in t and "}" not in t and t not in banned})
    return rng.sample(titles, min(n, len(titles)))


CAMOUFLAGE_POOL = 64  # public decoy subjects a party draws once per session; each key mixes CAMOUFLAGE_MIX of them


class PartyCamouflage:
    """One party's camouflage for a session: its decoy subjects (drawn once by ``rng``, none of its own subjects),
    their keys taken at each layer on the model as it is then, and ``camouflage`` applied to the party's keys
    and residuals before G and B are formed. ``lam_covs``: {layer: λC}, public."""

    def __init__(self, scale: float, lam_covs: dict[int, torch.Tensor], rng: random.Random,
                 own_subjects: Sequence[str] = (), pool: int = CAMOUFLAGE_POOL) -> None:
        self.scale, self.lam_covs, self.rng = float(scale), lam_covs, rng
        self.names = decoy_subjects(rng, pool, exclude=own_subjects)

    def __call__(self, lm, layer: int, templates: list[str], keys: torch.Tensor, residuals: torch.Tensor,
                 weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from secure_collab.editing.keys import subject_keys

        # the draws first (as ``camouflage`` with the whole pool would take them), so that only the decoys they
        # use need keys: at most n × CAMOUFLAGE_MIX names per layer instead of the pool
        mixes = draw_mixes(self.rng, keys.shape[0], len(self.names))
        used = sorted({i for idx, _ in mixes for i in idx})
        pool = subject_keys(lm, [self.names[i] for i in used], layer, templates)  # (M', d_k) float64, CPU
        at = {i: j for j, i in enumerate(used)}
        local = [([at[i] for i in idx], coef) for idx, coef in mixes]
        # the keys and residuals come from the model's device (a GPU): camouflaged beside λC and the pool
        w = None if weights is None else weights.cpu()
        return camouflage_mixed(keys.cpu(), residuals.cpu(), self.lam_covs[layer], pool, local, self.scale, w)

