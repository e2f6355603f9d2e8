"""Several rounds of collaborative editing on one machine: the simulation of a multi-round session.

Each round, every party's targets z* are optimised on the model as it is at the round's start; then, layer by
layer (sequential) or all layers from the round's starting model (oneshot), the parties' statistics are
combined and solved by the update rule (``hp.rule``), which may read Σ of the earlier rounds' ΣG per layer:
exactly the state the networked solver keeps across rounds. ``method="global"`` is one party holding each
round's requests (the reference); ``collab`` sums the parties' statistics; ``ta``/``sa``/``ties`` solve each
party alone with the same rule and state and merge per layer (not private; baselines only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.memit import current_outputs, party_layer_stats
from secure_collab.editing.merges import MERGES
from secure_collab.editing.statistics import LayerStats, sum_stats
from secure_collab.editing.targets import TargetResult, compute_targets
from secure_collab.models.loading import LoadedModel
from secure_collab.models.specs import add_to_down_weight

ROUND_METHODS = ("global", "collab", "ta", "sa", "ties")
TargetsFn = Callable[[LoadedModel, list[Request], MemitHParams, list[str]], TargetResult]


@dataclass
class CrossRound:
    """What the update rule carries from round to round: per layer, Σ of the earlier rounds' ΣG (d_k, d_k)."""

    past_g: dict[int, torch.Tensor] = field(default_factory=dict)

    def add(self, g_sums: dict[int, torch.Tensor]) -> None:
        for layer, g in g_sums.items():
            self.past_g[layer] = self.past_g[layer] + g if layer in self.past_g else g.clone()


@dataclass
class RoundResult:
    deltas: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> applied ΔW (d_v, d_k) float64
    g_sums: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> this round's ΣG (d_k, d_k)
    targets: list[TargetResult] = field(default_factory=list)  # per non-empty party


def _solve(method: str, stats: list[LayerStats], hp: MemitHParams, cov: torch.Tensor, past: torch.Tensor | None,
           basis: torch.Tensor | None) -> torch.Tensor:
    rule = hp.rule
    if method in ("global", "collab"):
        total = sum_stats(stats)
        return rule.solve(total.b, total.g, cov, past_g=past, basis=basis)
    return MERGES[method]([rule.solve(s.b, s.g, cov, past_g=past, basis=basis) for s in stats])


def edit_round(lm: LoadedModel, parties: list[list[Request]], zs: list[torch.Tensor], hp: MemitHParams,
               covs: dict[int, torch.Tensor], templates: list[str], state: CrossRound, *, method: str = "collab",
               bases: dict[int, torch.Tensor | None] | None = None,
               weights: Sequence[torch.Tensor | None] | None = None,
               say: Callable[[str], None] = lambda _m: None) -> RoundResult:
    """One round on ``lm`` in place (targets given); returns ΔW and ΣG per layer. Does not update ``state``.
    ``weights[p]`` (n_p,): party p's request weights (1/m for a duplicate held by m parties), default 1."""
    bases = bases if bases is not None else {lay: hp.rule.basis(covs[lay]) for lay in hp.layers}
    out = RoundResult()
    ws = list(weights) if weights is not None else [None] * len(parties)
    curs: list[torch.Tensor | None] = [None] * len(parties)
    if hp.variant == "oneshot":  # every layer from the round's starting model
        curs = [current_outputs(lm, reqs, hp) for reqs in parties]
        stats = {lay: [party_layer_stats(lm, reqs, z, lay, hp, templates, cur, w)
                       for reqs, z, cur, w in zip(parties, zs, curs, ws, strict=True)] for lay in hp.layers}
    for layer in hp.layers:
        if hp.variant == "sequential":
            say(f"layer {layer}: statistics and solve ({hp.update_rule})")
            layer_stats = [party_layer_stats(lm, reqs, z, layer, hp, templates, weights=w)
                           for reqs, z, w in zip(parties, zs, ws, strict=True)]
        else:
            layer_stats = stats[layer]
        out.g_sums[layer] = sum_stats(layer_stats).g
        out.deltas[layer] = _solve(method, layer_stats, hp, covs[layer], state.past_g.get(layer), bases[layer])
        if hp.variant == "sequential":
            add_to_down_weight(lm.model, lm.spec, layer, out.deltas[layer])
    if hp.variant == "oneshot":
        for layer, delta in out.deltas.items():
            add_to_down_weight(lm.model, lm.spec, layer, delta)
    return out


def run_rounds(lm: LoadedModel, rounds: Sequence[list[list[Request]]], hp: MemitHParams,
               covs: dict[int, torch.Tensor], templates: list[str], *, method: str = "collab",
               targets: TargetsFn | None = None, state: CrossRound | None = None,
               on_round: Callable[[int, RoundResult], None] | None = None,
               weights: Sequence[list[list[float]]] | None = None,
               say: Callable[[str], None] = lambda _m: None) -> list[RoundResult]:
    """Edit ``lm`` in place over the rounds (``rounds[r][p]``: party p's requests in round r; ``weights[r][p]``:
    their weights, 1/m for a duplicate held by m parties, default 1).

    ``targets(lm, requests, hp, templates)`` gives z* on the model as it is (default ``compute_targets``; pass
    ``target_cache.cached_targets`` to cache). ``on_round(r, result)`` runs after each round (evaluation).
    A round in which nobody edits changes nothing and adds nothing to the state."""
    if method not in ROUND_METHODS:
        raise ValueError(f"unknown method {method!r}; one of {ROUND_METHODS}")
    targets_fn: TargetsFn = targets or compute_targets
    state = state if state is not None else CrossRound()
    bases = {lay: hp.rule.basis(covs[lay]) for lay in hp.layers}
    results = []
    for r, parties in enumerate(rounds):
        wts = list(weights[r]) if weights is not None else [[1.0] * len(p) for p in parties]
        if method == "global":
            parties, wts = [[req for p in parties for req in p]], [[w for ws in wts for w in ws]]
        wts = [w for p, w in zip(parties, wts, strict=True) if p]
        parties = [p for p in parties if p]
        if not parties:
            results.append(RoundResult())
        else:
            say(f"round {r}: targets for {sum(map(len, parties))} requests on the model as it is")
            tr = [targets_fn(lm, p, hp, templates) for p in parties]
            tw = None if weights is None else [torch.tensor(w, dtype=torch.float64) for w in wts]
            res = edit_round(lm, parties, [t.z for t in tr], hp, covs, templates, state, method=method,
                             bases=bases, weights=tw, say=say)
            res.targets = tr
            state.add(res.g_sums)
            results.append(res)
        if on_round is not None:
            on_round(r, results[-1])
    return results
