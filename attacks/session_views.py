"""Attacks on the views of a whole session: the solver's aggregate, the released ΔW, and the edited model.

A session here is ``parties`` parties with ``per_party`` edits each, drawn from the report set; its ΔW comes
from ``run_edit(method="collab")``, the single-machine simulation of the networked session (the networked
session releases the same ΔW: tests/test_demo.py compares it with Global-Edit).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from attacks import spectral
from attacks.runner import Experiment, draw_trials, subspace_row, target_rows
from attacks.target import next_token_logprobs, residual_from_stats
from attacks.views import aggregate_gram_view, delta_view, keys_view, split, targets_for
from secure_collab.data.requests import Request
from secure_collab.editing.defences import decoy_subjects
from secure_collab.editing.memit import restore, snapshot
from secure_collab.editing.statistics import sum_stats

MODEL_PROMPTS = ("{}", "{} is")


def session_requests(exp: Experiment, parties: int, per_party: int, trial: int = 0) -> list[list[Request]]:
    idx = draw_trials(exp.requests, parties * per_party, trial + 1, exp.seed + 7)[trial]
    return split([exp.requests[i] for i in idx], parties)


def aggregate_rows(exp: Experiment, parties: list[list[Request]], objects: Sequence[str], with_targets: bool
                   ) -> list[dict]:
    """The solver's ΣKKᵀ (subject ranking) and ΣRKᵀ (object recovery by patching)."""
    flat = [r for p in parties for r in p]
    g = aggregate_gram_view(exp.setup, parties, exp.layer)
    rows = [subspace_row(exp, "aggregate", spectral.basis_from_gram(g, len(flat)), flat, parties=len(parties))]
    if with_targets:
        from attacks.views import stats_view

        zs = [targets_for(exp.setup, p, exp.say).z for p in parties]
        total = sum_stats([stats_view(exp.setup, p, z, exp.layer) for p, z in zip(parties, zs, strict=True)])
        k = keys_view(exp.setup, flat, exp.layer)  # keys of the (recovered) subjects, public model
        n_layers = len(exp.setup.hp.layers)
        res = list(n_layers * residual_from_stats(total.b, total.g, k))
        rows.append(target_rows(exp, "aggregate", res, flat, [r.subject for r in flat], objects, len(flat),
                                parties=len(parties)))
    return rows


def delta_rows(exp: Experiment, parties: list[list[Request]], objects: Sequence[str], defence=None
               ) -> tuple[list[dict], dict]:
    """Every party's view of the release (and a party that removes its own keys), plus the `model` floor.
    ``defence``: the session's ``editing.defences.Defence`` (each party's decoys drawn by a generator seeded by
    the experiment's seed and the party's index, so that a run reproduces)."""
    setup = exp.setup
    flat = [r for p in parties for r in p]
    targets = [targets_for(setup, p, exp.say) for p in parties]
    exp.say(f"delta: collaborative edit of {len(parties)} parties × {len(parties[0])} edits")
    rngs = [random.Random(f"{exp.seed}/{k}") for k in range(len(parties))]
    dv = delta_view(setup, parties, targets, defence, rngs)
    first = setup.hp.layers[0]
    basis = spectral.basis_from_delta(dv.deltas[first], dv.lam_cov[first], len(flat))
    rows = [subspace_row(exp, "delta", basis, flat, parties=len(parties))]
    own = keys_view(setup, parties[0], first)
    rest = [r for p in parties[1:] for r in p]
    rows.append(subspace_row(exp, "delta", spectral.remove_known(basis, own), rest, attack_variant="minus-own",
                             parties=len(parties), known_own=len(parties[0])))
    rows[-1]["attack"] = "subspace-minus-own"
    k = keys_view(setup, flat, first)
    res = [len(setup.hp.layers) * (dv.deltas[first] @ k[j]) for j in range(len(flat))]
    rows.append(target_rows(exp, "delta", res, flat, [r.subject for r in flat], objects, len(flat),
                            parties=len(parties)))
    rows.extend(model_rows(exp, dv.edited, flat, objects, parties=len(parties)))
    spec = "none" if defence is None else defence.spec()
    utility = release_utility(exp, dv.edited, flat, damage_probes(exp, exp.seed))
    cost = view_costs(exp)
    for row in rows:
        # what the release cost the model, and what each attack costs per candidate subject (the object attack
        # ranks objects of subjects it is given: no per-candidate-subject cost; ε: noise is not run here)
        row.update({"defence": spec, **utility, "epsilon": None})
        row.update({"queries_per_candidate": None, "flops_per_candidate": None} if row["attack"] == "target"
                   else cost["model"] if row["view"] == "model" else cost["first"])
    return rows, {"deltas": dv.deltas}


