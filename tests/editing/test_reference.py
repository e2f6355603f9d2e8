"""The engine against the independent reference MEMIT (tests/editing/reference_memit.py), float64, ≤ 1e-12.

collab over 1, 2 and 3 parties equals the reference's single-machine MEMIT of all requests, in both variants, on
both tiny architectures; the independent merges (ta, sa, ties) equal the reference run per party and merged.
Three context templates (bare + two prefixes) so that ½·bare + ½·mean(prefixed) differs from a plain mean.
``python tests/editing/mutation_check.py`` breaks the engine on purpose and checks that these tests fail.
"""

from __future__ import annotations

import pytest
import torch

from secure_collab.editing.hparams import DEFAULTS
from secure_collab.editing.memit import restore, run_edit, snapshot, split_parties
from secure_collab.editing.targets import compute_targets
from secure_collab.models.specs import down_weight
from tests.conftest import random_spd
from tests.editing import reference_memit as ref

TEMPLATES = ["{}", "Hello there. {}", "Once upon a time, long ago. {}"]
TOL = 1e-12
_CACHE: dict = {}


# a clamp that binds for some requests and not for others on each tiny model (checked below)
CLAMP = {"tiny-gpt2": 0.41, "tiny-llama": 0.17}


def _hp(lm, variant: str):
    return DEFAULTS[lm.name].with_(variant=variant, v_num_grad_steps=8, clamp_norm_factor=CLAMP[lm.name],
                                   request_batch=1)


def _ref_hp(hp) -> ref.RefHParams:
    return ref.RefHParams(hp.layers, hp.mom2_update_weight, hp.v_lr, hp.v_num_grad_steps, hp.v_loss_early_stop,
                          hp.v_weight_decay, hp.kl_factor, hp.clamp_norm_factor, hp.kl_prompt)


def _ref_requests(requests):
    return [ref.RefRequest(r.subject, r.prompt, r.target_new) for r in requests]


def _covs(lm, hp):
    d_k = down_weight(lm.model, lm.spec, 0).shape[1]
    return {layer: random_spd(d_k, layer) for layer in hp.layers}


def _reference(lm, requests, variant: str, party: tuple[int, int] | None = None):
    """Reference ΔW (cached per model, variant and request slice) and its targets."""
    key = (lm.name, variant, party)
    if key not in _CACHE:
        hp = _hp(lm, variant)
        reqs = requests if party is None else requests[party[0]:party[1]]
        _CACHE[key] = ref.memit(lm.model, lm.tokenizer, _ref_requests(reqs), TEMPLATES, _ref_hp(hp), _covs(lm, hp),
                                variant)
    return _CACHE[key]


def _engine(lm, parties, variant: str, method: str):
    hp = _hp(lm, variant)
    saved = snapshot(lm, hp.layers)
    try:
        return run_edit(lm, parties, hp, _covs(lm, hp), method, TEMPLATES)
    finally:
        restore(lm, saved)


