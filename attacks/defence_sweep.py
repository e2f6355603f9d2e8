"""Defences against the strongest attacks on the release, measured over independent sessions.

A session: ``parties`` parties × ``per_party`` edits, the edits of session s being records
[s·m, (s+1)·m) of the report set (sessions share no edit). For every defence of the grid the session's ΔW comes
from ``run_edit(method="collab", defence=...)``, the simulation of the networked session with the same party-side
camouflage and solver-side truncation; each party's decoy draws come from a generator seeded by (seed, session,
party) so that a run reproduces (the networked party uses its CSPRNG; the attacker never uses these seeds); with
``noise:Z`` each party clips to the sweep's declared bounds κ, ρ and adds its discrete Gaussian (words keyed from the
same generator), calibrated as a networked session of these parties with min_parties = parties, the shares
encoding of the session file's default value_bound and the edited layers × 1 round, and the rows carry that
session's ε (``editing.accounting``) at the defence's δ.

What the attacker holds (the `delta` view, any party, stated exactly): the public model, C and λ, the session's
context templates, the released ΔW of every edited layer, the defence setting and its rule (scale, mix, the decoy
pool: every title of the public corpus), the number of edits (ΔW's rank shows it) and a public candidate list.
It does not hold the other parties' requests, keys, targets or decoy draws. Attacks (each a ranking of the
candidates; the best is what counts):

- ``subspace@L``: ‖Qᵀk_c‖/‖k_c‖ with Q a basis of λC · rowspace(ΔW) at the first edited layer (exactly span(K)
  without defence); ``subspace-all``: the per-layer scores, standardised over candidates, averaged over every
  edited layer (candidate keys of later layers from the unedited model: an approximation for the edited subjects,
  whose later keys move with the earlier layers' edits);
- ``norm@L`` / ``norm-all``: ‖ΔW k_c‖/‖k_c‖, how strongly the release answers a candidate's key (an edit must
  answer its own key, camouflaged or not);
- ``deflate`` (adaptive against camouflage): the attacker scores every key of the decoy pool against Q, takes the
  ``deflate_per_edit`` × m best as the decoys' span D, removes D from Q and from every candidate key, and ranks by
  the subspace score of what is left; ``deflate-norm``: the same removal, then the norm score;
- ``minus-own``: party 0 removes its own keys from Q first (subspace);
- ``…-outside-pool``: the subspace and norm rankings with every candidate of the decoy pool ranked last (the
  attacker knows the sampler's range; a true subject inside the pool is lost to it).
- ``answer-check`` / ``answer-check-outside-pool`` (adaptive against decoys: the attacker knows the decoys are public
  subjects pushed toward the answer the model already gives, so only a real edit changes a top-1 answer): the
  ``answer_shortlist`` × m best candidates of ``norm-all`` (resp. ``norm-all-outside-pool``) are checked, each on its
  relation prompt (``relation_prompts``: an upper bound on what an attacker knows, the prompt each candidate would be
  edited with), and those whose top-1 answer is the public model's are ranked last; cost: 2 full forward passes per
  checked candidate (``queries_per_candidate`` is that over all N);
- ``model`` (with ``--model-floor``): the black box, KL(edited ‖ unedited) of the next token after "{}" and
  "{} is", two full forward passes per candidate.
- ``model-templates`` / ``model-templates-sum`` (with ``--floor-templates``, ``attacks.floor``): the black box with
  the object attack's knowledge, one public prompt per relation (CounterFact's 34): the largest (resp. summed)
  KL(edited ‖ unedited) of the next token over the templates, one query per template per candidate;
  ``model-cascade`` (with both): the 2-prompt score screens every candidate and the templates rescore its
  ``answer_shortlist`` × m best (2 + T × shortlist / N queries per candidate). Their query budget curves are in
  ``query_budgets``. ``model-outside-pool``, ``model-cascade-outside-pool`` (and ``model-templates-outside-pool``):
  the same with the decoy pool's candidates ranked last, the screen's shortlist taken outside the pool (adaptive
  against camouflage and decoys, whose pool subjects the edited model also answers differently).

Per row: recall@m and @5m of the edited subjects (m = all edits; the attacking party's own 3 are among them
except for ``minus-own``), the cost per candidate (queries to the model and forward FLOPs), and the session's
utility: efficacy, generalization, specificity (CounterFact's), damage_kl (mean next-token KL, edited vs
unedited, over ``--damage-subjects`` public titles under "{}" and "{} is") and damage_kl_decoys (the same over
the parties' decoy subjects: camouflage answers their keys, decoys:R edits them); with decoys:R, ``decoys`` (their
number), ``decoys_changed`` (how many decoy subjects' top-1 answer on their own prompt changed, after the repair
round) and ``decoys_repaired`` (how many the repair round pushed back).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attacks import metrics, spectral, subspace
from attacks.bounds import KEY_NORM_BOUND, RESIDUAL_NORM_BOUND
from attacks.runner import Experiment
from attacks.session_views import (
    MODEL_PROMPTS,
    _load,
    _next_token_kl,
    _tokens,
    damage_probes,
    forward_flops,
    release_utility,
    view_costs,
)
from attacks.views import delta_view, keys_view, split, targets_for
from secure_collab.editing.defences import Defence, decoy_subjects
from secure_collab.editing.memit import restore, snapshot


@dataclass
class Sweep:
    exp: Experiment
    parties: int = 10
    per_party: int = 3
    deflate_per_edit: int = 8
    answer_shortlist: int = 5  # answer-check: candidates checked, in multiples of m
    damage_subjects: int = 200
    model_floor: bool = False
    floor_templates: list[str] = field(default_factory=list)  # the template floor's relation prompts (none: off)
    floor_reverse: bool = False  # walk the template floor's chunks from the end (a second process shares them)
    floor_full: bool = True  # the templates on every candidate; False: on the cascade's shortlist only
    seed: int = 0
    say: Callable[[str], None] = print
    key_norm_bound: float = KEY_NORM_BOUND  # κ of noise:Z
    residual_norm_bound: float = RESIDUAL_NORM_BOUND  # ρ of noise:Z
    _layer_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    _pool: list[str] = field(default_factory=list)
    _pool_keys: torch.Tensor | None = None
    _probes: list[str] = field(default_factory=list)
    _unedited_top1: dict[str, int] = field(default_factory=dict)  # prompt text -> the public model's top-1

    @property
    def m(self) -> int:
        return self.parties * self.per_party

    def layer_keys(self, layer: int) -> torch.Tensor:
        """Candidate keys at ``layer`` on the unedited model (cached on disk by ``candidate_keys``)."""
        from attacks.candidates import candidate_keys

        if layer == self.exp.layer:
            return self.exp.cand_keys
        if layer not in self._layer_keys:
            self._layer_keys[layer] = candidate_keys(self.exp.setup, self.exp.candidates, layer, self.say)
        return self._layer_keys[layer]

    def pool(self) -> tuple[list[str], torch.Tensor]:
        """Every public title the decoy sampler draws from, and their keys at the first edited layer."""
        from attacks.candidates import candidate_keys

        if self._pool_keys is None:
            self._pool = decoy_subjects(random.Random(0), 10 ** 9)  # all of them (the sampler's whole range)
            self._pool.sort()
            self.say(f"decoy pool: {len(self._pool)} public titles; their keys at layer {self.exp.layer}")
            self._pool_keys = candidate_keys(self.exp.setup, self._pool, self.exp.layer, self.say)
        return self._pool, self._pool_keys

    def probes(self) -> list[str]:
        if not self._probes:
            self._probes = damage_probes(self.exp, self.seed, self.damage_subjects)
        return self._probes

    def session(self, s: int) -> list[list]:
        reqs = self.exp.requests[s * self.m:(s + 1) * self.m]
        if len(reqs) < self.m:
            raise ValueError(f"session {s} needs records up to {(s + 1) * self.m}; the report set has "
                             f"{len(self.exp.requests)}")
        return split(list(reqs), self.parties)

    def rngs(self, s: int) -> list[random.Random]:
        return [random.Random(f"{self.seed}/{s}/{k}") for k in range(self.parties)]

    def noise_plan(self, defence: Defence) -> Any:
        """The ``editing.noise.NoisePlan`` of ``defence`` in these sessions (None without noise): min_parties =
        parties, the shares encoding of a session file's default value_bound, per_party edits per party."""
        if not defence.noise:
            return None
        from secure_collab.editing.noise import plan_noise
        from secure_collab.models.specs import down_weight
        from secure_collab.protection import encoding_frac_bits
        from secure_collab.protocol.messages import MAX_PARTIES
        from secure_collab.session_file import SessionChoices

        lm, hp = self.exp.setup.lm, self.exp.setup.hp
        d_v, d_k = down_weight(lm.model, lm.spec, hp.layers[0]).shape
        bound = SessionChoices.value_bound
        return plan_noise(defence.noise, self.key_norm_bound, self.residual_norm_bound, self.parties, d_k, d_v,
                          encoding_frac_bits("shares", bound, MAX_PARTIES), self.per_party, bound)

    def epsilon(self, defence: Defence) -> float | None:
        """ε at the defence's δ over the edited layers (one round, and the decoys' noised repair round), or None
        without noise."""
        plan = self.noise_plan(defence)
        if plan is None:
            return None
        from secure_collab.editing.accounting import plan_epsilon

        return plan_epsilon(plan, defence.delta, len(self.exp.setup.hp.layers),
                            1 + defence.repair_rounds(False)).session


