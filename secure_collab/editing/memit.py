"""MEMIT over parties: per-party statistics, their combination (collaborative or merged), sequential/oneshot.

This is the single-machine simulation of a session and the Global-Edit reference: ``method="global"`` is one
party holding every request. The networked session calls the same ``party_layer_stats`` and ``solve_update``.

Methods (``METHODS``):
- ``global``: one machine, every request; ``collab``: the parties' statistics summed (equal to global).
- ``ta``, ``sa``, ``ties``: the merge baselines as CollabEdit defines them. Each party runs MEMIT alone on its
  own copy of the model (layer by layer in the sequential variant, on its own requests), and the per-party
  ΔW_p of each layer are merged by Task Arithmetic, Simple Average or TIES (``merges.py``).
- ``ta-lockstep``, ``sa-lockstep``, ``ties-lockstep``: the parties move through the layers together; at each
  layer every party solves alone on the model that already carries the merged earlier layers, and the merge
  is applied before the next layer. In the oneshot variant every statistic comes from the unedited model, so
  a lockstep merge and the independent one are the same computation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.keys import block_outputs, compute_keys
from secure_collab.editing.merges import MERGES
from secure_collab.editing.solve import solve_update
from secure_collab.editing.statistics import LayerStats, layer_statistics, sum_stats
from secure_collab.editing.targets import TargetResult, compute_targets
from secure_collab.models.loading import LoadedModel
from secure_collab.models.specs import add_to_down_weight, down_weight

INDEPENDENT = ("ta", "sa", "ties")
LOCKSTEP = ("ta-lockstep", "sa-lockstep", "ties-lockstep")
METHODS = ("global", "collab", *INDEPENDENT, *LOCKSTEP)


def current_outputs(lm: LoadedModel, requests: list[Request], hp: MemitHParams) -> torch.Tensor:
    """h_j at the last edited layer on the model as it is now (n, d_v): what the residuals are measured from."""
    return block_outputs(lm, requests, hp.layers[-1], hp.request_batch)


def party_layer_stats(lm: LoadedModel, requests: list[Request], z: torch.Tensor, layer: int, hp: MemitHParams,
                      templates: list[str], cur: torch.Tensor | None = None,
                      weights: torch.Tensor | None = None, camouflage: Callable | None = None,
                      noise: Any = None, round_: int = 0, decoys: Any = None,
                      reduce: Callable[[LayerStats], LayerStats] | None = None) -> LayerStats:
    """One party's (G, B) for ``layer`` on the model as it is now: keys here, residuals toward z*.

    ``cur`` (from ``current_outputs``) may be passed when the model has not changed since it was taken, as in
    the oneshot variant, where every layer's residuals come from the same unedited model. ``weights`` (n,): each
    request's weight (1/m for a duplicate held by m parties), default 1. ``camouflage``: the party's
    ``defences.PartyCamouflage`` (keys and residuals are camouflaged before G and B are formed), or None.
    ``noise``: the party's ``noise.PartyNoise``: keys and residuals (camouflaged, if so) are clipped to the declared
    bounds, and G and B get the party's discrete Gaussian for (``round_``, ``layer``); or None. ``decoys``: the
    party's ``decoys.DecoyEdits`` of the round (weight 1 each), added as requests before camouflage and noise, or None.
    ``reduce``: applied to (G, B) before the noise (a party over several workers: ``requests`` are this worker's
    share and ``reduce`` adds the workers' sums, ``parallel.Shard.sum``), or None.
    """
    i = hp.layers.index(layer)
    if not requests and (decoys is None or not len(decoys)):  # nothing to edit: zeros (and the noise, if on)
        d_v, d_k = down_weight(lm.model, lm.spec, layer).shape
        zeros = LayerStats(torch.zeros(d_k, d_k, dtype=torch.float64), torch.zeros(d_v, d_k, dtype=torch.float64))
        return zeros if noise is None else noise(zeros, round_, layer)
    if decoys is not None and len(decoys):
        n = len(requests)
        if cur is not None:  # the decoys' h on the same model as the real ones' (oneshot: the round's start)
            cur = torch.cat([cur, current_outputs(lm, decoys.requests, hp).to(cur.dtype)])
        z = torch.cat([z, decoys.z.to(z.dtype).to(z.device)])
        weights = torch.cat([torch.ones(n, dtype=torch.float64) if weights is None else weights.double().cpu(),
                             torch.ones(len(decoys), dtype=torch.float64)])
        requests = [*requests, *decoys.requests]
    keys = compute_keys(lm, requests, layer, templates, hp.request_batch)  # (n, d_k)
    if cur is None:
        cur = current_outputs(lm, requests, hp)  # (n, d_v) at the last edited layer
    resid = (z.to(cur.dtype) - cur) / (len(hp.layers) - i)  # spread over the remaining layers
    resid = resid.to(keys.device)  # a model spread over devices (device_map) has them on different ones
    if camouflage is not None:
        keys, resid = camouflage(lm, layer, templates, keys, resid, weights)
    if noise is not None:
        keys, resid = noise.clip(keys, resid)
    stats = layer_statistics(keys, resid, weights)
    if reduce is not None:
        stats = reduce(stats)
    return stats if noise is None else noise(stats, round_, layer)


def combine(method: str, stats: list[LayerStats], cov: torch.Tensor, lam: float, rank: int = 0,
            noised: bool = False, past_g: torch.Tensor | None = None) -> torch.Tensor:
    """ΔW (d_v, d_k) float64 of one layer from the parties' statistics: summed (global, collab) or each party
    solved alone and merged (``ta``/``sa``/``ties``, with or without ``-lockstep``: per layer they are the same).
    ``rank`` > 0 (global, collab): the solver's rank truncation (``defences.truncate_rank``). ``noised``: the sum
    carries the parties' noise, and ΣG is replaced by its positive semi-definite part before the solve, as the
    solver does (``noise.psd_part``). ``past_g``: the earlier rounds' ΣG, given in the decoys' repair round only,
    whose solve is ``decoys.repair_update``."""
    if method in ("global", "collab"):
        total = sum_stats(stats)
        g = total.g
        if noised:
            from secure_collab.editing.noise import psd_part

            g = psd_part(g)
        if past_g is None:
            delta = solve_update(total.b, g, cov, lam)
        else:  # the decoys' repair round
            from secure_collab.editing.decoys import repair_update

            delta = repair_update(total.b, g, cov, lam, psd_part(past_g) if noised else past_g)
        if rank:
            from secure_collab.editing.defences import truncate_rank

            delta = truncate_rank(delta, cov, rank)
        return delta
    if rank:
        raise ValueError(f"rank truncation is the solver's: it applies to global and collab, not {method}")
    merge = MERGES.get(method.removesuffix("-lockstep"))
    if merge is None:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    return merge([solve_update(s.b, s.g, cov, lam) for s in stats])


@dataclass
class EditOutcome:
    deltas: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> applied ΔW (d_v, d_k) float64
    targets: list[TargetResult] = field(default_factory=list)  # per party
    party_deltas: list[dict[int, torch.Tensor]] = field(default_factory=list)  # independent merges: each ΔW_p
    decoys: list[Any] = field(default_factory=list)  # decoys:R: each party's decoys.DecoyEdits (never released)
    repaired: list[int] = field(default_factory=list)  # decoys:R: per party, decoys its repair round pushed back
    repair_deltas: dict[int, torch.Tensor] = field(default_factory=dict)  # decoys:R: the repair round's ΔW (in deltas)


def snapshot(lm: LoadedModel, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
    return {layer: down_weight(lm.model, lm.spec, layer).detach().clone() for layer in layers}


def restore(lm: LoadedModel, saved: dict[int, torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, w in saved.items():
            down_weight(lm.model, lm.spec, layer).copy_(w)


def run_edit(lm: LoadedModel, parties: list[list[Request]], hp: MemitHParams, covs: dict[int, torch.Tensor],
             method: str, templates: list[str], progress: Callable[[str], None] | None = None,
             targets: list[TargetResult] | None = None, defence: Any = None,
             rngs: list[random.Random] | None = None, noise_plan: Any = None) -> EditOutcome:
    """Edit ``lm`` in place with every party's requests by ``method``; returns the applied ΔW per layer.

    ``defence`` (a ``defences.Defence``, collab and global only): each party camouflages its statistics with
    its own ``rngs[k]`` (default: ``random.SystemRandom()``), adds its decoy edits (``decoys.make_decoys``, drawn
    from the same generator after the camouflage's subjects, on the unedited model), and the solve truncates ΔW's
    rank, as the networked session does. With noise, ``noise_plan`` (``noise.NoisePlan``: the session's bounds,
    min_parties and grid; ``noise.session_noise_plan`` of a session file) is required: each party clips and adds
    its noise, drawn from words keyed by its ``rngs[k]`` without drawing from it (``noise.noise_source``:
    camouflage's draws stay the same), or from a fresh secret key; the solve uses ΣG's positive semi-definite part.

    ``targets`` (one per non-empty party, in order; for ``global`` one for all requests) skips the target
    optimisation: for sweeps and grids, whose targets are the same. They must come from the unedited model and
    the same last edited layer (``target_cache.cached_targets`` gives them).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    if defence is not None and not defence.none and method not in ("global", "collab"):
        raise ValueError(f"defences apply to a session's collab (or global) edit, not to {method}")
    if defence is not None and defence.noise and noise_plan is None:
        raise ValueError("noise:Z needs the session's noise plan (noise.session_noise_plan, or noise.plan_noise)")
    if method == "global":
        parties = [[r for p in parties for r in p]]
    parties = [p for p in parties if p]
    say = progress or (lambda _msg: None)
    out = EditOutcome()
    if targets is not None:
        if [len(t.z) for t in targets] != [len(p) for p in parties]:
            raise ValueError("precomputed targets do not match the parties' requests")
        out.targets = list(targets)
    for k, reqs in enumerate(parties if targets is None else []):
        say(f"targets: party {k + 1}/{len(parties)} ({len(reqs)} requests)")
        out.targets.append(compute_targets(lm, reqs, hp, templates))
    zs = [t.z for t in out.targets]
    if method in INDEPENDENT:
        saved = snapshot(lm, hp.layers)
        for k, (reqs, z) in enumerate(zip(parties, zs, strict=True)):
            say(f"party {k + 1}/{len(parties)}: MEMIT alone on its own copy")
            out.party_deltas.append(edit_layers(lm, [reqs], [z], hp, covs, templates, "collab", say))
            restore(lm, saved)
        for layer in hp.layers:
            out.deltas[layer] = MERGES[method]([d[layer] for d in out.party_deltas])
            add_to_down_weight(lm.model, lm.spec, layer, out.deltas[layer])
    else:
        cams, noises = None, None
        gens = rngs or [random.SystemRandom() for _ in parties]
        if defence is not None and defence.noise:  # keyed from each generator's state before camouflage draws
            from secure_collab.editing.noise import PartyNoise, noise_source

            noises = [PartyNoise(noise_plan, noise_source(gens[k])) for k in range(len(parties))]
        if defence is not None and defence.camouflage:
            from secure_collab.editing.defences import PartyCamouflage

            lam_covs = {layer: hp.mom2_update_weight * covs[layer] for layer in hp.layers}
            cams = [PartyCamouflage(defence.camouflage, lam_covs, gens[k], [r.subject for r in reqs])
                    for k, reqs in enumerate(parties)]
        if defence is not None and defence.decoys:
            from secure_collab.editing.decoys import make_decoys

            say(f"decoys: {defence.decoys} per edit at each party")
            out.decoys = [make_decoys(lm, hp, defence.decoys, gens[k], reqs, z, confidence=defence.decoy_floor)
                          for k, (reqs, z) in enumerate(zip(parties, zs, strict=True))]
        rank = defence.rank if defence is not None else 0
        g_sums: dict[int, torch.Tensor] = {}
        out.deltas = edit_layers(lm, parties, zs, hp, covs, templates, method, say, cams, rank, noises,
                                 out.decoys or None, g_sums=g_sums)
        if out.decoys:  # decoys:R's closing round (the session's ``repair_round``): every party takes part
            from secure_collab.editing.decoys import repairs

            fixes = [repairs(lm, hp, d) for d in out.decoys]
            out.repaired = [len(f) for f in fixes]
            say(f"decoys: the repair round pushes back {sum(out.repaired)} decoy answers the release weakened")
            d_v = int(down_weight(lm.model, lm.spec, hp.layers[-1]).shape[0])
            extra = edit_layers(lm, [[] for _ in parties], [torch.zeros(0, d_v, dtype=torch.float64)] * len(parties),
                                hp, covs, templates, method, say, cams, rank, noises, fixes, past_g=g_sums, round_=1)
            out.repair_deltas = extra
            out.deltas = {layer: out.deltas[layer] + extra[layer] for layer in out.deltas}
    return out


def edit_layers(lm: LoadedModel, parties: list[list[Request]], zs: list[torch.Tensor], hp: MemitHParams,
                covs: dict[int, torch.Tensor], templates: list[str], method: str,
                say: Callable[[str], None], camouflages: list | None = None, rank: int = 0,
                noises: list | None = None, decoys: list | None = None, past_g: dict[int, torch.Tensor] | None = None,
                g_sums: dict[int, torch.Tensor] | None = None, round_: int = 0) -> dict[int, torch.Tensor]:
    """The layer loop: per layer each party's statistics, ``combine`` by ``method``, apply. Returns ΔW per layer.
    ``past_g``: per layer Σ of the earlier rounds' ΣG (the solver's cross-round state; collab and global);
    ``g_sums``: filled with this round's ΣG per layer, if given.
    ``camouflages``: each party's ``defences.PartyCamouflage`` or None; ``rank``: the solver's truncation;
    ``noises``: each party's ``noise.PartyNoise`` or None (for round ``round_``); ``decoys``: each party's
    ``decoys.DecoyEdits`` or None."""
    cams = camouflages or [None] * len(parties)
    nzs = noises or [None] * len(parties)
    dcs = decoys or [None] * len(parties)
    noised = noises is not None
    deltas: dict[int, torch.Tensor] = {}
    if hp.variant == "sequential":
        for layer in hp.layers:
            say(f"layer {layer}: statistics and solve")
            stats = [party_layer_stats(lm, reqs, z, layer, hp, templates, camouflage=cam, noise=nz, round_=round_,
                                       decoys=dc)
                     for reqs, z, cam, nz, dc in zip(parties, zs, cams, nzs, dcs, strict=True)]
            if g_sums is not None:
                g_sums[layer] = sum_stats(stats).g
            deltas[layer] = combine(method, stats, covs[layer], hp.mom2_update_weight, rank, noised,
                                    (past_g or {}).get(layer))
            add_to_down_weight(lm.model, lm.spec, layer, deltas[layer])
    else:  # oneshot: every layer's statistics from the unedited model, one aggregation
        say("all layers: statistics on the unedited model")
        curs = [current_outputs(lm, reqs, hp) if reqs else None for reqs in parties]  # once: the model does
        # not change here (a party with no requests of its own: its decoys' h are taken per layer, the same)
        per_layer = {layer: [party_layer_stats(lm, reqs, z, layer, hp, templates, cur, camouflage=cam, noise=nz,
                                               round_=round_, decoys=dc)
                             for reqs, z, cur, cam, nz, dc in zip(parties, zs, curs, cams, nzs, dcs, strict=True)]
                     for layer in hp.layers}
        for layer in hp.layers:
            if g_sums is not None:
                g_sums[layer] = sum_stats(per_layer[layer]).g
            deltas[layer] = combine(method, per_layer[layer], covs[layer], hp.mom2_update_weight, rank, noised,
                                    (past_g or {}).get(layer))
        for layer, delta in deltas.items():
            add_to_down_weight(lm.model, lm.spec, layer, delta)
    return deltas


def own_edit_logprobs(lm: LoadedModel, hp: MemitHParams, covs: dict[int, torch.Tensor], templates: list[str],
                      own: Sequence[Request], z_own: torch.Tensor, decoys: Any) -> torch.Tensor:
    """(n_d, vocab) float64 next-token log-probabilities on each decoy's prompt after the party's own edit alone
    (``own`` toward ``z_own`` and ``decoys``, solved with the public C and λ as the solver would solve them if no
    other party sent anything), on the model as it is now; the model is restored before it returns. What a party
    could check before it sends anything (``benchmarks/decoy_answers.py``: it does not predict which decoys the
    joint release changes). ``decoys``: the party's ``decoys.DecoyEdits``."""
    from secure_collab.editing.decoys import _next_token_logprobs

    saved = snapshot(lm, hp.layers)
    try:
        edit_layers(lm, [list(own)], [z_own], hp, covs, templates, "collab", lambda _m: None, decoys=[decoys])
        return torch.cat(list(_next_token_logprobs(lm, decoys.requests)))
    finally:
        restore(lm, saved)


def rel_diff_per_layer(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor]) -> dict[int, float]:
    """‖a − b‖_F / ‖b‖_F for each layer of b."""
    return {k: float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-300)) for k in b}


def rel_diff(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor]) -> float:
    """Largest over layers of ‖a − b‖_F / ‖b‖_F."""
    return max(rel_diff_per_layer(a, b).values())


T = TypeVar("T")


def split_parties(requests: list[T], n: int) -> list[list[T]]:
    """Contiguous, near-equal shares of the requests (party k gets the k-th block)."""
    if n < 1:
        raise ValueError("at least one party")
    q, r = divmod(len(requests), n)
    out, s = [], 0
    for k in range(n):
        e = s + q + (1 if k < r else 0)
        out.append(requests[s:e])
        s = e
    return out