def _assert_layers_close(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for layer in want:
        rel = float((got[layer] - want[layer]).norm() / want[layer].norm())
        assert rel <= TOL, f"layer {layer}: relative difference {rel:.2e} > {TOL:g}"


def test_targets_equal_reference(tiny, capitals):
    hp = _hp(tiny, "sequential")
    got = compute_targets(tiny, capitals, hp, TEMPLATES)
    _, want = _reference(tiny, capitals, "sequential")
    rel = (got.z - want).norm(dim=1) / want.norm(dim=1)
    assert float(rel.max()) <= TOL
    # the clamp ‖z − h‖ ≤ c‖h‖ binds for some requests and not all: both branches are exercised
    bound = hp.clamp_norm_factor * got.z_init.norm(dim=1)
    at_bound = ((got.z - got.z_init).norm(dim=1) - bound).abs() <= 1e-9 * bound
    assert 0 < int(at_bound.sum()) < len(capitals)


@pytest.mark.parametrize("variant", ["sequential", "oneshot"])
@pytest.mark.parametrize("n_parties", [1, 2, 3])
def test_collab_equals_reference_memit(tiny, capitals, variant, n_parties):
    want, _ = _reference(tiny, capitals, variant)
    got = _engine(tiny, split_parties(capitals, n_parties), variant, "collab")
    _assert_layers_close(got.deltas, want)


@pytest.mark.parametrize("variant", ["sequential", "oneshot"])
def test_independent_merges_equal_reference_per_party(tiny, capitals, variant):
    parties = split_parties(capitals, 3)
    bounds, s = [], 0
    for p in parties:
        bounds.append((s, s + len(p)))
        s += len(p)
    own = [_reference(tiny, capitals, variant, b)[0] for b in bounds]
    layers = sorted(own[0])
    merged = {"ta": {la: sum(d[la] for d in own) for la in layers},
              "sa": {la: sum(d[la] for d in own) / len(own) for la in layers},
              "ties": {la: ref.ties_merge([d[la] for d in own]) for la in layers}}
    for method, want in merged.items():
        got = _engine(tiny, parties, variant, method)
        _assert_layers_close(got.deltas, want)
        for mine, theirs in zip(got.party_deltas, own, strict=True):
            _assert_layers_close(mine, theirs)


def test_lockstep_differs_from_independent_only_in_sequential(tiny, capitals):
    parties = split_parties(capitals, 3)
    for variant in ("sequential", "oneshot"):
        ind = _engine(tiny, parties, variant, "ta").deltas
        lock = _engine(tiny, parties, variant, "ta-lockstep").deltas
        first, last = min(ind), max(ind)
        torch.testing.assert_close(lock[first], ind[first], rtol=1e-12, atol=0)  # same model at the first layer
        diff = float((lock[last] - ind[last]).norm() / ind[last].norm())
        if variant == "oneshot":
            assert diff <= 1e-12
        else:
            assert diff > 1e-6  # later layers see the merged update in lockstep, the party's own alone


# ---- the public inputs too: the corpus covariance and the context templates, each computed both ways

CORPUS = ["Paris is the capital and largest city of France.", "The Nile is a river in north-eastern Africa.",
          "Mount Everest is Earth's highest mountain above sea level.", "Tokyo is the capital of Japan.",
          "A violin is a wooden string instrument.", "Oslo is the capital of Norway, on its southern coast.",
          "Photosynthesis turns light into chemical energy in plants and algae."]


def test_corpus_covariance_equals_reference(tiny):
    """The engine's batched, padded, length-sorted, early-stopped pass over a corpus against a plain sum over
    every token, one text at a time (the whole corpus: the budget cut's order is a unit of its own)."""
    from secure_collab.covariance import accumulate_layer_moments

    layers = [1, 2]
    got, used = accumulate_layer_moments(tiny, layers, CORPUS, tokens=10**9, batch_size=3, max_seq_len=12,
                                         progress=False)
    assert used == sum(len(tiny.tokenizer(t, truncation=True, max_length=12)["input_ids"]) for t in CORPUS)
    for layer in layers:
        want = ref.covariance(tiny.model, tiny.tokenizer, layer, CORPUS, max_len=12)
        assert float((got[layer] - want).norm() / want.norm()) <= TOL


def test_generated_context_templates_equal_reference(tiny):
    """Template generation (prefixes, length, decoding, blanking, ". {}") against the reference, greedy (top_k=1),
    so that no random generator is shared."""
    from secure_collab.editing.templates import generate_context_templates

    got = generate_context_templates(tiny.model, tiny.tokenizer, n=6, length=4, seed=123, top_k=1)
    want = ref.greedy_templates(tiny.model, tiny.tokenizer, n=6, length=4)
    assert got == want and len(set(got)) > 2


@pytest.mark.parametrize("variant", ["sequential", "oneshot"])
def test_collab_from_corpus_covariance_and_generated_templates_equals_reference(tiny, capitals, variant):
    """End to end from public data: each side computes C from the corpus and the templates from the model its own
    way, then edits; ΔW agree to 1e-12 (C's own rounding difference is ~1e-16)."""
    from secure_collab.covariance import accumulate_layer_moments
    from secure_collab.editing.templates import generate_context_templates

    hp = _hp(tiny, variant)
    corpus = [f"{i} and {j}: {text}" for i in range(4) for j in range(3) for text in CORPUS]  # > d_k tokens: C is PD
    covs, _ = accumulate_layer_moments(tiny, hp.layers, corpus, tokens=10**9, batch_size=8, max_seq_len=24,
                                       progress=False)
    templates = generate_context_templates(tiny.model, tiny.tokenizer, n=2, length=4, seed=0, top_k=1)
    ref_covs = {layer: ref.covariance(tiny.model, tiny.tokenizer, layer, corpus, max_len=24) for layer in hp.layers}
    ref_templates = ref.greedy_templates(tiny.model, tiny.tokenizer, n=2, length=4)
    want, _ = ref.memit(tiny.model, tiny.tokenizer, _ref_requests(capitals), ref_templates, _ref_hp(hp), ref_covs,
                        variant)
    saved = snapshot(tiny, hp.layers)
    try:
        got = run_edit(tiny, split_parties(capitals, 2), hp, covs, "collab", templates)
    finally:
        restore(tiny, saved)
    _assert_layers_close(got.deltas, want)
