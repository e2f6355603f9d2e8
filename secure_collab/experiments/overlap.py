"""Overlap: one edit held by k parties, with and without dedupe, against the same edit held once.

P parties bring E requests each; one more request D is copied to the first k of them (k = 2..P). Without dedupe
D enters the sums k times (it is over-weighted); with dedupe the tag exchange (``tagsim``: the session's OPRF
and decision rule) keeps every copy at weight 1/k (none is withdrawn, so no holder can remove another's, issue
18), the k copies add up to one, and ΔW must equal the one-copy ΔW to rounding
(``dedupe_delta_rel_diff``, max over k and layers of ‖ΔW_dedupe − ΔW_once‖_F / ‖ΔW_once‖_F). The known-fact check
is measured too: true facts (target_new := target_true) against the counterfactual edits, by the relative
residual ‖z* − h‖ / ‖h‖ that a party compares with ``known_residual``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.memit import rel_diff, restore, snapshot
from secure_collab.editing.rounds import run_rounds
from secure_collab.editing.target_cache import cached_targets
from secure_collab.evaluation import evaluate
from secure_collab.experiments.common import metrics
from secure_collab.experiments.tagsim import TagSim, apply_weighted
from secure_collab.models.loading import LoadedModel


def run_overlap(lm: LoadedModel, requests: Sequence[Request], hp: MemitHParams, covs: dict[int, torch.Tensor],
                templates: list[str], *, parties: int = 3, edits_per_party: int = 2, known: int = 4,
                known_residual: float = 0.02, cache: Any = None,
                say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    if parties < 2:
        raise ValueError("overlap needs at least 2 parties")
    need = 1 + parties * edits_per_party + known
    if len(requests) < need:
        raise ValueError(f"{need} requests needed, got {len(requests)}")
    dup = requests[0]
    own = [list(requests[1 + p * edits_per_party:1 + (p + 1) * edits_per_party]) for p in range(parties)]
    names = [f"p{p}" for p in range(parties)]
    saved = snapshot(lm, hp.layers)

    def targets(lm_: LoadedModel, reqs: list[Request], hp_: MemitHParams, tpl: list[str]) -> Any:
        return cached_targets(lm_, reqs, hp_, tpl, cache=cache)

    def edit(split: list[list[Request]], weights: list[list[float]] | None = None
             ) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
        try:
            res = run_rounds(lm, [split], hp, covs, templates, targets=targets,
                             weights=None if weights is None else [weights])[0]
            ev = evaluate(lm, [dup, *[r for p in own for r in p]]).details
            return res.deltas, {"duplicated_edit": metrics(ev[:1]), "others": metrics(ev[1:])}
        finally:
            restore(lm, saved)

    say("one copy of the duplicated edit (the reference)")
    once, once_eval = edit([own[0] + [dup], *own[1:]])
    rows: list[dict[str, Any]] = []
    for k in range(2, parties + 1):
        split = [own[p] + ([dup] if p < k else []) for p in range(parties)]
        say(f"{k} copies: without dedupe")
        plain, plain_eval = edit(split)
        sim = TagSim(priority=names, dedupe=True)
        verdicts = sim.round(0, dict(zip(names, split, strict=True)))
        applied = [apply_weighted(lm, split[p], verdicts[names[p]], 0) for p in range(parties)]
        kept, weights = [a[0] for a in applied], [a[1] for a in applied]
        shares = sorted({v.holders for vs in verdicts.values() for v in vs if v.holders > 1})
        say(f"{k} copies: with dedupe (every copy kept at weight 1/{k})")
        deduped, deduped_eval = edit(kept, weights)
        rows.append({"copies": k, "withdrawn": sum(len(s) for s in split) - sum(len(s) for s in kept),
                     "holders": shares,
                     "decisions": [kind for _, _, kind in sim.records],
                     "dedupe_delta_rel_diff": rel_diff(deduped, once),
                     "no_dedupe_delta_rel_diff": rel_diff(plain, once),
                     "with_dedupe": deduped_eval, "without_dedupe": plain_eval})
    say("the known-fact check: relative residuals of true facts and of the counterfactual edits")
    true_facts = [replace(r, target_new=r.target_true) for r in requests[need - known:need] if r.target_true]
    rel = {"true_facts": _relative_residuals(lm, true_facts, hp, templates, cache),
           "counterfactual": _relative_residuals(lm, [r for p in own for r in p], hp, templates, cache)}
    return {
        "experiment": "overlap", "model": lm.name, "parties": parties, "edits_per_party": edits_per_party,
        "update_rule": hp.update_rule, "variant": hp.variant, "hparams": hp.to_dict(),
        "duplicated_record": dup.case_id, "records": [r.case_id for r in requests[:need]],
        "dedupe_delta_rel_diff": max(r["dedupe_delta_rel_diff"] for r in rows),
        "no_dedupe_delta_rel_diff": max(r["no_dedupe_delta_rel_diff"] for r in rows),
        "once": once_eval, "rows": rows,
        "known": {"known_residual": known_residual, "relative_residual": rel,
                  "withheld": {k: sum(x <= known_residual for x in v) for k, v in rel.items()},
                  "of": {k: len(v) for k, v in rel.items()}},
    }


def _relative_residuals(lm: LoadedModel, reqs: list[Request], hp: MemitHParams, templates: list[str],
                        cache: Any) -> list[float]:
    if not reqs:
        return []
    t = cached_targets(lm, reqs, hp, templates, cache=cache)
    return ((t.z - t.z_init).norm(dim=1) / t.z_init.norm(dim=1)).tolist()
