"""Conflict: two parties want different objects for the same subject and relation.

For K records, party A asks for the record's target_new (o_A) and party B for another object of the same
relation (another record's target_new, o_B). Cases, each from the unedited model, collaborative sums:

- ``unresolved``: both requests in one round (policy none): where the model's answer lands (o_A, o_B or the
  true object, whichever has the lowest NLL on the edit prompt);
- ``plain`` / ``augmented``: the tag exchange under policy ``priority`` (A first) withdraws B's request; A's is
  applied alone, or with the paraphrased requests A generates (``augment`` per fact);
- ``cross_round`` per update rule: B's edit was applied in round 1 (before A asked), A wins in round 2 and
  overrides it, plain or augmented. The dynamic rules protect round 1's edit, which is what A must overcome.

The winner's efficacy is the fraction of facts whose edit prompt gives o_A a lower NLL than both o_B and the true
object; its generalization the same over the data set's paraphrase prompts (never used to augment).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.memit import restore, snapshot
from secure_collab.editing.rounds import CrossRound, run_rounds
from secure_collab.editing.target_cache import cached_targets
from secure_collab.evaluation import completion_nlls
from secure_collab.experiments.tagsim import TagSim, apply_weighted
from secure_collab.models.loading import LoadedModel


def conflict_pairs(requests: Sequence[Request], k: int) -> list[tuple[Request, Request]]:
    """(A's request, B's request) for the first ``k`` records that have another object of the same relation."""
    out = []
    for i, r in enumerate(requests):
        others = [q.target_new for j, q in enumerate(requests) if j != i and q.relation == r.relation
                  and q.target_new not in (r.target_new, r.target_true)]
        if r.target_true and others:
            out.append((r, replace(r, target_new=others[0], case_id=f"{r.case_id}.b")))
        if len(out) == k:
            return out
    raise ValueError(f"only {len(out)} records have a second object of their relation; {k} needed")


def landing(lm: LoadedModel, pairs: Sequence[tuple[Request, Request]]) -> dict[str, Any]:
    """Per fact, which of o_A, o_B and the true object the model prefers, on the edit prompt and paraphrases."""
    asks: list[tuple[str, str]] = []
    index: list[tuple[bool, int]] = []
    for a, b in pairs:
        for prompt in (a.text, *a.paraphrase_prompts):
            index.append((prompt == a.text, len(asks)))
            asks += [(prompt, a.target_new), (prompt, b.target_new), (prompt, a.target_true or "")]
    nll = completion_nlls(lm.model, lm.tokenizer, asks)
    edit: list[str] = []
    para: list[str] = []
    for is_edit, at in index:
        winner = ("a", "b", "true")[min(range(3), key=lambda j: nll[at + j])]
        (edit if is_edit else para).append(winner)
    frac = {w: sum(x == w for x in edit) / len(edit) for w in ("a", "b", "true")}
    return {"edit_prompt": frac, "paraphrases": {w: sum(x == w for x in para) / max(1, len(para))
                                                 for w in ("a", "b", "true")}}


def run_conflict(lm: LoadedModel, requests: Sequence[Request], hp: MemitHParams, covs: dict[int, torch.Tensor],
                 templates: list[str], *, facts: int = 8, augment: int = 2, rules: Sequence[str] = (),
                 cache: Any = None, say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    pairs = conflict_pairs(requests, facts)
    a_reqs, b_reqs = [p[0] for p in pairs], [p[1] for p in pairs]
    saved = snapshot(lm, hp.layers)

    def targets(lm_: LoadedModel, reqs: list[Request], hp_: MemitHParams, tpl: list[str]) -> Any:
        return cached_targets(lm_, reqs, hp_, tpl, cache=cache)

    def session(rounds: list[dict[str, list[Request]]], policy: str, aug: int, rule_hp: MemitHParams) -> dict:
        sim = TagSim(priority=["a", "b"], dedupe=True, policy=policy)
        state = CrossRound()  # the solver's cross-round ΣG, carried from round to round
        contributed = []
        try:
            for r, parties in enumerate(rounds):
                verdicts = sim.round(r, parties)
                got = [apply_weighted(lm, parties[p], verdicts[p], aug, seed=hp.template_seed) for p in parties]
                split = [g[0] for g in got]
                contributed.append({p: len(s) for p, s in zip(parties, split, strict=True)})
                run_rounds(lm, [split], rule_hp, covs, templates, targets=targets, state=state,
                           weights=[[g[1] for g in got]])
            return {**landing(lm, pairs), "contributed": contributed,
                    "decisions": [kind for _, _, kind in sim.records]}
        finally:
            restore(lm, saved)

    out: dict[str, Any] = {"before": landing(lm, pairs)}
    say("unresolved: both objects in one round")
    out["unresolved"] = session([{"a": a_reqs, "b": b_reqs}], "none", 0, hp)
    say("resolved by priority, A alone")
    out["plain"] = session([{"a": a_reqs, "b": b_reqs}], "priority", 0, hp)
    say(f"resolved by priority, A with {augment} augmented requests per fact")
    out["augmented"] = session([{"a": a_reqs, "b": b_reqs}], "priority", augment, hp)
    out["cross_round"] = {}
    for rule in rules:
        rule_hp = hp.with_(update_rule=rule)
        rounds = [{"a": [], "b": b_reqs}, {"a": a_reqs, "b": []}]
        say(f"{rule}: B's edit in round 1, A overrides it in round 2, plain then augmented")
        out["cross_round"][rule] = {"plain": session(rounds, "priority", 0, rule_hp),
                                    "augmented": session(rounds, "priority", augment, rule_hp)}
    return {
        "experiment": "conflict", "model": lm.name, "facts": len(pairs), "augment": augment,
        "update_rule": hp.update_rule, "variant": hp.variant, "hparams": hp.to_dict(),
        "records": [a.case_id for a in a_reqs], "objects": [[a.target_new, b.target_new] for a, b in pairs],
        "winner_efficacy_augmented": out["augmented"]["edit_prompt"]["a"],
        "winner_efficacy_plain": out["plain"]["edit_prompt"]["a"],
        "winner_generalization_augmented": out["augmented"]["paraphrases"]["a"],
        "winner_generalization_plain": out["plain"]["paraphrases"]["a"],
        "unresolved_landing": out["unresolved"]["edit_prompt"], **out,
    }
