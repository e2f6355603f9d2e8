"""Decoy edits (``decoys:R``, secure_collab.editing.decoys): the setting's text, the residual-norm rule, that no decoy's
top-1 answer changes, the statistics against the formula in float64, and that decoys never reach the wire's text."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import random_spd

from secure_collab.editing.defences import Defence, DefenceError, parse_defence


def test_decoys_parse_combine_and_count_as_edits():
    d = parse_defence("decoys:3")
    assert d == Defence(decoys=3) and d.spec() == "decoys:3" and not d.none and d.edit_factor == 4
    both = parse_defence("camouflage:2+decoys:9+rank:5")
    assert both == Defence(2.0, 5, decoys=9) and parse_defence(both.spec()) == both
    assert both.spec() == "camouflage:2+decoys:9+rank:5"
    assert Defence().edit_factor == 1
    sure = parse_defence("decoys:3@0.5")  # the floor of the sampler's rule, public like R
    assert sure == Defence(decoys=3, decoy_floor=0.5) and sure.spec() == "decoys:3@0.5"
    assert parse_defence("decoys:3@0.9") == d
    for bad in ("decoys", "decoys:0", "decoys:-1", "decoys:1.5", "decoys:101", "decoys:2+decoys:3", "decoys:2@",
                "decoys:2@1.5", "decoys:2@-0.1", "decoys:2@x", "decoys:@0.5", "decoys:2@nan"):
        with pytest.raises(DefenceError, match="bad defence"):
            parse_defence(bad)


def _setup(tiny):
    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.models.specs import n_layers

    hp = default_hparams(tiny.name, n_layers(tiny.model, tiny.spec)).with_(v_num_grad_steps=4)
    templates = context_templates(tiny, hp.n_templates, hp.template_length, hp.template_seed)
    return hp, templates


def test_decoys_are_public_subjects_with_residuals_drawn_from_the_partys_own_norms(tiny, capitals):
    from secure_collab.editing.decoys import answer_confidence, draw_decoys, make_decoys
    from secure_collab.editing.memit import current_outputs
    from secure_collab.editing.targets import compute_targets

    hp, templates = _setup(tiny)
    own = capitals[:3]
    t = compute_targets(tiny, own, hp, templates)
    cur = current_outputs(tiny, own, hp).double()
    real = (t.z.double() - cur).norm(dim=1)
    d = make_decoys(tiny, hp, 2, random.Random(5), own, t.z, confidence=0.0)  # a tiny random model is never sure
    assert len(d) == 6 and not {r.subject for r in d.requests} & {r.subject for r in own}
    names, prompts, which = draw_decoys(random.Random(5), 2, own,  # the same draws, in the documented order
                                        score=lambda reqs: answer_confidence(tiny, reqs), floor=0.0)
    assert [r.subject for r in d.requests] == names and [r.prompt for r in d.requests] == prompts
    assert {r.prompt for r in d.requests} <= {r.prompt for r in own}
    # the rule: ‖z*_d − h_d‖ is the drawn real residual norm, exactly (float64), and h_d is the decoy's state now
    assert torch.allclose((d.z - d.h).norm(dim=1), real[which], rtol=1e-10, atol=0)
    assert torch.allclose(d.h, current_outputs(tiny, d.requests, hp).double(), rtol=0, atol=1e-10)
    assert float(real.min()) > 0  # a real cover, not MEMIT's early-stopped zero
    assert make_decoys(tiny, hp, 3, random.Random(5), [], t.z[:0], confidence=0.0).requests == []


def test_the_sampler_rule_takes_sure_answers_in_draw_order_then_the_surest(capitals):
    """draw_decoys' public rule against a score computed here: the first n candidates (in the generator's order) whose
    score passes the floor; scoring stops once n pass; when fewer pass among the scanned ones, the rest are the
    highest-scoring of the others."""
    from secure_collab.editing.decoys import SCORE_BATCH, DecoyError, draw_decoys

    own = capitals[:3]
    scored: list[str] = []

    def score(reqs):  # a public, deterministic score of each candidate
        scored.extend(r.subject for r in reqs)
        return [(sum(map(ord, r.subject + r.prompt)) % 97) / 96 for r in reqs]

    def expected(floor, scan):
        rng = random.Random(7)
        from secure_collab.editing.defences import decoy_subjects

        order = decoy_subjects(rng, scan * 6, exclude=[r.subject for r in own])
        prompts = [own[rng.randrange(3)].prompt for _ in order]
        which = [rng.randrange(3) for _ in range(6)]
        s = [(sum(map(ord, n + p)) % 97) / 96 for n, p in zip(order, prompts, strict=True)]
        return order, prompts, which, s

    order, prompts, which, s = expected(0.9, 32)
    names, got_prompts, got_which = draw_decoys(random.Random(7), 2, own, score=score, floor=0.9, scan=32)
    want = [i for i, x in enumerate(s) if x >= 0.9][:6]
    assert len(want) == 6 and names == [order[i] for i in want] and got_prompts == [prompts[i] for i in want]
    assert got_which == which
    assert len(scored) == min(len(order), -(-(want[-1] + 1) // SCORE_BATCH) * SCORE_BATCH)  # stopped once 6 passed
    # too few pass among the scanned candidates, and no second stage (the default: no sure prompts): those that
    # pass, then the surest of the rest, in draw order, after scoring every one of them
    order, prompts, _, s = expected(0.9, 2)
    assert 0 < sum(x >= 0.9 for x in s) < 6
    scored.clear()
    names, _, _ = draw_decoys(random.Random(7), 2, own, score=score, floor=0.9, scan=2)
    assert scored == order
    assert names == [order[i] for i in sorted(sorted(range(len(s)), key=lambda i: -s[i])[:6])]
    # the tried second stage (not the default, secure_collab/editing/decoys.py): the subjects that did not pass, in
    # draw order, each on the sure prompts in order; the first prompt at the floor takes the subject; scoring stops
    # once enough pass
    sure = ("{} is", "{} was", "{} has", "{} had", "{} will")
    order, prompts, _, s = expected(0.9, 4)

    def h(name, prompt):
        return (sum(map(ord, name + prompt)) % 97) / 96

    first = [i for i, x in enumerate(s) if x >= 0.9]
    want = {i: prompts[i] for i in first}
    for i in range(len(order)):
        for p in sure:
            if i not in want and len(want) < 6 and h(order[i], p) >= 0.9:
                want[i] = p
    assert len(want) == 6 and len(want) > len(first)
    scored.clear()
    names, got_prompts, _ = draw_decoys(random.Random(7), 2, own, score=score, floor=0.9, scan=4, sure=sure)
    assert names == [order[i] for i in sorted(want)] and got_prompts == [want[i] for i in sorted(want)]
    assert set(got_prompts) - {r.prompt for r in own} <= set(sure)
    pairs = [(i, p) for i in range(len(order)) if i not in first for p in sure]
    last = max(i for i in want if i not in first)  # the pair that filled the sixth place, then no more scoring
    filled = pairs.index((last, want[last])) + 1
    assert len(scored) == len(order) + min(-(-filled // SCORE_BATCH) * SCORE_BATCH, len(pairs))
    # a floor nothing reaches, on any prompt: the surest of every scored pair, one per subject, with its prompt
    names, got_prompts, _ = draw_decoys(random.Random(7), 2, own, score=score, floor=1.01, scan=4, sure=sure)
    best = {i: max([(s[i], prompts[i])] + [(h(order[i], p), p) for p in sure], key=lambda t: t[0])
            for i in range(len(order))}  # max keeps the first of equal scores: the own prompt, then sure's order
    top = sorted(sorted(best, key=lambda i: -best[i][0])[:6])
    assert names == [order[i] for i in top] and got_prompts == [best[i][1] for i in top]
    # a pool smaller than the decoys asked: refused
    with pytest.raises(DecoyError, match="the public pool has"):
        draw_decoys(random.Random(7), 10**6, own, score=score)
    # without a score: the first n drawn
    names, _, _ = draw_decoys(random.Random(7), 2, own, scan=32)
    assert names == expected(0.9, 32)[0][:6]


def test_decoy_statistics_are_the_formula_in_float64(tiny, capitals):
    """party_layer_stats with decoys = Σ over real and decoy rows of w k kᵀ and w r kᵀ, the decoys' keys and
    residuals (z*_d − h_d)/(L − i) computed here independently."""
    from secure_collab.editing.decoys import make_decoys
    from secure_collab.editing.keys import compute_keys
    from secure_collab.editing.memit import current_outputs, party_layer_stats
    from secure_collab.editing.targets import compute_targets

    hp, templates = _setup(tiny)
    own = capitals[:2]
    t = compute_targets(tiny, own, hp, templates)
    d = make_decoys(tiny, hp, 3, random.Random(1), own, t.z, confidence=0.0)
    w = torch.tensor([0.5, 1.0], dtype=torch.float64)
    for i, layer in enumerate(hp.layers):
        got = party_layer_stats(tiny, own, t.z, layer, hp, templates, weights=w, decoys=d)
        spread = len(hp.layers) - i
        k = compute_keys(tiny, own, layer, templates).double()
        r = (t.z.double() - current_outputs(tiny, own, hp).double()) / spread
        kd = compute_keys(tiny, d.requests, layer, templates).double()
        rd = (d.z - d.h) / spread
        g = (k.T * w) @ k + kd.T @ kd
        b = (r.T * w) @ k + rd.T @ kd
        assert torch.allclose(got.g, g, rtol=1e-10, atol=1e-12) and torch.allclose(got.b, b, rtol=1e-10, atol=1e-12)


def test_no_decoy_answer_changes_under_its_target_nor_after_a_session_of_decoys(tiny, capitals):
    """A decoy's z*_d, patched in at the last edited layer, keeps its top-1 and raises its log-probability; a session
    whose real edits have zero residuals (so only the decoys move the model) changes no decoy's top-1. (With real
    residuals a tiny random model's answers move under any edit's cross-talk, decoys or not: the count of decoys
    whose answer changed is measured on SmolLM2 by the defence sweep.)"""
    from secure_collab.editing.decoys import _answer_logprobs, make_decoys, top1
    from secure_collab.editing.memit import current_outputs, restore, run_edit, snapshot, split_parties
    from secure_collab.editing.targets import TargetResult, compute_targets
    from secure_collab.editing.tokens import encode
    from secure_collab.models.specs import down_weight

    hp, templates = _setup(tiny)
    parties = split_parties(capitals[:6], 3)
    t = compute_targets(tiny, parties[0], hp, templates)
    d = make_decoys(tiny, hp, 3, random.Random(0), parties[0], t.z, confidence=0.0)
    b = encode(tiny.tokenizer, [r.prompt for r in d.requests], [r.subject for r in d.requests], tiny.device)
    rows = torch.arange(len(d))
    after = _answer_logprobs(tiny, b, rows, hp.layers[-1], d.z - d.h)
    before = _answer_logprobs(tiny, b, rows, hp.layers[-1], torch.zeros_like(d.h))
    answers = torch.tensor(d.answers)
    assert torch.equal(after.argmax(-1), answers) and torch.equal(before.argmax(-1), answers)
    assert bool((after[rows, answers] > before[rows, answers]).all())

    dk = down_weight(tiny.model, tiny.spec, hp.layers[0]).shape[1]
    covs = {layer: random_spd(dk, layer) for layer in hp.layers}
    still = []
    for p in parties:
        h = current_outputs(tiny, p, hp).double()
        still.append(TargetResult(h, h, [0.0] * len(p), [0.0] * len(p), [0] * len(p)))
    saved = snapshot(tiny, hp.layers)
    try:
        out = run_edit(tiny, parties, hp, covs, "collab", templates, targets=still, defence=parse_defence("decoys:3@0"),
                       rngs=[random.Random(i) for i in range(3)])
        decoys = [r for x in out.decoys for r in x.requests]
        want = [a for x in out.decoys for a in x.answers]
        assert len(decoys) == 18 and any(float(x.abs().max()) > 0 for x in out.deltas.values())
        assert top1(tiny, decoys) == want
    finally:
        restore(tiny, saved)
    assert top1(tiny, decoys) == want  # the answers recorded are the unedited model's


def test_a_networked_partys_decoys_count_in_n_and_never_reach_tags_or_withholding(tiny, capitals, monkeypatch):
    """PartyEditor with decoys:R: N = (1 + R)·n, the tag inputs and the withheld ids are the real requests' only."""
    from types import SimpleNamespace

    import parties.engine as engine
    from secure_collab.editing.decoys import DecoyEdits

    hp, templates = _setup(tiny)
    ed = engine.PartyEditor.__new__(engine.PartyEditor)
    ed.s = SimpleNamespace(known_residual=0.0, dedupe=True, d_k=1, d_v=1, variant="sequential", repair_round=1)
    ed.lm, ed.hp, ed.templates, ed.log, ed.progress = tiny, hp, templates, lambda _m: None, False
    ed.rounds, ed.requests = [capitals[:3]], capitals[:3]
    ed.plan, ed.withheld, ed.targets, ed.weights, ed.oneshot_cur, ed.verdicts = {}, {}, {}, {}, {}, {}
    ed.compute_seconds, ed.target_cache, ed.cache = 0.0, False, None
    ed.camouflage, ed.noise = None, None
    ed.decoy_ratio, ed.decoy_floor, ed.decoy_rng, ed.decoys = 2, 0.0, random.Random(0), {}
    from secure_collab.parallel import SINGLE

    ed.shard = SINGLE  # one process (decoys are refused with several workers)
    tags = ed.tag_inputs(0)
    out = ed.compute_statistics(0, hp.layers[0])
    assert out["N"] == 9 and len(tags) == 3
    made = ed.decoys[0]
    assert isinstance(made, DecoyEdits) and len(made) == 6
    names = {r.subject for r in made.requests}
    text = repr(tags) + repr(ed.withheld) + repr({k: v for k, v in out.items() if k == "N"})
    assert not any(n in text for n in names)
    again = ed.compute_statistics(0, hp.layers[-1])  # the round's decoys are drawn once
    assert again["N"] == 9 and ed.decoys[0] is made