@torch.no_grad()
def subject_shifts(lm, edited: dict[int, torch.Tensor], subjects: Sequence[str]) -> torch.Tensor:
    """(len(subjects), len(MODEL_PROMPTS)) KL(edited ‖ unedited) of the next token after each prompt of each
    subject: ``lm`` as it is, then with the ``edited`` weights loaded (restored afterwards)."""
    from attacks.floor import kl_from_hidden, last_hidden

    prompts = [p.format(n) for n in subjects for p in MODEL_PROMPTS]
    saved = snapshot(lm, tuple(edited))
    base = last_hidden(lm, prompts)
    _load(lm, edited)
    try:
        after = last_hidden(lm, prompts)
    finally:
        restore(lm, saved)
    return kl_from_hidden(lm, after, base).view(len(subjects), len(MODEL_PROMPTS))


@torch.no_grad()
def model_scores(exp: Experiment, edited: dict[int, torch.Tensor]) -> torch.Tensor:
    """(N,) the black-box score of every candidate: Σ over ``MODEL_PROMPTS`` of KL(edited ‖ unedited) of the next
    token, ``len(MODEL_PROMPTS)`` queries to each model per candidate."""
    scores = torch.zeros(exp.n, dtype=torch.float64)
    chunk = 64
    for s in range(0, exp.n, chunk):
        names = exp.candidates[s:s + chunk]
        scores[s:s + len(names)] = subject_shifts(exp.setup.lm, edited, names).sum(1)
        if s % (chunk * 10) == 0:
            exp.say(f"model view: {s + len(names)}/{exp.n} candidates")
    return scores


@torch.no_grad()
def model_rows(exp: Experiment, edited: dict[int, torch.Tensor], flat: list[Request], objects: Sequence[str],
               **extra) -> list[dict]:
    """Black-box floor: rank candidates by KL(edited ‖ unedited) of the next token after generic prompts; read
    each edit's object off the edited model with the true prompt."""
    from attacks.target import object_first_tokens, rank_objects

    lm = exp.setup.lm
    saved = snapshot(lm, tuple(edited))
    scores = model_scores(exp, edited)
    from attacks import subspace

    targets = [exp.index(r.subject) for r in flat]
    ranks = subspace.ranks_of(scores, targets)
    row = subspace_row(exp, "model", torch.zeros(exp.cand_keys.shape[1], 0, dtype=torch.float64), flat, **extra)
    row.update(_ranks_to_row(ranks, len(flat)))
    row["attack"] = "kl-shift"
    firsts = object_first_tokens(lm.tokenizer, list(objects) + [r.target_new for r in flat])
    _load(lm, edited)
    try:
        obj = [rank_objects(next_token_logprobs(lm, [r.prompt.format(r.subject)])[0].double(), firsts, r.target_new,
                            lm.tokenizer) for r in flat]
    finally:
        restore(lm, saved)
    from attacks import metrics

    hits = sum(x == 0 for x in obj)
    obj_row = {"view": "model", "attack": "target", "m": len(flat), "n": len(flat), "object_top1": hits / len(flat),
               "object_top1_ci": list(metrics.wilson_ci(hits, len(flat))), "chance_object_top1": 1 / len(firsts),
               "n_objects": len(firsts), "subject_top1": None, "subject_top5": None, "chance_top1": None,
               "judge_similarity": None, "random_baseline": None, **extra}
    return [row, obj_row]


def _ranks_to_row(ranks: list[int], m: int) -> dict[str, float | list[float]]:
    from attacks import metrics

    out: dict[str, float | list[float]] = {}
    for key, mult in (("subject_top1", 1), ("subject_top5", 5)):
        hits = sum(r < mult * m for r in ranks)
        out[key] = hits / len(ranks)
        out[f"{key}_ci"] = list(metrics.wilson_ci(hits, len(ranks)))
    return out


def _load(lm, weights: dict[int, torch.Tensor]) -> None:
    from secure_collab.models.specs import down_weight

    with torch.no_grad():
        for layer, w in weights.items():
            down_weight(lm.model, lm.spec, layer).copy_(w)


