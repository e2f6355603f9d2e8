"""Decoy edits (``decoys:R``, party side): R public subjects per real edit, edited toward what the model already says.

A party with n real edits in a round adds R·n decoy edits to its statistics, and nothing else:
- subjects: ``defences.decoy_subjects`` (titles of the public covariance corpus) drawn by the party's CSPRNG, none of
  the party's own subjects; each with a prompt template drawn from the party's own requests' prompts, so a decoy's
  key sits where a real edit of the same relation would; admitted by a public rule (``draw_decoys``): the model is
  already sure of the answer, p(top-1) >= ``CONFIDENCE``, so the other edits' cross-talk does not change it (where
  the drawn candidates hold too few such subjects, the surest of the others: some relation prompts have none);
- target: the decoy's *current* top-1 next token on that prompt (the model as it is at the round's start). The
  target vector is z*_d = h_d + c_d · g_d/‖g_d‖, with h_d the output of the last edited layer at the subject's last
  token and g_d the gradient of log p(current answer) with respect to h_d: a step toward the answer the model already
  gives, so the decoy's top-1 stays (tested on a tiny model; the sweep counts the decoys whose answer changed);
- the step's length c_d is one of the party's own real residual norms ‖z*_j − h_j‖, drawn by the same generator.
  MEMIT's target optimisation would stop a decoy at once (its loss is already below the early stop) with a residual
  near zero, which gives no cover; with c_d drawn from the real norms a decoy's residual is as large as an edit's.

Then a decoy is a request like the others: its keys at each layer from the model as it is then, its residual at
layer i of L spread as (z*_d − h_d)/(L − i), and G += K_d K_dᵀ, B += R_d K_dᵀ. Decoys never leave the party as text:
no tag, no known-fact withholding, no dedupe, no verdict (they are added after the solver's decisions). They count as
edits in the N a party sends (N = (1 + R)·n), and the solver's expected count and bounds scale by (1 + R): R is a
session setting, public. What they hide is measured in docs/privacy.md: only the real edits change an answer.

The repair round. The other parties' edits reach a decoy through correlated keys and the shared relation prompts
(no party sees them before the release), and changed 2 of 900 and 8 of 2,700 decoy answers at R = 3 and 9 over the
sweep's 10 sessions. So a session with decoys (and the weights released) closes with one more round
(``SessionConfig.repair_round``): every party checks its decoys on the model the release left and, for each whose
drawn answer is now less likely than when drawn (``repairs``), adds a repair edit, the same subject and prompt
pushed back toward that answer by a step of its own length c_d, on the model as it now is; a party with none sends
zeros (with noise on, its noise), so the sums do not tell who repaired. The solver solves them against the earlier
rounds' ΣG (``repair_update``: the keys already edited hold about as firmly as an edit holds its own key). What it
gives away: the repair round's ΔW spans the repaired decoys' keys, so a holder of the weights can tell that those
subjects (a few per session) were pushed back, i.e. decoys; the answer check (docs/privacy.md) tells every decoy
apart from a real edit anyway.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.defences import DECOY_CONFIDENCE, DefenceError
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.keys import block_outputs
from secure_collab.editing.solve import solve_update
from secure_collab.editing.tokens import encode
from secure_collab.models.hooks import edit_output
from secure_collab.models.loading import LoadedModel
from secure_collab.models.specs import down_weight

ASCENT_STEPS = 4  # projected ascent steps on the sphere ‖δ‖ = c after the first gradient step
# The sampler's public rule (``draw_decoys``): a decoy is a subject on whose prompt the model is already sure of its
# answer, p(top-1) >= CONFIDENCE, so the cross-talk of the joint solve (the other edits' residuals reaching a decoy
# through keys correlated with theirs) does not change it. Measured on SmolLM2 at decoys:9 without the rule (2
# sessions, 540 decoys, by a one-off script over the sweep's sessions 0 and 3): 14 answers changed, each with p <= 0.65;
# none of the 60 with p >= 0.7. About 4 % of (title, relation prompt) pairs pass 0.9, so SCAN = 32 candidates per
# decoy are drawn, scored until enough pass. That is too few on some prompts: at decoys:9 8 of 2,700 decoy answers
# still changed over 10 sessions, and the two inspected (session 6) were fallbacks to the surest, p 0.69 and 0.83
# (that session's decoys had median p 0.69: on prompts such as "{} premieres on" far fewer titles pass). Tried: no
# fallback (one party of session 0 had 0 of 6,912 titles passing on its three prompts, so it could never take part);
# a scan of 256n (one sweep session ran over 37 minutes on a shared core, 8-15 before, nearly all of it scoring).
# Neither is the default; docs/privacy.md has the numbers. Tried too, and not the default: a second stage on the
# public ``SURE_PROMPTS`` (below; ``draw_decoys(..., sure=SURE_PROMPTS)``). It removed the draws below the floor (at
# decoys:1 212 of the sweep's 300 decoys had been below it: python benchmarks/decoy_rule_replay.py --ratios 1) but
# in the two sweep sessions run with it at decoys:9 (0 and 5) 0 and 6 decoy answers changed (1 and 1 with the rule
# as it is) and the damage on unedited public subjects rose to KL 0.77 and 0.83 (0.67 and 0.57). Tried last, and not
# kept: a hold, where the party solves its own edit alone with its decoys (``memit.own_edit_logprobs``) and keeps the 2n
# drawn decoys surest after it, replacing those below p 0.999. In the sweep's sessions 0, 5 and 6 the 4 decoys the
# joint release changed had p 0.07-0.994 under their party's edit alone; with the hold, session 1's 2 changed decoys
# had p 0.9997 and 0.9998 alone (python benchmarks/decoy_answers.py; benchmarks/results/decoy_answers/): what
# changes a decoy is the other parties' edits, which no party sees. Every changed decoy inspected (6) was one the rule
# took below its floor (p 0.54-0.83 when drawn), as were 76 % of all decoys there: weak evidence. Tried too (commit
# f36b0e0, reverted): decoy rows weighted 4× in G and B; session 6 at decoys:9 changed 3 (2 at weight 1), the same
# two plus one: the other parties' edits of the same relation move a prompt's function-word answer, not the decoy's fit.
CONFIDENCE = DECOY_CONFIDENCE  # the default of ``decoys:R@P``
# The repair round's solve reads the earlier rounds' ΣG with weight 1: the keys already edited hold about as firmly as
# an edit holds its own key (with λ, CollabEdit's weight, they would hold the weakened decoys' own keys too, which
# the repair must move).
REPAIR_PAST_WEIGHT = 1.0
SCAN = 32
SCORE_BATCH = 64
# The tried second stage's public relation prompts, all subject-first: a causal model's key at the subject's last
# token is computed before any word of the prompt after it, so on any of these a decoy's keys (what the span attacks
# see) are exactly those it has on a subject-first prompt of the party's own; only its residual's direction (toward
# the answer the model already gives) differs. Chosen as the three of CounterFact's subject-first relation templates
# on which SmolLM2 is most often sure (300 public titles, --seed 7: p(top-1) >= 0.9 for 20 %, 26 % and 0.7 % of
# titles, >= 0.7 for 91 %, 56 % and 64 %; 0-1 % on the other 22 measured; on 300 other titles, --seed 11: 17.7 %,
# 22.0 % and 0.7 %, and 35.3 % of titles pass on at least one: python benchmarks/decoy_prompts.py). What the model is
# sure of there is a function word (" of", " a"), not a fact: such a decoy keeps its answer by construction.
SURE_PROMPTS = ("{}, which has the capital city", "{} plays the instrument", "{} works as")


class DecoyError(DefenceError):
    """The public pool holds fewer subjects than the decoys a round needs (a setting to lower, not a fault)."""


@dataclass
class DecoyEdits:
    """One party's decoys for one round: requests (public subjects, never sent), targets at the last edited layer."""

    requests: list[Request]
    z: torch.Tensor  # (n_d, d_v) z*_d = h_d + c_d g_d / ‖g_d‖
    h: torch.Tensor  # (n_d, d_v) h_d: the decoy's state at the last edited layer when drawn
    norms: list[float]  # c_d: the real residual norm each decoy's step was given
    answers: list[int]  # the current top-1 token id of each decoy's prompt (what its edit pushes toward)
    p_drawn: list[float] = field(default_factory=list)  # p(answer) on the model the decoy was drawn on

    def __len__(self) -> int:
        return len(self.requests)

    @classmethod
    def empty(cls, d_v: int) -> DecoyEdits:
        return cls([], torch.zeros(0, d_v, dtype=torch.float64), torch.zeros(0, d_v, dtype=torch.float64), [], [])

    @classmethod
    def join(cls, parts: Sequence[DecoyEdits], d_v: int) -> DecoyEdits:
        """One party's decoys of several rounds as one (in round order)."""
        if not parts:
            return cls.empty(d_v)
        return cls([r for x in parts for r in x.requests], torch.cat([x.z for x in parts]),
                   torch.cat([x.h for x in parts]), [c for x in parts for c in x.norms],
                   [a for x in parts for a in x.answers], [p for x in parts for p in x.p_drawn])