def test_a_party_that_cannot_draw_its_decoys_stops_with_the_reason_and_nothing_else_is_caught():
    """A pool too small for decoys:R (``DecoyError``) stops that party with a one-line reason (the session goes on
    without it); any other error is not turned into that refusal."""
    from parties.client import Fatal, Party
    from secure_collab.editing.decoys import DecoyError

    party = Party.__new__(Party)

    def refuse(round_, layer):
        raise DecoyError("2700 decoys asked, the public pool has 10031 subjects")

    party.compute = refuse
    with pytest.raises(Fatal, match=r"^round 0 layer 4: 2700 decoys asked, the public pool has 10031"):
        party._compute(0, 4, "round 0 layer 4")
    party.compute = lambda round_, layer: 1 / 0
    with pytest.raises(ZeroDivisionError):
        party._compute(0, 4, "round 0 layer 4")
    party.compute = lambda round_, layer: {"N": np.array([3.0])}
    assert party._compute(0, 4, "round 0 layer 4")["N"][0] == 3.0


def test_a_subject_first_prompt_leaves_a_decoys_keys_unchanged(tiny, capitals):
    """The tried second stage of the rule moves a decoy to one of SURE_PROMPTS: on the subject-first prompts its keys at
    every edited layer are the same floats (computed before any word after the subject); a prompt with words before
    the subject gives other keys (so the claim is not vacuous)."""
    from secure_collab.data.requests import Request
    from secure_collab.editing.decoys import SURE_PROMPTS
    from secure_collab.editing.keys import compute_keys

    hp, templates = _setup(tiny)
    assert all(p.startswith("{}") for p in SURE_PROMPTS)
    subjects = [r.subject for r in capitals[:3]]
    for layer in hp.layers:
        keys = [compute_keys(tiny, [Request(subject=s, prompt=p, target_new="-") for s in subjects], layer, templates)
                for p in (*SURE_PROMPTS, "{} is the home of")]
        for k in keys[1:]:
            assert torch.equal(k, keys[0])
        other = compute_keys(tiny, [Request(subject=s, prompt="The capital of {} is", target_new="-")
                                    for s in subjects], layer, templates)
        assert not torch.allclose(other, keys[0])


