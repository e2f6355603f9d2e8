"""Threat views: what each role or outsider holds, produced by the project's own code from real requests.

| view        | who holds it                         | what it is (per edited layer)                           |
|-------------|--------------------------------------|---------------------------------------------------------|
| `keys`      | anyone, under naive sharing          | one party's K (n, d_k)                                  |
| `gram`      | anyone, under CollabEdit's clear text | one party's K Kᵀ                                        |
| `stats`     | anyone, without protection           | one party's K Kᵀ and R Kᵀ                               |
| `aggregate` | the solver                           | Σ_p K_p K_pᵀ and Σ_p R_p K_pᵀ                           |
| `delta`     | every party                          | the released ΔW with the public λC                      |
| `wire`      | the coordinator                      | the protected bytes (see ``attacks.wire``)               |
| `model`     | any user of the edited model         | black-box next-token distributions, edited vs unedited  |

Every view is computed with the engine (``compute_keys``, ``compute_targets``, ``party_layer_stats``,
``run_edit``, ``layer_covariances``): the attacks see exactly what the protocol would hand out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams, auto_request_batch, default_hparams
from secure_collab.editing.keys import compute_keys
from secure_collab.editing.memit import party_layer_stats, run_edit, snapshot, split_parties
from secure_collab.editing.statistics import LayerStats, layer_statistics, sum_stats
from secure_collab.editing.target_cache import cached_targets
from secure_collab.editing.targets import TargetResult
from secure_collab.editing.templates import context_templates
from secure_collab.models.loading import LoadedModel
from secure_collab.models.specs import n_layers

VIEWS = ("keys", "gram", "stats", "aggregate", "delta", "wire", "model")


@dataclass
class PublicSetup:
    """What every attacker has: the public model, the session's hyper-parameters, templates and covariance."""

    lm: LoadedModel
    hp: MemitHParams
    templates: list[str]
    cache: Path | None = None
    _covs: dict[int, torch.Tensor] = field(default_factory=dict)

    def covs(self) -> dict[int, torch.Tensor]:
        if not self._covs:
            from secure_collab.covariance import layer_covariances

            self._covs.update(layer_covariances(self.lm, self.hp.layers, tokens=self.hp.mom2_tokens,
                                                max_seq_len=self.hp.mom2_max_len, cache=self.cache, progress=False))
        return self._covs


def public_setup(model: str, cache: Path | None = None, device: str | None = "cpu", dtype: str = "auto",
                 variant: str = "sequential") -> PublicSetup:
    from secure_collab.models import load_model

    lm = load_model(model, device=device, cache=cache, dtype=dtype)
    hp = default_hparams(model, n_layers(lm.model, lm.spec)).with_(
        request_batch=auto_request_batch(lm.device.type), variant=variant)
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, cache)
    return PublicSetup(lm, hp, templates, cache)


# --------------------------------------------------------------------------------------------------- views

def keys_view(setup: PublicSetup, requests: list[Request], layer: int) -> torch.Tensor:
    """One party's K at ``layer``: (n, d_k) float64, one row per edit."""
    return compute_keys(setup.lm, requests, layer, setup.templates, setup.hp.request_batch).double()


def gram_view(setup: PublicSetup, requests: list[Request], layer: int) -> torch.Tensor:
    """One party's K Kᵀ (d_k, d_k), exactly as the engine forms it."""
    k = keys_view(setup, requests, layer)
    return layer_statistics(k, torch.zeros(k.shape[0], 1, dtype=k.dtype)).g


def aggregate_gram_view(setup: PublicSetup, parties: list[list[Request]], layer: int) -> torch.Tensor:
    """The solver's Σ_p K_p K_pᵀ (d_k, d_k), added in party order (the ΣKKᵀ part of ``aggregate_view``)."""
    if not parties:
        raise ValueError("no parties to aggregate")  # sum() would hand back the int 0, not a (d_k, d_k) matrix
    grams = [gram_view(setup, reqs, layer) for reqs in parties]
    total = grams[0]
    for g in grams[1:]:
        total = total + g
    return total


def stats_view(setup: PublicSetup, requests: list[Request], z: torch.Tensor, layer: int) -> LayerStats:
    """One party's (K Kᵀ, R Kᵀ) at ``layer`` on the unedited model (the first layer of a sequential round)."""
    return party_layer_stats(setup.lm, requests, z, layer, setup.hp, setup.templates)


def aggregate_view(setup: PublicSetup, parties: list[list[Request]], zs: list[torch.Tensor], layer: int) -> LayerStats:
    """The solver's view: the sums over parties."""
    return sum_stats([stats_view(setup, reqs, z, layer) for reqs, z in zip(parties, zs, strict=True)])


@dataclass
class DeltaView:
    deltas: dict[int, torch.Tensor]  # layer -> released ΔW (d_v, d_k) float64
    lam_cov: dict[int, torch.Tensor]  # layer -> the public λC
    parties: list[list[Request]]
    edited: dict[int, torch.Tensor]  # layer -> edited down-projection weights (for the `model` view)
    decoys: list = field(default_factory=list)  # decoys:R: each party's decoys.DecoyEdits (the parties' secret)
    repaired: list[int] = field(default_factory=list)  # decoys:R: per party, the decoys its repair round pushed back
    repair_deltas: dict[int, torch.Tensor] = field(default_factory=dict)  # decoys:R: the repair round's ΔW (in deltas)


def delta_view(setup: PublicSetup, parties: list[list[Request]], targets: list[TargetResult], defence: Any = None,
               rngs: list | None = None, noise_plan: Any = None) -> DeltaView:
    """ΔW of a collaborative session, by the single-machine simulation ``run_edit(method="collab")``.

    The networked session releases the same ΔW (tests/test_demo.py checks it against Global-Edit); the
    simulation lets the attack run without the network. The model is restored afterwards; the edited weights
    are returned for the `model` view. ``defence`` (``editing.defences.Defence``), ``rngs`` (one generator per
    party for its decoy draws and noise key) and ``noise_plan`` (``editing.noise.NoisePlan``, with noise) are passed
    to ``run_edit``.
    """
    lm, hp = setup.lm, setup.hp
    saved = snapshot(lm, hp.layers)
    try:
        out = run_edit(lm, parties, hp, setup.covs(), "collab", setup.templates, targets=targets, defence=defence,
                       rngs=rngs, noise_plan=noise_plan)
        edited = snapshot(lm, hp.layers)
    finally:
        from secure_collab.editing.memit import restore

        restore(lm, saved)
    lam = hp.mom2_update_weight
    return DeltaView(out.deltas, {la: lam * setup.covs()[la] for la in hp.layers}, parties, edited, out.decoys,
                     out.repaired, out.repair_deltas)


def split(requests: list[Request], n_parties: int) -> list[list[Request]]:
    return split_parties(requests, n_parties)


def targets_for(setup: PublicSetup, requests: list[Request], say=print) -> TargetResult:
    """z* for the requests on the unedited model (the expensive part: ~20 s per SmolLM2 edit on a core), through
    the engine's one target cache (``secure_collab.editing.target_cache``), one request per batch so a request's
    z* never depends on the others."""
    say(f"targets: {len(requests)} requests (cached ones are read back)")
    return cached_targets(setup.lm, requests, setup.hp.with_(request_batch=1), setup.templates, cache=setup.cache)