def draw_decoys(rng: random.Random, ratio: int, own: Sequence[Request], exclude: Sequence[str] = (),
                score: Callable[[list[Request]], list[float]] | None = None, floor: float = CONFIDENCE,
                scan: int = SCAN, sure: Sequence[str] = ()) -> tuple[list[str], list[str], list[int]]:
    """(subjects, prompt templates, indices of the real edit whose residual norm each decoy takes): ``ratio`` decoys
    per request of ``own``, all drawn by ``rng``; subjects never one of ``exclude`` (the party's own subjects).

    The public rule: ``scan`` × n candidates (subject, one of ``own``'s prompts) are drawn in order (at most the whole
    public pool); with ``score`` (each candidate's current answer probability, ``answer_confidence``) the decoys are
    the first n in that order whose score is at least ``floor``, scored in batches only until n pass. When fewer
    pass, with ``sure`` (public prompts; default none, the tried ``SURE_PROMPTS`` is not the default: see above) a
    second stage: the scanned subjects that did not, in draw order, each on ``sure`` in order, the first (subject,
    prompt) that reaches ``floor`` taking the subject (scored in batches only until enough pass); and if still
    short, the highest-scoring of all the other scored pairs, one per subject (ties in draw order): a less sure
    decoy's answer may change. The generator is used in the first stage only, so where it fills the n decoys the
    second changes nothing. Without ``score``: the first n."""
    from secure_collab.editing.defences import decoy_subjects

    n = ratio * len(own)
    if n == 0:
        return [], [], []
    order = decoy_subjects(rng, scan * n, exclude=[*exclude, *(r.subject for r in own)])
    if len(order) < n:
        raise DecoyError(f"{n} decoys asked, the public pool has {len(order)} subjects")
    prompts = [own[rng.randrange(len(own))].prompt for _ in order]
    which = [rng.randrange(len(own)) for _ in range(n)]
    if score is None:
        return order[:n], prompts[:n], which
    scores: list[float] = []
    while len(scores) < len(order) and sum(x >= floor for x in scores) < n:
        part = range(len(scores), min(len(order), len(scores) + SCORE_BATCH))
        scores += score([Request(subject=order[i], prompt=prompts[i], target_new="-") for i in part])
    passed = [i for i, x in enumerate(scores) if x >= floor][:n]
    if len(passed) == n:
        return [order[i] for i in passed], [prompts[i] for i in passed], which
    # second stage: the subjects that did not pass, each on the public sure prompts (pairs in draw order)
    chosen = {i: prompts[i] for i in passed}
    pairs = [(i, p) for i in range(len(order)) if i not in chosen for p in sure]
    second: list[float] = []
    found = 0
    while len(second) < len(pairs) and len(chosen) + found < n:
        batch = pairs[len(second):len(second) + SCORE_BATCH]
        second += score([Request(subject=order[c], prompt=q, target_new="-") for c, q in batch])
        found = len({pairs[j][0] for j, x in enumerate(second) if x >= floor})
    best: dict[int, tuple[float, str]] = {i: (scores[i], prompts[i]) for i in range(len(scores)) if i not in chosen}
    for (i, p), x in zip(pairs, second, strict=False):
        if x >= floor and (i not in chosen) and len(chosen) < n:
            chosen[i] = p  # the first sure prompt of the first subjects that have one, in draw order
        elif i not in chosen and x > best.get(i, (-1.0, ""))[0]:
            best[i] = (x, p)
    if len(chosen) < n:  # the rest: the surest of the others (a stable sort keeps the draw order in ties)
        rest = sorted((i for i in best if i not in chosen), key=lambda i: -best[i][0])
        chosen.update({i: best[i][1] for i in rest[:n - len(chosen)]})
    keep = sorted(chosen)
    return [order[i] for i in keep], [chosen[i] for i in keep], which