def test_a_partys_own_edit_with_its_decoys_is_its_collab_edit_with_the_decoys_as_requests(tiny, capitals):
    """own_edit_logprobs (what benchmarks/decoy_answers.py compares with the joint release): the decoys' answer
    probabilities after the party's edit alone equal those after run_edit (collab, the party alone) with the decoys
    given as ordinary requests toward their z*; the model is restored."""
    from secure_collab.editing.decoys import _next_token_logprobs, make_decoys
    from secure_collab.editing.memit import own_edit_logprobs, restore, run_edit, snapshot
    from secure_collab.editing.targets import TargetResult, compute_targets
    from secure_collab.models.specs import down_weight

    hp, templates = _setup(tiny)
    own = capitals[:2]
    t = compute_targets(tiny, own, hp, templates)
    d = make_decoys(tiny, hp, 2, random.Random(3), own, t.z, confidence=0.0)
    dk = down_weight(tiny.model, tiny.spec, hp.layers[0]).shape[1]
    covs = {layer: random_spd(dk, layer + 7) for layer in hp.layers}
    saved = snapshot(tiny, hp.layers)
    got = [float(lp[a].exp()) for lp, a in zip(own_edit_logprobs(tiny, hp, covs, templates, own, t.z, d), d.answers,
                                                strict=True)]
    assert all(torch.equal(down_weight(tiny.model, tiny.spec, la), w) for la, w in saved.items())
    z = torch.cat([t.z.double(), d.z])
    n = len(own) + len(d)
    try:
        run_edit(tiny, [[*own, *d.requests]], hp, covs, "collab", templates,
                 targets=[TargetResult(z, z, [0.0] * n, [0.0] * n, [0] * n)])
        lps = torch.cat(list(_next_token_logprobs(tiny, d.requests)))
    finally:
        restore(tiny, saved)
    want = [float(lp[a].exp()) for lp, a in zip(lps, d.answers, strict=True)]
    assert np.allclose(got, want, rtol=1e-6, atol=1e-9)
    unedited = torch.cat(list(_next_token_logprobs(tiny, d.requests)))
    assert not np.allclose(got, [float(lp[a].exp()) for lp, a in zip(unedited, d.answers, strict=True)])