def _z(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / x.std().clamp_min(1e-300)


def _rank_hits(scores: torch.Tensor, targets: list[int], m: int) -> dict[str, Any]:
    ranks = subspace.ranks_of(scores, targets)
    return {"recall_m": sum(r < m for r in ranks) / len(ranks), "recall_5m": sum(r < 5 * m for r in ranks) / len(ranks),
            "median_rank": float(torch.tensor(ranks, dtype=torch.float64).median()), "m": m,
            "subjects": len(ranks)}


def _project_out(basis: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(basis of span(basis) ⊥ directions, the orthonormal D removed)."""
    d, _ = torch.linalg.qr(directions.double().T)
    rest = basis - d @ (d.T @ basis)
    u, s, _ = torch.linalg.svd(rest, full_matrices=False)
    keep = int((s > 1e-6 * s.max()).sum())
    return u[:, :keep], d


def answer_changed(sw: Sweep, edited: dict[int, torch.Tensor], names: Sequence[str], prompts: Sequence[str]
                   ) -> list[bool]:
    """For each candidate name and its relation prompt: does the edited model's top-1 next token differ from the
    public model's? The public model's answers are cached across defences."""
    from attacks.target import next_token_logprobs

    lm = sw.exp.setup.lm
    texts = [p.format(n) for n, p in zip(names, prompts, strict=True)]
    todo = [t for t in dict.fromkeys(texts) if t not in sw._unedited_top1]
    if todo:
        sw._unedited_top1.update(zip(todo, next_token_logprobs(lm, todo, batch=64).argmax(-1).tolist(), strict=True))
    saved = snapshot(lm, tuple(edited))
    _load(lm, edited)
    try:
        after = next_token_logprobs(lm, texts, batch=64).argmax(-1).tolist()
    finally:
        restore(lm, saved)
    return [a != sw._unedited_top1[t] for a, t in zip(after, texts, strict=True)]


def answer_check(sw: Sweep, edited: dict[int, torch.Tensor], scores: torch.Tensor, prompt_of: Callable[[int], str],
                 m: int) -> tuple[torch.Tensor, dict[str, float]]:
    """``scores`` re-ranked: of the ``answer_shortlist`` × m best candidates, those whose top-1 answer on their
    relation prompt (``prompt_of(candidate index)``) did not change go last, in their order. Returns the scores and
    the check's cost: 2 queries (edited and public model) per checked candidate."""
    order = torch.argsort(scores, descending=True)[:sw.answer_shortlist * m].tolist()
    changed = answer_changed(sw, edited, [sw.exp.candidates[i] for i in order], [prompt_of(i) for i in order])
    out = scores.clone()
    low, top = float(scores.min()) - 1.0, float(scores.max())
    for i, c in zip(order, changed, strict=True):
        if not c:
            out[i] = low - (top - float(scores[i]))  # below every unchecked candidate, in the same order
    return out, {"checked": len(order), "queries_per_checked": 2}


def relation_prompts(sw: Sweep, s: int, flat: Sequence[Any], decoys: Sequence[Any]) -> Callable[[int], str]:
    """The answer check's knowledge, an upper bound: each candidate's relation prompt. A subject of the report set
    (edited in this session or not) has its record's prompt, a decoy subject of this session the prompt its party drew
    for it, any other candidate one of the session's edit prompts drawn by a seeded generator."""
    known = {r.subject: r.prompt for r in sw.exp.requests}
    known.update({r.subject: r.prompt for r in flat})
    known.update({r.subject: r.prompt for r in decoys})
    choices = sorted({r.prompt for r in flat})
    rng = random.Random(f"{sw.seed}/{s}/answer-check")
    drawn: dict[int, str] = {}

    def prompt_of(i: int) -> str:
        name = sw.exp.candidates[i]
        if name in known:
            return known[name]
        if i not in drawn:
            drawn[i] = rng.choice(choices)
        return drawn[i]

    return prompt_of


def run_session(sw: Sweep, s: int, defence: Defence) -> dict[str, Any]:
    """One session under one defence: utility, damage, and every attack's recall and cost."""
    exp, setup = sw.exp, sw.exp.setup
    lm, hp = setup.lm, setup.hp
    parties = sw.session(s)
    flat = [r for p in parties for r in p]
    targets = [targets_for(setup, p, lambda _m: None) for p in parties]
    sw.say(f"session {s}, defence {defence.spec()}: collaborative edit of {sw.parties} × {sw.per_party}")
    dv = delta_view(setup, parties, targets, defence, sw.rngs(s), sw.noise_plan(defence))
    saved = snapshot(lm, hp.layers)
    decoys = [n for k, p in enumerate(parties)
              for n in decoy_subjects(sw.rngs(s)[k], 64, exclude=[r.subject for r in p])] if defence.camouflage else []
    decoy_edits = [r for d in dv.decoys for r in d.requests]
    if decoy_edits:  # the decoy edits' subjects are the ones the release now answers
        decoys = [r.subject for r in decoy_edits]
    out: dict[str, Any] = {"session": s, "defence": defence.spec(), "m": len(flat),
                           **release_utility(exp, dv.edited, flat, sw.probes()),
                           "damage_kl_decoys": _next_token_kl(lm, dv.edited, decoys[:200]) if decoys else None,
                           "attacks": {}}
    if decoy_edits:
        from secure_collab.editing.decoys import top1

        _load(lm, dv.edited)
        try:
            now = top1(lm, decoy_edits)
        finally:
            restore(lm, saved)
        out["decoys"] = len(decoy_edits)
        out["decoys_changed"] = sum(a != b for a, b in zip(now, (a for d in dv.decoys for a in d.answers),
                                                            strict=True))
        out["decoys_repaired"] = sum(dv.repaired)
    targets_idx = [exp.index(r.subject) for r in flat]
    m = len(flat)
    first = hp.layers[0]
    att = out["attacks"]
    sub_scores, norm_scores = {}, {}
    for layer in hp.layers:
        keys = sw.layer_keys(layer)
        delta = dv.deltas[layer].double()
        basis = spectral.basis_from_delta(delta, dv.lam_cov[layer])
        sub_scores[layer] = subspace.projection_scores(basis, keys)
        norm_scores[layer] = (keys @ delta.T).norm(dim=1) / keys.norm(dim=1).clamp_min(1e-300)
    att["subspace@first"] = _rank_hits(sub_scores[first], targets_idx, m)
    att["norm@first"] = _rank_hits(norm_scores[first], targets_idx, m)
    att["subspace-all"] = _rank_hits(torch.stack([_z(v) for v in sub_scores.values()]).mean(0), targets_idx, m)
    att["norm-all"] = _rank_hits(torch.stack([_z(v) for v in norm_scores.values()]).mean(0), targets_idx, m)
    basis = spectral.basis_from_delta(dv.deltas[first].double(), dv.lam_cov[first])
    own = keys_view(setup, parties[0], first)
    rest = [exp.index(r.subject) for p in parties[1:] for r in p]
    att["minus-own"] = _rank_hits(subspace.projection_scores(spectral.remove_known(basis, own), exp.cand_keys),
                                  rest, len(rest))
    # adaptive against camouflage: remove the decoy pool's best-aligned keys from the span, then rank
    _, pool_keys = sw.pool()
    top = torch.argsort(subspace.projection_scores(basis, pool_keys), descending=True)[:sw.deflate_per_edit * m]
    left, d = _project_out(basis, pool_keys[top])
    cand = exp.cand_keys - (exp.cand_keys @ d) @ d.T
    att["deflate"] = _rank_hits(subspace.projection_scores(left, cand), targets_idx, m)
    delta = dv.deltas[first].double()
    att["deflate-norm"] = _rank_hits((cand @ delta.T).norm(dim=1) / cand.norm(dim=1).clamp_min(1e-300),
                                     targets_idx, m)
    # an attacker who knows the decoy pool ranks the candidates outside it first (the decoys are pool titles)
    pool_names, _ = sw.pool()
    in_pool = torch.tensor([c in set(pool_names) for c in exp.candidates])
    for name in ("subspace@first", "norm@first", "subspace-all", "norm-all"):
        scores = {"subspace@first": sub_scores[first], "norm@first": norm_scores[first],
                  "subspace-all": torch.stack([_z(v) for v in sub_scores.values()]).mean(0),
                  "norm-all": torch.stack([_z(v) for v in norm_scores.values()]).mean(0)}[name]
        att[f"{name}-outside-pool"] = _rank_hits(scores - in_pool.double() * 1e6, targets_idx, m)
    # adaptive against decoys: only a real edit changes an answer (the attacker knows the rule)
    prompt_of = relation_prompts(sw, s, flat, decoy_edits)
    for name, base in (("answer-check", "norm-all"), ("answer-check-outside-pool", "norm-all-outside-pool")):
        scores = torch.stack([_z(v) for v in norm_scores.values()]).mean(0)
        if base.endswith("outside-pool"):
            scores = scores - in_pool.double() * 1e6
        checked, cost = answer_check(sw, dv.edited, scores, prompt_of, m)
        att[name] = {**_rank_hits(checked, targets_idx, m), **cost}
    screen = None
    if sw.model_floor:
        from attacks.session_views import model_scores

        screen = model_scores(exp, dv.edited)
        att["model"] = _rank_hits(screen, targets_idx, m)
        att["model-outside-pool"] = _rank_hits(screen - in_pool.double() * 1e6, targets_idx, m)
        out["query_budget"] = budget_curve(screen, targets_idx, m, len(MODEL_PROMPTS), seed=sw.seed + s)
    if sw.floor_templates:
        from attacks.floor import TemplateFloor, cascade

        floor = TemplateFloor(lm, exp.candidates, sw.floor_templates, setup.cache, reverse=sw.floor_reverse,
                              say=sw.say)
        shortlist = sw.answer_shortlist * m
        if sw.floor_full:
            kl = floor.scores(dv.edited).double()
            best = kl.max(1).values
            att["model-templates"] = _rank_hits(best, targets_idx, m)
            att["model-templates-sum"] = _rank_hits(kl.sum(1), targets_idx, m)
            out["query_budgets"] = {"model-templates": budget_curve(best, targets_idx, m, len(sw.floor_templates),
                                                                    seed=sw.seed + s)}
            out["subject_kl"] = {"edited": [float(best[i]) for i in targets_idx],
                                 "candidates_median": float(best.median())}
            att["model-templates-outside-pool"] = _rank_hits(best - in_pool.double() * 1e6, targets_idx, m)
            if screen is not None:
                att["model-cascade"] = _rank_hits(cascade(screen, best, shortlist), targets_idx, m)
                outside = screen - in_pool.double() * 1e6
                att["model-cascade-outside-pool"] = _rank_hits(cascade(outside, best, shortlist), targets_idx, m)
        elif screen is not None:  # the templates on the screen's shortlists only: the cascades, at their own cost
            outside = screen - in_pool.double() * 1e6
            rows = sorted({*torch.argsort(screen, descending=True)[:shortlist].tolist(),
                           *torch.argsort(outside, descending=True)[:shortlist].tolist()})
            best = torch.full_like(screen, float("-inf"))
            best[rows] = floor.scores(dv.edited, rows).double().max(1).values
            att["model-cascade"] = _rank_hits(cascade(screen, best, shortlist), targets_idx, m)
            att["model-cascade-outside-pool"] = _rank_hits(cascade(outside, best, shortlist), targets_idx, m)
        else:
            raise ValueError("the cascade alone (floor_full=False) needs the 2-prompt screen (model_floor)")
    return out


BUDGETS = (10, 30, 100, 300, 1000, 3000, 10000)


def budget_curve(scores: torch.Tensor, targets: list[int], m: int, per_candidate: int, seed: int = 0,
                 draws: int = 200, budgets: Sequence[int] = BUDGETS) -> dict[str, float]:
    """Recall@m of the black-box attack under a query budget Q (a served release): the attacker, with no prior
    over the candidates, queries Q // per_candidate of them in a random order and names the m highest scores
    among those it queried. Mean over ``draws`` random orders. Every candidate queried: the unbudgeted recall."""
    gen = torch.Generator().manual_seed(seed)
    n = scores.shape[0]
    want = torch.zeros(n, dtype=torch.bool)
    want[targets] = True
    out = {}
    for q in budgets:
        t = min(n, q // per_candidate)
        hits = 0.0
        for _ in range(draws):
            seen = torch.randperm(n, generator=gen)[:t]
            named = seen[torch.argsort(scores[seen], descending=True)[:m]]
            hits += float(want[named].sum()) / len(targets)
        out[str(q)] = hits / draws
    return out


def costs(sw: Sweep) -> dict[str, dict[str, float]]:
    """Queries and forward FLOPs per candidate of each attack (keys: one sequence per context template)."""
    lm = sw.exp.setup.lm
    sample = sw.exp.candidates[:200]
    base = view_costs(sw.exp)
    first, every, full = (base[k]["flops_per_candidate"] for k in ("first", "every", "model"))
    out = {name: {"queries_per_candidate": 0, "flops_per_candidate": first}
           for name in ("subspace@first", "norm@first", "minus-own", "deflate", "deflate-norm",
                        "subspace@first-outside-pool", "norm@first-outside-pool")}
    out.update({name: {"queries_per_candidate": 0, "flops_per_candidate": every}
                for name in ("subspace-all", "norm-all", "subspace-all-outside-pool", "norm-all-outside-pool")})
    out["model"] = {"queries_per_candidate": len(MODEL_PROMPTS), "flops_per_candidate": full}
    out["model-outside-pool"] = dict(out["model"])
    if sw.floor_templates:
        t = len(sw.floor_templates)
        per_t = forward_flops(lm, _tokens(lm, [p.format(n) for n in sample for p in sw.floor_templates]), None)
        out["model-templates"] = {"queries_per_candidate": t, "flops_per_candidate": t * per_t}
        out["model-templates-sum"] = dict(out["model-templates"])
        out["model-templates-outside-pool"] = dict(out["model-templates"])
        checked = t * sw.answer_shortlist * sw.m / sw.exp.n
        out["model-cascade"] = {"queries_per_candidate": len(MODEL_PROMPTS) + checked,
                                "flops_per_candidate": full + checked * per_t}
        out["model-cascade-outside-pool"] = dict(out["model-cascade"])
    # answer-check: the keys of every layer for all, then one full forward per (checked candidate, relation prompt,
    # model); ``summarise`` scales the query count by the sessions' checked fraction
    relation = [r.prompt for r in sw.exp.requests[:200]]
    per_query = forward_flops(lm, _tokens(lm, [p.format(n) for n, p in zip(sample, relation, strict=False)]), None)
    for name in ("answer-check", "answer-check-outside-pool"):
        out[name] = {"queries_per_candidate": 0, "flops_per_candidate": every, "flops_per_query": per_query}
    return out


def summarise(results: list[dict[str, Any]], cost: dict[str, dict[str, float]], chance: float,
              epsilons: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Rows per (defence, attack): means over sessions with 95 % bootstrap intervals over sessions. ``epsilons``:
    the session ε of each defence (``Sweep.epsilon``; None, or absent: no noise)."""
    rows = []
    by_def: dict[str, list[dict]] = {}
    for r in results:
        by_def.setdefault(r["defence"], []).append(r)
    for defence, runs in by_def.items():
        util = {k: metrics.bootstrap_ci([float(r[k]) for r in runs if r[k] is not None])
                for k in ("efficacy", "generalization", "specificity", "damage_kl")}
        dec = [float(r["damage_kl_decoys"]) for r in runs if r.get("damage_kl_decoys") is not None]
        for attack in runs[0]["attacks"]:
            rm = [r["attacks"][attack]["recall_m"] for r in runs if attack in r["attacks"]]
            r5 = [r["attacks"][attack]["recall_5m"] for r in runs if attack in r["attacks"]]
            a, b = metrics.bootstrap_ci(rm), metrics.bootstrap_ci(r5)
            row = {"view": "model" if attack.startswith("model") else "delta", "attack": attack, "defence": defence,
                   "sessions": len(rm), "m": runs[0]["m"], "recall_m": a[0], "recall_m_ci": [a[1], a[2]],
                   "recall_5m": b[0], "recall_5m_ci": [b[1], b[2]], "chance_m": chance,
                   **{k: v[0] for k, v in util.items()}, **{f"{k}_ci": [v[1], v[2]] for k, v in util.items()},
                   "damage_kl_decoys": sum(dec) / len(dec) if dec else None,
                   "epsilon": (epsilons or {}).get(defence),
                   **cost.get(attack, {})}
            checks = [r["attacks"][attack] for r in runs if "queries_per_checked" in r["attacks"].get(attack, {})]
            if checks and "flops_per_query" in row:  # answer-check: queries on the checked share of the N
                n = int(row.pop("candidates", 0)) or max(1, round(runs[0]["m"] / chance))
                q = sum(c["checked"] * c["queries_per_checked"] for c in checks) / len(checks) / n
                row["queries_per_candidate"] = q
                row["flops_per_candidate"] = row["flops_per_candidate"] + q * row.pop("flops_per_query")
                row["queries_per_checked_candidate"] = checks[0]["queries_per_checked"]
            row.pop("flops_per_query", None)
            if any("decoys" in r for r in runs):
                row["decoys"] = sum(r.get("decoys", 0) for r in runs) / len(runs)
                row["decoys_changed"] = sum(r.get("decoys_changed", 0) for r in runs) / len(runs)
                row["decoys_changed_total"] = sum(r.get("decoys_changed", 0) for r in runs)
                if all("decoys_repaired" in r for r in runs):  # runs from before the repair round have none
                    row["decoys_repaired_total"] = sum(r["decoys_repaired"] for r in runs)
            found = [_budgets(r).get(attack) for r in runs if attack in r["attacks"]]
            budgets = [b for b in found if b is not None]
            if budgets and len(budgets) == len(found):
                curve: dict[str, dict[str, Any]] = {}
                means: dict[str, float] = {}
                for q in budgets[0]:
                    mean, lo, hi = metrics.bootstrap_ci([b[q] for b in budgets])
                    curve[q] = {"recall_m": mean, "recall_m_ci": [lo, hi]}
                    means[q] = mean
                row["query_budget"] = curve
                below = [int(q) for q, v in means.items() if v < 0.1]
                row["budget_below_0.1"] = max(below) if below else None
            rows.append(row)
    return rows


def _budgets(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A session's query budget curves per attack (``query_budget`` is the 2-prompt floor's)."""
    out = dict(run.get("query_budgets", {}))
    if "query_budget" in run:
        out["model"] = run["query_budget"]
    return out


def load_done(out: Path) -> dict[tuple[int, str], dict[str, Any]]:
    done = {}
    for p in sorted(out.glob("session-*.json")):
        r = json.loads(p.read_text())
        done[(r["session"], r["defence"])] = r
    return done
