"""The attack grid as a library: for a view and an attack, draw trials of m edits and measure the leakage.

Each function returns rows (dicts) with at least ``view, attack, m, subject_top1, subject_top5, chance_top1,
judge_similarity, random_baseline, n`` (n: trials), plus 95 % intervals (``*_ci``) and what else the attack
measures. The CLI (``attacks.cli.attack``) is a thin shell over these.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attacks import metrics, spectral, subspace
from attacks.views import PublicSetup, aggregate_gram_view, gram_view, keys_view
from secure_collab.data.requests import Request


@dataclass
class Experiment:
    setup: PublicSetup
    requests: list[Request]  # the report set: edits are drawn from these
    candidates: list[str]  # every request subject is among them
    cand_keys: torch.Tensor  # (N, d_k) float64
    layer: int
    mean_key: torch.Tensor  # (d_k,) public mean key (sign of spectral estimates)
    inverter: Any = None  # attacks.inverter.Inverter or None
    judge: Any = None  # attacks.judge.Judge or None
    say: Callable[[str], None] = print
    seed: int = 0
    _index: dict[str, int] = field(default_factory=dict)

    def index(self, subject: str) -> int:
        if not self._index:
            self._index.update({c: i for i, c in enumerate(self.candidates)})
        return self._index[" ".join(subject.split())]

    @property
    def n(self) -> int:
        return len(self.candidates)


def draw_trials(requests: Sequence[Request], m: int, n_trials: int, seed: int) -> list[list[int]]:
    """``n_trials`` draws of m requests with distinct subjects (indices into ``requests``)."""
    by_subject: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_subject.setdefault(" ".join(r.subject.split()), []).append(i)
    subjects = sorted(by_subject)
    if m > len(subjects):
        raise ValueError(f"m = {m} edits asked for, the report set has {len(subjects)} distinct subjects")
    rng = random.Random(seed * 1000 + m)
    return [[by_subject[s][0] for s in rng.sample(subjects, m)] for _ in range(n_trials)]


def default_trials(m: int, budget: int = 128, floor: int = 4) -> int:
    return max(floor, budget // m)


def true_text(r: Request) -> str:
    """The prompt up to the end of the subject: everything an edit's key is a function of."""
    i = r.prompt.index("{}")
    return (r.prompt[:i] + r.subject).strip()


def _ranking_row(view: str, attack: str, m: int, n_cand: int, per_trial_ranks: list[list[int]]) -> dict:
    top1 = [metrics.recall_at(rk, m) for rk in per_trial_ranks]
    top5 = [metrics.recall_at(rk, 5 * m) for rk in per_trial_ranks]
    s1, s5 = metrics.bootstrap_ci(top1), metrics.bootstrap_ci(top5)
    return {"view": view, "attack": attack, "m": m, "n": len(per_trial_ranks), "n_candidates": n_cand,
            "subject_top1": s1[0], "subject_top1_ci": [s1[1], s1[2]], "subject_top5": s5[0],
            "subject_top5_ci": [s5[1], s5[2]], "chance_top1": m / n_cand, "chance_top5": min(1.0, 5 * m / n_cand),
            "judge_similarity": None, "judge_similarity_ci": None, "random_baseline": None}


def _text_scores(exp: Experiment, recovered: list[list[str]], truths: list[list[str]], paired: bool) -> dict:
    """Per trial: judge similarity and token F1 of matched (true, recovered) pairs, averaged over the m edits.

    ``paired``: recovered text j comes from edit j's own key (the `keys` view). Otherwise (a spectral estimate
    is a rotation of the keys) texts are matched one to one, greedily by similarity: a best-of-m match without
    that constraint would rise with m even for unrelated texts."""
    sims, f1s = [], []
    for rec, tru in zip(recovered, truths, strict=True):
        s = exp.judge.similarity(tru, rec)  # (m_true, m_rec)
        pairs = [(i, i) for i in range(len(tru))] if paired else metrics.greedy_matching(s)
        sims.append(float(np.mean([s[i, j] for i, j in pairs])))
        f1s.append(float(np.mean([metrics.token_f1(rec[j], tru[i]) for i, j in pairs])))
    j, f = metrics.bootstrap_ci(sims), metrics.bootstrap_ci(f1s)
    return {"judge_similarity": j[0], "judge_similarity_ci": [j[1], j[2]], "token_f1": f[0],
            "token_f1_ci": [f[1], f[2]]}


def _random_texts(exp: Experiment, truths: list[list[str]]) -> list[list[str]]:
    """As many public texts (the inverter's training windows), drawn at random, as each trial recovered."""
    rng = random.Random(exp.seed + 99)
    bank = exp.inverter.train_texts
    return [[bank[rng.randrange(len(bank))] for _ in tru] for tru in truths]


def random_baseline(exp: Experiment) -> float:
    texts = [true_text(r) for r in exp.requests]
    return metrics.random_pair_baseline(exp.judge.similarity(texts, texts), seed=exp.seed)