def test_the_repair_round_is_the_formula_on_the_decoys_the_release_weakened(tiny, capitals):
    """decoys:R's closing round (the simulation; the networked one is compared with it in
    tests/network/test_defences_session.py), oneshot: each party's repairs are exactly its decoys whose drawn answer
    is less likely after the first round than when drawn, and the repair round's ΔW at every layer is
    R Kᵀ (λC + K Kᵀ + ΣG₀)⁻¹ over the repair rows (keys at that layer and residuals (z − h)/(L − i) on the model the
    first round left; ΣG₀ the first round's keys, real and decoy, on the unedited model), recomputed here in float64
    with a general solve. (Whether a repair restores an answer is measured on SmolLM2: on a tiny random model the
    cross-talk between repairs is as large as the pushes.)"""
    from secure_collab.editing.decoys import _answer_probs, repairs
    from secure_collab.editing.keys import block_outputs, compute_keys
    from secure_collab.editing.memit import restore, run_edit, snapshot, split_parties
    from secure_collab.models.specs import add_to_down_weight, down_weight

    hp, templates = _setup(tiny)
    hp = hp.with_(variant="oneshot")
    parties = split_parties(capitals[:6], 3)
    dk = down_weight(tiny.model, tiny.spec, hp.layers[0]).shape[1]
    covs = {layer: random_spd(dk, layer) for layer in hp.layers}
    lam = hp.mom2_update_weight
    saved = snapshot(tiny, hp.layers)
    try:
        out = run_edit(tiny, parties, hp, covs, "collab", templates, defence=parse_defence("decoys:2@0"),
                       rngs=[random.Random(i) for i in range(3)])
        restore(tiny, saved)
        g0 = {layer: sum(compute_keys(tiny, [*p, *d.requests], layer, templates, 8).double().T
                         @ compute_keys(tiny, [*p, *d.requests], layer, templates, 8).double()
                         for p, d in zip(parties, out.decoys, strict=True)) for layer in hp.layers}
        for layer in hp.layers:  # the first round alone
            add_to_down_weight(tiny.model, tiny.spec, layer, out.deltas[layer] - out.repair_deltas[layer])
        first = [_answer_probs(tiny, d.requests, d.answers) for d in out.decoys]
        fixes = [repairs(tiny, hp, d) for d in out.decoys]
        k = max(range(len(fixes)), key=lambda j: len(fixes[j]))  # a party's cap (its N's bound): the most weakened
        capped = repairs(tiny, hp, out.decoys[k], most=1)
        worst = min(range(len(first[k])), key=lambda i: first[k][i] / out.decoys[k].p_drawn[i])
        assert len(fixes[k]) > 1 and [r.subject for r in capped.requests] == [out.decoys[k].requests[worst].subject]
        reqs = [r for f in fixes for r in f.requests]
        z = torch.cat([f.z for f in fixes])
        h = block_outputs(tiny, reqs, hp.layers[-1], 8).double()
        want = {}
        for i, layer in enumerate(hp.layers):
            k = compute_keys(tiny, reqs, layer, templates, 8).double()  # (n, d_k)
            r = (z - h) / (len(hp.layers) - i)  # (n, d_v)
            a = lam * covs[layer].double() + k.T @ k + g0[layer]
            want[layer] = torch.linalg.solve(a, (r.T @ k).T).T
    finally:
        restore(tiny, saved)
    weakened = [[i for i, (p, q) in enumerate(zip(f, d.p_drawn, strict=True)) if p < q]
                for f, d in zip(first, out.decoys, strict=True)]
    assert out.repaired == [len(w) for w in weakened] == [len(f) for f in fixes] and sum(out.repaired) > 0
    assert [r.subject for f in fixes for r in f.requests] == [d.requests[i].subject for w, d in
                                                            zip(weakened, out.decoys, strict=True) for i in w]
    for layer in hp.layers:
        got = out.repair_deltas[layer]
        assert float((got - want[layer]).norm() / want[layer].norm()) < 1e-9, layer


