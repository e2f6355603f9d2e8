"""The black-box floor with relation prompts (attacks.floor): its fast path against the plain forward pass, its
cache, the relation templates it is given, the cascade, and the sweep's rows."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import pytest
import torch

from attacks import floor as fl
from attacks.candidates import relation_templates
from attacks.target import model_shift_scores, next_token_logprobs
from secure_collab.cli import main
from secure_collab.data.requests import Request
from secure_collab.editing.memit import restore, snapshot
from secure_collab.models.loading import load_model

PROMPTS = ["France", "The capital of Germany is", "x", "Mount Everest, the highest mountain in the world, is in",
           "Paris is the capital of", "a b c d e f g h"]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_last_hidden_through_the_head_is_the_plain_forward_pass_in_input_order(name):
    lm = load_model(name, dtype="float32")
    want = next_token_logprobs(lm, PROMPTS, batch=4)  # the model's own logits, right-padded, input order
    got = fl.logprobs_from_hidden(lm, fl.last_hidden(lm, PROMPTS, batch=4))
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4


def _edited(lm, scale: float = 0.5) -> dict[int, torch.Tensor]:
    from secure_collab.models.specs import down_weight

    gen = torch.Generator().manual_seed(3)
    out = {}
    for layer in (1,):
        w = down_weight(lm.model, lm.spec, layer)
        out[layer] = w.detach().clone() + scale * torch.randn(w.shape, generator=gen, dtype=w.dtype)
    return out


def test_template_scores_equal_a_direct_kl_and_are_cached_and_shared_from_both_ends(tmp_path, monkeypatch):
    lm = load_model("tiny-llama", dtype="float32")
    names = ["Alpha", "Beta Gamma", "Delta", "Epsilon Zeta Eta", "Theta"]
    templates = ["{} is in", "The capital of {} is", "{}"]
    edited = _edited(lm)
    floor = fl.TemplateFloor(lm, names, templates, cache=tmp_path, chunk=2, say=lambda _m: None)
    got = floor.scores(edited)
    # independent: the plain forward pass of both models and the KL of the model's own log-probabilities
    prompts = [t.format(n) for n in names for t in templates]
    base = next_token_logprobs(lm, prompts, batch=3)
    saved = snapshot(lm, tuple(edited))
    from attacks.session_views import _load

    _load(lm, edited)
    after = next_token_logprobs(lm, prompts, batch=3)
    restore(lm, saved)
    want = model_shift_scores(after.double(), base.double()).view(len(names), len(templates))
    assert got.shape == (5, 3)
    assert torch.allclose(got.double(), want, rtol=1e-3, atol=1e-5)
    assert (want > 1e-4).all()  # the edit moved every answer a little: the comparison is not of zeros
    # the model is restored, and a second walk, from the other end, computes nothing: every chunk is on disk
    assert torch.equal(lm.model.state_dict()[next(iter(lm.model.state_dict()))],
                       load_model("tiny-llama", dtype="float32").model.state_dict()[
                           next(iter(lm.model.state_dict()))])
    calls = []
    monkeypatch.setattr(fl, "last_hidden", lambda *a, **k: calls.append(a) or torch.zeros(0))
    again = fl.TemplateFloor(lm, names, templates, cache=tmp_path, chunk=2, reverse=True, say=lambda _m: None)
    assert torch.equal(again.scores(edited), got) and not calls
    # some rows only (the cascade's shortlist): the same values, in the order asked
    sub = fl.TemplateFloor(lm, names, templates, cache=tmp_path / "sub", chunk=2, say=lambda _m: None)
    monkeypatch.undo()
    assert torch.allclose(sub.scores(edited, [4, 0, 2]), got[[4, 0, 2]], rtol=1e-4, atol=1e-6)
    # other weights are another session: nothing of the first is reused for them (the public states are)
    other = {k: v + 0.1 for k, v in edited.items()}
    monkeypatch.undo()
    assert not torch.equal(fl.TemplateFloor(lm, names, templates, cache=tmp_path, chunk=2,
                                            say=lambda _m: None).scores(other), got)
    files = [p for p in tmp_path.rglob("*.safetensors")]
    assert files and all(p.stat().st_mode & 0o077 == 0 for p in files)


def _req(case: int, subject: str, prompt: str, relation: str) -> Request:
    return Request(prompt=prompt, subject=subject, target_new="x", target_true="y", relation=relation,
                   case_id=str(case))


def test_relation_templates_take_each_relations_most_used_prompt_outside_the_report_set():
    records = [_req(0, "A", "{} is in", "P1"), _req(1, "B", "{} is in", "P1"), _req(2, "C", "{} lies in", "P1"),
               _req(3, "D", "{} speaks", "P2"), _req(4, "E", "The mother tongue of {} is", "P2"),
               _req(5, "F", "The mother tongue of {} is", "P2"), _req(6, "G", "{} works for", "P3")]
    # record 6 is in the report set: its relation's only prompt is not public
    assert relation_templates(records, [records[6]]) == ["{} is in", "The mother tongue of {} is"]
    assert relation_templates(records, []) == ["{} is in", "The mother tongue of {} is", "{} works for"]


def test_the_cascade_rescores_only_the_shortlist_and_keeps_the_screens_order_below_it():
    screen = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    rescore = torch.tensor([0.1, 0.0, 9.0, 100.0, 50.0])
    out = fl.cascade(screen, rescore, shortlist=3)
    assert torch.argsort(out, descending=True).tolist() == [2, 0, 1, 3, 4]


EPS = [EntryPoint("defences", "attacks.cli.defences", "secure_collab.commands")]


def test_the_sweep_reports_the_template_floor_with_its_cost_and_budget(tmp_path):
    from tests.conftest import SHARED

    records = SHARED / "counterfact.json"
    if not records.is_file():
        pytest.skip("../shared/data/counterfact.json is not beside the checkout")
    out = tmp_path / "sweep"
    argv = ["defences", "--model", "tiny-llama", "--requests", "bundled", "--limit", "6", "--sessions", "1",
            "--parties", "2", "--per-party", "3", "--grid", "none", "--out", str(out), "--damage-subjects", "10",
            "--model-floor", "--floor-templates", str(records), "--cache-dir", str(tmp_path / "cache"), "-q",
            "--json", str(tmp_path / "r.json")]
    assert main(argv, entry_points=EPS) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    t = len(doc["meta"]["floor_templates"])
    assert t == 34 and all("{}" in x for x in doc["meta"]["floor_templates"])
    rows = {r["attack"]: r for r in doc["results"]}
    for name in ("model-templates", "model-templates-sum", "model-cascade"):
        assert rows[name]["view"] == "model" and 0 <= rows[name]["recall_m"] <= 1
    assert rows["model-templates"]["queries_per_candidate"] == t
    assert rows["model-templates"]["flops_per_candidate"] > rows["model"]["flops_per_candidate"]
    assert 2 < rows["model-cascade"]["queries_per_candidate"] < t
    assert set(rows["model-templates"]["query_budget"]) == set(rows["model"]["query_budget"])
    session = json.loads(next(out.glob("session-0-none.json")).read_text())
    assert len(session["subject_kl"]["edited"]) == 6
    # the cascade alone (templates on the screen's shortlist only) ranks as the cascade from every candidate's
    # scores does, and reports no full-template row
    only = tmp_path / "only"
    argv_only = [a if a != str(out) else str(only) for a in argv] + ["--floor-cascade-only"]
    assert main(argv_only, entry_points=EPS) == 0
    rows_only = {r["attack"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert "model-templates" not in rows_only
    for name in ("model-cascade", "model-cascade-outside-pool"):  # (the pool-aware one screens outside the pool)
        assert rows_only[name]["recall_m"] == rows[name]["recall_m"]
        assert rows_only[name]["recall_5m"] == rows[name]["recall_5m"]
    assert {"model-outside-pool", "model-templates-outside-pool"} <= set(rows)
    assert main([a for a in argv if a != "--model-floor"] + ["--floor-cascade-only"], entry_points=EPS) == 2