def _answer_logprobs(lm: LoadedModel, b, rows: torch.Tensor, layer: int, delta: torch.Tensor) -> torch.Tensor:
    """(b, vocab) next-token log-probabilities after each prompt with ``delta`` added to the output of block
    ``layer`` at the subject's last token."""
    module = lm.model.get_submodule(lm.spec.block_name(layer))

    def add(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        h[rows, b.subject_last] = h[rows, b.subject_last] + delta.to(h.dtype)
        return h

    with edit_output(module, add):
        logits = lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False).logits
    return logits[rows, b.lengths - 1].double().log_softmax(-1)


def answer_steps(lm: LoadedModel, requests: list[Request], layer: int, norms: torch.Tensor, steps: int = ASCENT_STEPS,
                 batch: int = 16, answers: Sequence[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """(δ (n, d_v) float64 with ‖δ_d‖ = norms[d], top-1 ids): each prompt's current top-1 next token a_d (or the
    given ``answers``: a repair's, the answer its decoy had when drawn), and a
    step δ_d of the given length at the output of block ``layer`` (subject's last token) that raises log p(a_d):
    c_d times the unit gradient of log p(a_d) at δ = 0, then ``steps`` projected ascent steps on the sphere ‖δ‖ = c_d
    (δ ← c_d · unit(δ + c_d · unit(∇)), each kept only where it raises log p(a_d)), so a long step stays on it."""
    out, tops = [], []
    given = answers is not None
    d_v = int(down_weight(lm.model, lm.spec, layer).shape[0])  # the residual stream's width
    for s in range(0, len(requests), batch):
        chunk = requests[s:s + batch]
        c = norms[s:s + len(chunk)].double().to(lm.device)[:, None]  # (b, 1)
        b = encode(lm.tokenizer, [r.prompt for r in chunk], [r.subject for r in chunk], lm.device)
        rows = torch.arange(len(chunk), device=lm.device)
        top = torch.zeros(len(chunk), dtype=torch.long, device=lm.device)
        if answers is not None:
            top.copy_(torch.tensor(list(answers[s:s + len(chunk)]), dtype=torch.long))

        def at(delta: torch.Tensor, first: bool = False, b=b, rows=rows, top=top
               ) -> tuple[torch.Tensor, torch.Tensor]:
            """(log p(a_d) at δ, its gradient with respect to δ)."""
            with torch.enable_grad():
                x = delta.clone().requires_grad_(True)
                lp = _answer_logprobs(lm, b, rows, layer, x)
                if first and not given:
                    top.copy_(lp.detach().argmax(-1))  # the current answer: δ = 0
                score = lp[rows, top]
                score.sum().backward()
            return score.detach(), x.grad.detach()  # type: ignore[union-attr]

        def unit(v: torch.Tensor) -> torch.Tensor:
            return v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)

        _, g = at(torch.zeros(len(chunk), d_v, dtype=torch.float64, device=lm.device), first=True)
        delta = c * unit(g)
        best, g = at(delta)
        for _ in range(steps):
            cand = c * unit(delta + c * unit(g))
            score, g_cand = at(cand)
            better = score > best
            delta = torch.where(better[:, None], cand, delta)
            g = torch.where(better[:, None], g_cand, g)
            best = torch.where(better, score, best)
        out.append(delta.cpu())
        tops += top.tolist()
    return torch.cat(out), tops


def make_decoys(lm: LoadedModel, hp: MemitHParams, ratio: int, rng: random.Random, own: Sequence[Request],
                z_own: torch.Tensor, cur_own: torch.Tensor | None = None, exclude: Sequence[str] = (),
                confidence: float | None = None) -> DecoyEdits:
    """``ratio`` decoys per request of ``own`` (whose targets are ``z_own``, (n, d_v)) on the model as it is now,
    drawn by the public rule of ``draw_decoys`` with the model's answer probabilities as the score.
    ``cur_own``: h_j of ``own`` at the last edited layer now (``memit.current_outputs``; computed if None)."""
    names, prompts, which = draw_decoys(rng, ratio, own, exclude, score=lambda reqs: answer_confidence(lm, reqs),
                                        floor=CONFIDENCE if confidence is None else confidence)
    if not names:
        return DecoyEdits.empty(int(down_weight(lm.model, lm.spec, hp.layers[-1]).shape[0]))
    if cur_own is None:
        cur_own = block_outputs(lm, list(own), hp.layers[-1], hp.request_batch)
    real = (z_own.double().cpu() - cur_own.double().cpu()).norm(dim=1)  # (n,) the party's own residual norms
    return _decoy_targets(lm, hp, names, prompts, [float(real[j]) for j in which])


def _decoy_targets(lm: LoadedModel, hp: MemitHParams, names: Sequence[str], prompts: Sequence[str],
                   norms: list[float]) -> DecoyEdits:
    """The decoys' targets z*_d = h_d + δ_d (``answer_steps``, ‖δ_d‖ = ``norms[d]``) toward each prompt's current
    answer; each decoy's is computed on its own row, so it does not depend on the others drawn with it."""
    reqs = [Request(subject=n, prompt=p, target_new="-") for n, p in zip(names, prompts, strict=True)]
    c = torch.tensor(norms, dtype=torch.float64)
    step, answers = answer_steps(lm, reqs, hp.layers[-1], c)
    tok = lm.tokenizer
    reqs = [Request(subject=r.subject, prompt=r.prompt, target_new=tok.decode([a]).strip() or "-")
            for r, a in zip(reqs, answers, strict=True)]
    h = block_outputs(lm, reqs, hp.layers[-1], hp.request_batch).double().cpu()  # (n_d, d_v)
    return DecoyEdits(reqs, h + step, h, list(norms), answers, _answer_probs(lm, reqs, answers))


def _answer_probs(lm: LoadedModel, requests: Sequence[Request], answers: Sequence[int]) -> list[float]:
    """p(answers[d]) after each request's prompt, on the model as it is now."""
    lps = torch.cat(list(_next_token_logprobs(lm, requests))) if requests else torch.zeros(0, 1)
    return [float(lp[a].exp()) for lp, a in zip(lps, answers, strict=True)]


def repairs(lm: LoadedModel, hp: MemitHParams, decoys: DecoyEdits, most: int | None = None) -> DecoyEdits:
    """The decoys the release weakened, each as a repair edit on the model as it is now: those whose answer (the
    top-1 they were drawn with) is now less likely than when drawn, changed or not (a decoy one push from changing
    is repaired too: with the changed ones alone, a repair's own cross-talk changed another, SmolLM2 session 6 at
    decoys:9); each its subject and prompt pushed back toward that answer by a step of its own length c_d
    (``answer_steps`` with the drawn answers). Empty when none weakened. ``most``: at most this many, the most
    weakened (smallest p now / p drawn; a networked party's N may not pass its declared bound), in their order."""
    now = _answer_probs(lm, decoys.requests, decoys.answers) if len(decoys) else []
    bad = [i for i, (p, q) in enumerate(zip(now, decoys.p_drawn, strict=True)) if p < q]
    if most is not None and len(bad) > most:
        bad = sorted(sorted(bad, key=lambda i: now[i] / decoys.p_drawn[i])[:most])
    reqs = [decoys.requests[i] for i in bad]
    if not bad:
        return DecoyEdits.empty(int(down_weight(lm.model, lm.spec, hp.layers[-1]).shape[0]))
    norms = [decoys.norms[i] for i in bad]
    answers = [decoys.answers[i] for i in bad]
    step, _ = answer_steps(lm, reqs, hp.layers[-1], torch.tensor(norms, dtype=torch.float64), answers=answers)
    h = block_outputs(lm, reqs, hp.layers[-1], hp.request_batch).double().cpu()
    return DecoyEdits(reqs, h + step, h, norms, answers, [decoys.p_drawn[i] for i in bad])


def repair_update(b_sum: torch.Tensor, g_sum: torch.Tensor, cov: torch.Tensor, lam: float,
                  past_g: torch.Tensor | None) -> torch.Tensor:
    """ΔW of the decoys' repair round: ΣB (λC + ΣG + G_past)⁻¹, G_past the earlier rounds' ΣG (the simulation's and
    the solver's one formula, whatever the session's update rule)."""
    return solve_update(b_sum, g_sum, cov, lam, past_g=past_g, lam_past=REPAIR_PAST_WEIGHT)


@torch.no_grad()
def _next_token_logprobs(lm: LoadedModel, requests: Sequence[Request], batch: int = 32) -> Iterator[torch.Tensor]:
    """(b, vocab) float64 next-token log-probabilities after each request's prompt (its subject filled in), batch by
    batch, on the model as it is now."""
    for s in range(0, len(requests), batch):
        chunk = list(requests[s:s + batch])
        b = encode(lm.tokenizer, [r.prompt for r in chunk], [r.subject for r in chunk], lm.device)
        logits = lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False).logits
        yield logits[torch.arange(len(chunk), device=lm.device), b.lengths - 1].double().log_softmax(-1).cpu()


def top1(lm: LoadedModel, requests: Sequence[Request], batch: int = 32) -> list[int]:
    """The model's top-1 next token after each request's prompt (its subject filled in), as it is now."""
    return [int(i) for lp in _next_token_logprobs(lm, requests, batch) for i in lp.argmax(-1)]


def answer_confidence(lm: LoadedModel, requests: Sequence[Request], batch: int = 32) -> list[float]:
    """The probability of the model's top-1 next token after each request's prompt, as it is now (the score of the
    decoy sampler's rule)."""
    return [float(x) for lp in _next_token_logprobs(lm, requests, batch) for x in lp.max(-1).values.exp()]