def test_decoys_close_a_weights_release_with_a_repair_round_that_the_limits_count():
    """With decoys:R and the weights released the session's steps run one round more (``repair_round`` = rounds,
    every layer), counted against the wire's round and step limits; without decoys, or with a served release (no
    party holds the edited model to check its decoys), there is none."""
    from dataclasses import replace

    from secure_collab.config import NetworkConfig, SessionConfig, _validate
    from secure_collab.errors import ConfigError
    from secure_collab.protocol import messages as wire

    base = SessionConfig(id="s1", mode="plain", layers=(1, 2), d_k=6, d_v=4, rounds=2)
    net = NetworkConfig(coordinator_bind="tcp://127.0.0.1:1", coordinator_endpoint="tcp://127.0.0.1:1")
    with_decoys = replace(base, defence="camouflage:1+decoys:2")
    assert (base.repair_round, base.protocol_rounds) == (None, 2)
    assert (with_decoys.repair_round, with_decoys.protocol_rounds) == (2, 3)
    assert with_decoys.steps()[-2:] == [(2, (1,)), (2, (2,))] and len(with_decoys.steps()) == 6
    served = replace(with_decoys, release="served", variant="oneshot", rounds=1)
    assert (served.repair_round, served.protocol_rounds) == (None, 1)
    most = replace(base, layers=(1,), rounds=wire.MAX_STEPS)  # the most steps a session may have
    _validate(most, net)
    with pytest.raises(ConfigError, match="repair round is one more"):
        _validate(replace(most, defence="decoys:2"), net)
