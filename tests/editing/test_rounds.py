"""Multi-round simulation: collab equals global for each update rule, round after round; the cross-round state
is Σ of earlier rounds' ΣG; targets are cached per model state (a later round's model gets new ones)."""

from __future__ import annotations

import stat

import pytest
import torch

from secure_collab.editing import target_cache
from secure_collab.editing.hparams import DEFAULTS
from secure_collab.editing.memit import rel_diff, restore, snapshot
from secure_collab.editing.rounds import CrossRound, run_rounds
from secure_collab.editing.rules import UPDATE_RULES
from secure_collab.models.specs import add_to_down_weight, down_weight
from tests.conftest import random_spd

TEMPLATES = ["{}", "Some text. {}"]


def _rounds(capitals):
    c = capitals
    return [[[c[0]], [c[1], c[2]]], [[c[3]], [c[4]]], [[c[5], c[6]], []]]


def _hp(tiny, rule, variant="sequential"):
    return DEFAULTS[tiny.name].with_(variant=variant, v_num_grad_steps=5, update_rule=rule,
                                     nullspace_threshold=0.8, alphaedit_l2=1.0, mom2_past_weight=2.0)


@pytest.mark.parametrize("variant", ["sequential", "oneshot"])
@pytest.mark.parametrize("rule", UPDATE_RULES)
def test_collab_equals_global_round_after_round(tiny, capitals, rule, variant):
    hp = _hp(tiny, rule, variant)
    dk = down_weight(tiny.model, tiny.spec, 0).shape[1]
    covs = {layer: random_spd(dk, layer) for layer in hp.layers}
    saved = snapshot(tiny, hp.layers)
    try:
        ref_state = CrossRound()
        ref = run_rounds(tiny, _rounds(capitals), hp, covs, TEMPLATES, method="global", state=ref_state)
        restore(tiny, saved)
        collab = run_rounds(tiny, _rounds(capitals), hp, covs, TEMPLATES, method="collab")
    finally:
        restore(tiny, saved)
    for r in range(3):
        assert rel_diff(collab[r].deltas, ref[r].deltas) <= 1e-9, (rule, r)
        assert all(d.norm() > 0 for d in ref[r].deltas.values())
    for layer in hp.layers:  # the state is the sum of every round's ΣG
        torch.testing.assert_close(ref_state.past_g[layer], sum(res.g_sums[layer] for res in ref),
                                   rtol=1e-12, atol=1e-12)


def test_the_rule_reads_the_past_only_from_round_one_on(tiny, capitals):
    dk = down_weight(tiny.model, tiny.spec, 0).shape[1]
    covs = {layer: random_spd(dk, layer) for layer in DEFAULTS[tiny.name].layers}
    saved = snapshot(tiny, covs)
    out = {}
    try:
        for rule in ("memit-static", "memit-dynamic"):
            out[rule] = run_rounds(tiny, _rounds(capitals)[:2], _hp(tiny, rule), covs, TEMPLATES)
            restore(tiny, saved)
    finally:
        restore(tiny, saved)
    assert rel_diff(out["memit-dynamic"][0].deltas, out["memit-static"][0].deltas) <= 1e-12  # no past yet
    assert rel_diff(out["memit-dynamic"][1].deltas, out["memit-static"][1].deltas) > 1e-3


def test_an_empty_round_changes_nothing(tiny, capitals):
    hp = _hp(tiny, "memit-dynamic")
    dk = down_weight(tiny.model, tiny.spec, 0).shape[1]
    covs = {layer: random_spd(dk, layer) for layer in hp.layers}
    saved = snapshot(tiny, hp.layers)
    state = CrossRound()
    try:
        res = run_rounds(tiny, [[[], []], [[capitals[0]], []]], hp, covs, TEMPLATES, state=state)
    finally:
        restore(tiny, saved)
    assert res[0].deltas == {} and res[0].g_sums == {}
    assert set(state.past_g) == set(hp.layers)


def test_targets_are_cached_per_model_state(tiny, capitals, tmp_path, monkeypatch):
    hp = DEFAULTS[tiny.name].with_(v_num_grad_steps=4, request_batch=1)
    calls = []
    real = target_cache.compute_targets

    def counting(lm, reqs, hp_, templates, progress=False):
        calls.append(len(reqs))
        return real(lm, reqs, hp_, templates, progress=progress)

    monkeypatch.setattr(target_cache, "compute_targets", counting)
    first = target_cache.cached_targets(tiny, capitals[:3], hp, TEMPLATES, cache=tmp_path)
    again = target_cache.cached_targets(tiny, capitals[:3], hp, TEMPLATES, cache=tmp_path)
    assert calls == [1, 1, 1]  # the second call read every target from the cache
    assert torch.equal(first.z, again.z) and first.steps == again.steps
    stored = list((tmp_path / "targets").rglob("*.safetensors"))
    assert len(stored) == 3  # private whatever the umask: z* follows from the request
    assert {stat.S_IMODE(f.stat().st_mode) for f in stored} == {0o600}
    assert {stat.S_IMODE(f.parent.stat().st_mode) for f in stored} == {0o700}
    layer = hp.layers[0]
    saved = snapshot(tiny, (layer,))
    w = down_weight(tiny.model, tiny.spec, layer)
    try:
        add_to_down_weight(tiny.model, tiny.spec, layer, 1e-3 * torch.ones(w.shape, dtype=torch.float64))
        edited = target_cache.cached_targets(tiny, capitals[:1], hp, TEMPLATES, cache=tmp_path)
    finally:
        restore(tiny, saved)
    assert calls == [1, 1, 1, 1]  # a changed model is a new key
    assert not torch.equal(edited.z[0], first.z[0])


def test_augmented_prompts_keep_the_fact_and_never_reuse_the_data_sets_paraphrases(tiny):
    from secure_collab.data.requests import Request
    from secure_collab.editing.augment import _template, augmented_requests

    r = Request(subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="English",
                paraphrase_prompts=("Danielle Darrieux spoke the language",), case_id="7")
    out = augmented_requests(tiny, r, 3, seed=1)
    assert len(out) == 3 and len({q.prompt for q in out}) == 3
    for q in out:
        assert q.subject == r.subject and q.target_new == r.target_new and q.prompt.count("{}") == 1
        assert q.prompt != r.prompt and q.case_id.startswith("7.aug") and q.paraphrase_prompts == ()
    assert augmented_requests(tiny, r, 3, seed=1) == out  # seeded
    assert _template("Danielle Darrieux's native language is", r) == "{}'s native language is"
    assert _template("Danielle Darrieux spoke the language", r) is None  # the data set's own paraphrase
    assert _template("Danielle Darrieux spoke English, as", r) is None  # gives the object away
    assert _template("Danielle Darrieux is called the Grand Hotel", r) is None  # does not stop before an object
