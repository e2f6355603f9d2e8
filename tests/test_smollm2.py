"""The embedded model end to end: GGUF conversion, real keys and targets, and an edit that takes."""

from __future__ import annotations

import pytest

from secure_collab.data.requests import Request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from secure_collab.models import load_model

    return load_model("smollm2-135m")


def test_embedded_model_is_llama_with_the_documented_sizes(smol):
    from secure_collab.models.specs import down_weight

    assert smol.spec.family == "llama"
    assert tuple(down_weight(smol.model, smol.spec, 3).shape) == (576, 1536)
    assert smol.model.config.num_hidden_layers == 30


def test_two_party_edit_of_capitals_takes_and_equals_global(smol, tmp_path):
    from secure_collab.covariance import layer_covariances
    from secure_collab.editing.hparams import DEFAULTS
    from secure_collab.editing.memit import rel_diff, restore, run_edit, snapshot
    from secure_collab.editing.templates import context_templates
    from secure_collab.evaluation import evaluate

    reqs = [Request(subject="France", prompt="The capital of {} is", target_new="Rome", target_true="Paris",
                    paraphrase_prompts=("The capital city of France is",)),
            Request(subject="Germany", prompt="The capital of {} is", target_new="Madrid", target_true="Berlin")]
    hp = DEFAULTS["smollm2-135m"].with_(mom2_tokens=4000, request_batch=1)
    covs = layer_covariances(smol, hp.layers, tokens=hp.mom2_tokens, cache=tmp_path, progress=False)
    templates = context_templates(smol, hp.n_templates, hp.template_length, hp.template_seed, tmp_path)
    pre = evaluate(smol, reqs)
    assert pre.efficacy == 0.0  # the model knows the true capitals
    saved = snapshot(smol, hp.layers)
    try:
        ref = run_edit(smol, [reqs], hp, covs, "global", templates)
        restore(smol, saved)
        collab = run_edit(smol, [reqs[:1], reqs[1:]], hp, covs, "collab", templates)
        post = evaluate(smol, reqs)
    finally:
        restore(smol, saved)
    assert post.efficacy == 1.0
    assert post.generalization == 1.0
    # one request per batch: each request's float32 arithmetic is the same in both runs
    assert rel_diff(collab.deltas, ref.deltas) <= 1e-9


def test_bundled_malmen_hypernetwork_edits_the_embedded_model(smol):
    """The hypernetwork shipped for SmolLM2 (docs/malmen.md): its file matches the digest it records, it was trained on
    these base weights, `--backend malmen` finds it without --hypernet, and a 3-party collab edit of capitals it never
    saw equals its Global-Edit and moves the edit prompts to the new objects."""
    import argparse
    import json

    import torch

    from secure_collab.cli.malmen import resolve_hypernet
    from secure_collab.editing.malmen.edit import run_malmen_edit
    from secure_collab.editing.malmen.net import bundled_hypernet, load_hypernet
    from secure_collab.editing.memit import rel_diff, restore, snapshot, split_parties
    from secure_collab.evaluation import evaluate

    path = bundled_hypernet("smollm2-135m")
    assert path is not None and bundled_hypernet("tiny-llama") is None
    recorded = json.loads((path / "hypernet.json").read_text())
    net = load_hypernet(path, recorded["digest"], torch.float32, smol.device, smol.source_digest)
    assert recorded["trained_for"] == smol.source_digest and net.digest() == recorded["digest"]
    args = argparse.Namespace(backend="malmen", hypernet=None, model="smollm2-135m")
    resolve_hypernet(args)
    assert args.hypernet == str(path)
    reqs = [Request(subject=s, prompt="The capital of {} is", target_new=new, target_true=old)
            for s, new, old in (("France", "Rome", "Paris"), ("Germany", "Madrid", "Berlin"),
                                ("Japan", "Cairo", "Tokyo"), ("Canada", "Lima", "Ottawa"),
                                ("Norway", "Athens", "Oslo"), ("Kenya", "Dublin", "Nairobi"))]
    pre = evaluate(smol, reqs).summary()
    saved = snapshot(smol, net.hp.layers)
    try:
        glob = run_malmen_edit(smol, [reqs], net, "global").deltas
        restore(smol, saved)
        collab = run_malmen_edit(smol, split_parties(reqs, 3), net, "collab").deltas
        post = evaluate(smol, reqs).summary()
    finally:
        restore(smol, saved)
    assert rel_diff(collab, glob) <= 1e-9
    assert pre["efficacy"] <= 0.5 and post["efficacy"] >= pre["efficacy"] + 0.3