def key_view_rows(exp: Experiment, view: str, attacks: Sequence[str], ms: Sequence[int], parties: int = 1,
                  trials: Callable[[int], int] = default_trials) -> list[dict]:
    """keys / gram / aggregate (its ΣKKᵀ part) with the subspace, spectral and inverter attacks."""
    rows: list[dict] = []
    base = random_baseline(exp) if exp.judge is not None and "inverter" in attacks else None
    for m in ms:
        draws = draw_trials(exp.requests, m, trials(m), exp.seed)
        ranks_sub, ranks_spec, recs, recs_nn, truths, errors = [], [], [], [], [], []
        for t, idx in enumerate(draws):
            reqs = [exp.requests[i] for i in idx]
            targets = [exp.index(r.subject) for r in reqs]
            k = keys_view(exp.setup, reqs, exp.layer)  # (m, d_k): the party's (or parties') keys
            if view == "keys":
                basis, est = torch.linalg.qr(k.T)[0], k
            else:  # gram: one party's K Kᵀ; aggregate: Σ over `parties` parties' K_p K_pᵀ (same sum)
                g = gram_view(exp.setup, reqs, exp.layer) if view == "gram" or parties == 1 else (
                    aggregate_gram_view(exp.setup, _split(reqs, parties), exp.layer))
                basis, est = spectral.basis_from_gram(g, m), spectral.keys_from_gram(g, m, exp.mean_key)
                if m == 1:
                    errors.append(float((est[0] - k[0]).norm() / k[0].norm()))
            if "subspace" in attacks:
                ranks_sub.append(subspace.ranks_of(subspace.projection_scores(basis, exp.cand_keys), targets))
            if "spectral" in attacks:
                cos = torch.nn.functional.normalize(exp.cand_keys, dim=1) @ torch.nn.functional.normalize(est, dim=1).T
                ranks_spec.append(subspace.ranks_of(cos.max(1).values, targets))
            if "inverter" in attacks and exp.inverter is not None:
                recs.append(exp.inverter.invert(est))
                recs_nn.append(exp.inverter.nearest(est))
                truths.append([true_text(r) for r in reqs])
            if t == 0:
                exp.say(f"{view}: m = {m}, {len(draws)} trials")
        if ranks_sub:
            rows.append(_ranking_row(view, "subspace", m, exp.n, ranks_sub))
        if ranks_spec:
            row = _ranking_row(view, "spectral", m, exp.n, ranks_spec)
            if errors:
                row["key_rel_error_max"] = max(errors)
            rows.append(row)
        if recs:
            row = _ranking_row(view, "inverter", m, exp.n, ranks_spec or ranks_sub or [[0]])
            for key in ("subject_top1", "subject_top1_ci", "subject_top5", "subject_top5_ci"):
                row[key] = None
            paired = view == "keys"
            row.update(_text_scores(exp, recs, truths, paired))
            nn = _text_scores(exp, recs_nn, truths, paired)
            rnd = _text_scores(exp, _random_texts(exp, truths), truths, paired)
            row.update({"nn_judge_similarity": nn["judge_similarity"],
                        "nn_judge_similarity_ci": nn["judge_similarity_ci"], "nn_token_f1": nn["token_f1"],
                        "random_baseline": rnd["judge_similarity"], "random_baseline_ci": rnd["judge_similarity_ci"],
                        "random_pair_baseline": base, "n": len(recs),
                        "examples": [{"true": tr[0], "inverter": rc[0], "nearest": nn_[0]}
                                     for tr, rc, nn_ in list(zip(truths, recs, recs_nn, strict=True))[:5]]})
            rows.append(row)
    return rows


def _split(reqs: list[Request], parties: int) -> list[list[Request]]:
    from secure_collab.editing.memit import split_parties

    return [p for p in split_parties(reqs, min(parties, len(reqs))) if p]


def subspace_row(exp: Experiment, view: str, basis: torch.Tensor, edited: list[Request], m: int | None = None,
                 **extra: Any) -> dict:
    """One ranking row for a single recovered basis (delta, aggregate of a session)."""
    targets = [exp.index(r.subject) for r in edited]
    ranks = subspace.ranks_of(subspace.projection_scores(basis, exp.cand_keys), targets)
    row = _ranking_row(view, "subspace", m or len(edited), exp.n, [ranks])
    # one draw: the interval is over the m subjects (Wilson), not over trials
    for k, mult in (("subject_top1", 1), ("subject_top5", 5)):
        hits = sum(r < mult * row["m"] for r in ranks)
        row[f"{k}_ci"] = list(metrics.wilson_ci(hits, len(ranks)))
    row["n"] = 1
    row["subjects"] = len(ranks)
    row.update(extra)
    return row


def target_rows(exp: Experiment, view: str, residuals: list[torch.Tensor], edited: list[Request],
                recovered_subjects: list[str], objects: Sequence[str], m: int, **extra: Any) -> dict:
    """Object top-1 of the patching attack for the edits of one view (residual r̂_j per edit)."""
    from attacks.target import object_first_tokens, patched_next_token_logprobs, rank_objects

    lm, hp = exp.setup.lm, exp.setup.hp
    firsts = object_first_tokens(lm.tokenizer, list(objects) + [r.target_new for r in edited])
    ranks, base_ranks = [], []
    for r, res, subj in zip(edited, residuals, recovered_subjects, strict=True):
        lp = patched_next_token_logprobs(lm, r.prompt, subj, hp.layers[-1], res)
        ranks.append(rank_objects(lp, firsts, r.target_new, lm.tokenizer))
        lp0 = patched_next_token_logprobs(lm, r.prompt, subj, hp.layers[-1], None)
        base_ranks.append(rank_objects(lp0, firsts, r.target_new, lm.tokenizer))
    hits = sum(x == 0 for x in ranks)
    lo, hi = metrics.wilson_ci(hits, len(ranks))
    b_hits = sum(x == 0 for x in base_ranks)
    return {"view": view, "attack": "target", "m": m, "n": len(ranks), "object_top1": hits / len(ranks),
            "object_top1_ci": [lo, hi], "object_top1_unpatched": b_hits / len(ranks),
            "chance_object_top1": 1 / len(firsts), "n_objects": len(firsts), "subject_top1": None,
            "subject_top5": None, "chance_top1": None, "judge_similarity": None, "random_baseline": None, **extra}