def stats_rows(exp: Experiment, pool: list[Request], ms: Sequence[int], objects: Sequence[str],
               trials: int | None = None) -> list[dict]:
    """One party's (K Kᵀ, R Kᵀ): subject ranking from G and object recovery from B G⁺ k̂ (L · r̂ patched)."""
    from attacks.runner import _ranking_row
    from attacks.subspace import projection_scores, ranks_of
    from attacks.views import stats_view

    rows = []
    n_layers = len(exp.setup.hp.layers)
    for m in ms:
        draws = draw_trials(pool, m, trials or max(4, len(pool) // m), exp.seed)
        ranks, edited, res = [], [], []
        for idx in draws:
            reqs = [pool[i] for i in idx]
            z = targets_for(exp.setup, reqs, exp.say).z
            st = stats_view(exp.setup, reqs, z, exp.layer)
            basis = spectral.basis_from_gram(st.g, m)
            ranks.append(ranks_of(projection_scores(basis, exp.cand_keys), [exp.index(r.subject) for r in reqs]))
            k = keys_view(exp.setup, reqs, exp.layer)
            res += list(n_layers * residual_from_stats(st.b, st.g, k))
            edited += reqs
        rows.append(_ranking_row("stats", "subspace", m, exp.n, ranks))
        rows.append(target_rows(exp, "stats", res, edited, [r.subject for r in edited], objects, m))
    return rows


def forward_flops(lm, tokens: float, upto_layer: int | None = None) -> float:
    """2 × parameters used × tokens for one sequence: blocks 0..upto_layer (None: every block and the LM head)."""
    from secure_collab.models.specs import get_module, n_layers

    depth = n_layers(lm.model, lm.spec)
    per_block = [sum(p.numel() for p in get_module(lm.model, lm.spec.block_name(i)).parameters()) for i in range(depth)]
    used = sum(per_block[:(depth if upto_layer is None else upto_layer + 1)])
    if upto_layer is None:
        head = lm.model.get_output_embeddings()
        used += head.weight.numel()
    return 2.0 * used * tokens


def _tokens(lm, texts: Sequence[str]) -> float:
    return sum(len(lm.tokenizer(t)["input_ids"]) for t in texts) / max(1, len(texts))


def _next_token_kl(lm, edited: dict[int, torch.Tensor], subjects: Sequence[str]) -> float:
    return float(subject_shifts(lm, edited, subjects).mean())


def damage_probes(exp: Experiment, seed: int, n: int = 200) -> list[str]:
    """The public titles the damage KL is measured on: ``n`` drawn by ``seed`` from the corpus, none of them a
    subject of the report set (so never edited)."""
    return decoy_subjects(random.Random(seed + 4242), n, exclude=[r.subject for r in exp.requests])


def release_utility(exp: Experiment, edited: dict[int, torch.Tensor], requests: Sequence[Any],
                    probes: Sequence[str]) -> dict[str, float]:
    """What a release costs the model: CounterFact's efficacy, generalization, specificity and score of
    ``requests`` on the model with ``edited`` loaded, and the damage KL (mean next-token KL, edited ‖ unedited, of
    ``probes`` under ``MODEL_PROMPTS``)."""
    from secure_collab.evaluation import evaluate

    lm, hp = exp.setup.lm, exp.setup.hp
    saved = snapshot(lm, hp.layers)
    _load(lm, edited)
    try:
        ev = evaluate(lm, list(requests)).summary()
    finally:
        restore(lm, saved)
    return {"efficacy": ev["efficacy"], "generalization": ev["generalization"], "specificity": ev["specificity"],
            "score": ev["score"], "damage_kl": _next_token_kl(lm, edited, probes)}


def view_costs(exp: Experiment) -> dict[str, dict[str, float]]:
    """Queries and forward FLOPs per candidate (averaged over the first 200) of the white-box attacks that compute
    each candidate's keys (one sequence per context template) up to the first edited layer (``first``) or the last
    (``every``), and of the 2-prompt black box (``model``: one full forward per prompt)."""
    setup = exp.setup
    lm, hp = setup.lm, setup.hp
    sample = exp.candidates[:200]
    key_tokens = _tokens(lm, [t.format(n) for n in sample for t in setup.templates]) * len(setup.templates)
    model_tokens = _tokens(lm, [p.format(n) for n in sample for p in MODEL_PROMPTS]) * len(MODEL_PROMPTS)
    return {"first": {"queries_per_candidate": 0, "flops_per_candidate": forward_flops(lm, key_tokens, hp.layers[0])},
            "every": {"queries_per_candidate": 0,
                      "flops_per_candidate": forward_flops(lm, key_tokens, hp.layers[-1])},
            "model": {"queries_per_candidate": len(MODEL_PROMPTS),
                      "flops_per_candidate": forward_flops(lm, model_tokens, None)}}
