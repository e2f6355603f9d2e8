"""MALMEN's views and the attacks on them (attacks/malmen.py) on the tiny models, with a hypernetwork trained for one
step: the views are the engine's statistics, rowspace(ΔW) = span(U), the keys' span names the edited subjects (and
a random span of the same size does not), and the object read-off recovers each edit's value difference exactly."""

from __future__ import annotations

import pytest
import torch

from attacks import malmen as mm
from secure_collab.data.requests import Request
from secure_collab.editing.malmen.edit import party_statistics, run_malmen_edit, value_diffs
from secure_collab.editing.malmen.hparams import DEFAULTS
from secure_collab.editing.malmen.train import TrainConfig
from secure_collab.editing.malmen.trainer import train_hypernet
from secure_collab.editing.memit import restore, snapshot

NAMES = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lu", "Max", "Ned", "Oda", "Pia"]
PLACES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Berlin", "Madrid"]


def _records(n: int, offset: int = 0) -> list[Request]:
    out = []
    for k in range(offset, offset + n):
        s = NAMES[k % len(NAMES)] + str(k)
        out.append(Request(subject=s, prompt="{} lives in", target_new=PLACES[k % len(PLACES)],
                           target_true=PLACES[(k + 3) % len(PLACES)], paraphrase_prompts=(f"The home of {s} is",),
                           neighborhood_prompts=(f"{NAMES[(k + 5) % len(NAMES)]} lives in",),
                           neighborhood_targets=(PLACES[(k + 7) % len(PLACES)],), case_id=str(k)))
    return out


# three parties of two edits, with prompts of different shapes (the key is at the prompt's last token)
EDITS = [Request(subject=s, prompt=p, target_new=o, case_id=str(i)) for i, (s, p, o) in enumerate([
    ("Danielle Darrieux", "The mother tongue of {} is", "English"), ("Toko Yasuda", "{} plays the", "piano"),
    ("Apple A5", "{} is produced by", "Google"), ("Kingdom of Sardinia", "{} is located in", "Africa"),
    ("Tokyo", "{} is a twin city of", "Lisbon"), ("Thomas Joannes Stieltjes", "{} was born in", "Rome")])]
PARTIES = [EDITS[0:2], EDITS[2:4], EDITS[4:6]]
DISTRACTORS = ["France", "Germany", "Italy", "Spain", "Japan", "Peru", "Norway", "Chile", "Kenya", "Ghana",
               "Nepal", "Cuba", "Iran", "Iraq", "Oman", "Fiji", "Laos", "Mali", "Chad", "Togo", "Niger", "Sudan",
               "Yemen", "Qatar", "Malta", "Benin", "Gabon", "Haiti", "Kuwait", "Latvia"]


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A hypernetwork trained for one step on tiny training records (as tests/editing/test_malmen_train.py does)."""
    cfg = TrainConfig(steps=1, edits_per_step=3, meta_lr=1e-2, norm_edits=8, val_every=0, val_edits=3,
                      checkpoint_every=1)
    run = train_hypernet(tiny, DEFAULTS[tiny.name], cfg, _records(12), _records(3, 40),
                         tmp_path_factory.mktemp(f"malmen-{tiny.name}"))
    return tiny, run.hypernet, mm.malmen_views(tiny, run.hypernet, PARTIES)


def test_views_are_the_engines_statistics(trained):
    lm, hypernet, views = trained
    for p, reqs in enumerate(PARTIES):
        want = party_statistics(lm, hypernet, reqs)
        for la in hypernet.hp.layers:
            assert torch.equal(mm.gram_view(views, p)[la], want[la].g)
            assert torch.equal(views.stats[p][la].b, want[la].b)
            assert torch.equal(mm.keys_view(views, p)[la], views.rows[p].u[la].double())
            assert torch.allclose(mm.keys_view(views, p)[la].T @ mm.keys_view(views, p)[la], want[la].g,
                                  rtol=0, atol=1e-10 * float(want[la].g.abs().max()))
    saved = snapshot(lm, hypernet.hp.layers)
    try:
        out = run_malmen_edit(lm, PARTIES, hypernet, "collab")
    finally:
        restore(lm, saved)
    for la in hypernet.hp.layers:
        total_g = sum(party_statistics(lm, hypernet, reqs)[la].g for reqs in PARTIES)
        assert torch.allclose(views.aggregate[la].g, total_g, rtol=0, atol=1e-12 * float(total_g.abs().max()))
        rel = float((views.delta[la] - out.deltas[la]).norm() / out.deltas[la].norm())
        assert rel <= 1e-12, rel


def _projector(q: torch.Tensor) -> torch.Tensor:
    return q @ q.T


def test_rowspace_of_delta_is_the_span_of_the_keys(trained):
    """No public matrix needed: (ΣG + e^λ I) maps span(U) onto itself, so rowspace(ΔW) = span(U) (float64)."""
    _, hypernet, views = trained
    u_all = {la: torch.cat([r.u[la].double() for r in views.rows]) for la in hypernet.hp.layers}
    rows = u_all[hypernet.hp.layers[0]].shape[0]
    assert rows < views.delta[hypernet.hp.layers[0]].shape[0]  # r ≤ d_v: D has full column rank
    for la, q in mm.span_of(views, "delta").items():
        want = torch.linalg.qr(u_all[la].T)[0]  # (d_k, r)
        assert q.shape[1] == rows
        assert float((_projector(q) - _projector(want)).abs().max()) <= 1e-10
        agg = mm.span_of(views, "aggregate")[la]
        assert float((_projector(agg) - _projector(want)).abs().max()) <= 1e-10


def test_candidate_keys_are_the_engines_first_answer_rows(trained):
    """The attacker's key for a (subject, prompt) is u at the edit's first answer position, as edit_rows takes it."""
    lm, hypernet, views = trained
    keys = mm.sequence_keys(lm, mm.prompt_ids(lm.tokenizer, [r.text for r in EDITS]), hypernet.hp.layers, batch=4)
    for p, reqs in enumerate(PARTIES):
        rows = views.rows[p]
        for j in range(len(reqs)):
            first = int(torch.nonzero(rows.edit == j)[0])  # an edit's rows start at its prompt's last token
            for la in hypernet.hp.layers:
                want = rows.u[la][first].double()
                got = keys[la][2 * p + j]
                assert float((got - want).norm() / want.norm()) <= 1e-12


def _ranking(lm, hypernet, bases, reqs, prompts_for_distractors):
    cands = [r.subject for r in EDITS] + DISTRACTORS
    prompts = [r.prompt for r in EDITS] + [prompts_for_distractors[i % len(prompts_for_distractors)]
                                          for i in range(len(DISTRACTORS))]
    keys = mm.sequence_keys(lm, mm.prompt_ids(lm.tokenizer, [p.format(c) for p, c in zip(prompts, cands, strict=True)]),
                            hypernet.hp.layers)
    scores = mm.combine_layers(mm.span_scores(bases, keys))
    targets = [cands.index(r.subject) for r in reqs]
    from attacks.subspace import ranks_of

    return ranks_of(scores, targets)


def test_keys_span_ranks_the_edited_subjects_first_and_a_random_span_does_not(trained):
    """Each party's keys view, candidates with their exact prompts (distractors get the session's edit prompts): the
    party's own subjects rank first; a random orthonormal basis of the same size puts them near chance."""
    lm, hypernet, views = trained
    prompts = sorted({r.prompt for r in EDITS})
    gen = torch.Generator().manual_seed(0)
    own, rand = [], []
    for p, reqs in enumerate(PARTIES):
        bases = mm.span_of(views, "keys", p)
        ranks = _ranking(lm, hypernet, bases, reqs, prompts)
        assert all(r < len(reqs) for r in ranks), (p, ranks)  # recall@m = 1 (ties at score 1 count against)
        shuffled = {la: torch.linalg.qr(torch.randn(q.shape, generator=gen, dtype=torch.float64))[0]
                    for la, q in bases.items()}
        own.extend(ranks)
        rand.extend(_ranking(lm, hypernet, shuffled, reqs, prompts))
    assert sum(r < 2 for r in rand) < len(rand) / 2, rand
    assert sum(rand) / len(rand) > 5 * (sum(own) / len(own) + 1), (own, rand)
    # the release names them too: rowspace(ΔW) is the same span
    delta_ranks = _ranking(lm, hypernet, mm.span_of(views, "delta"), EDITS, prompts)
    assert all(r < len(EDITS) for r in delta_ranks), delta_ranks


def test_norm_scores_through_the_row_space_equal_the_direct_ones(trained):
    lm, hypernet, views = trained
    keys = mm.sequence_keys(lm, mm.prompt_ids(lm.tokenizer, [p.format(c) for c in DISTRACTORS
                                                             for p in ("{} is in", "The capital of {} is")]),
                            hypernet.hp.layers)
    direct = mm.norm_scores(views.delta, keys)
    cheap = mm.norm_scores(views.delta, keys, mm.span_of(views, "delta"))
    for la in hypernet.hp.layers:
        assert float((direct[la] - cheap[la]).abs().max() / direct[la].abs().max()) <= 1e-9


def test_object_read_off_recovers_each_value_difference(trained):
    """d̂ = ΣB ΣG⁺ u_j is the edit's own value difference d_j (the engine's D row) when the rows are independent,
    and the token scores are ⟨W_U[t] ⊙ γ, d⟩ computed by hand."""
    lm, hypernet, views = trained
    last = hypernet.hp.layers[-1]
    rows = views.rows[1]
    d = value_diffs(hypernet, rows)[last]  # (r, d_v)
    got = mm.recovered_diffs(views.aggregate[last], rows.u[last].double())
    assert float((got - d).norm() / d.norm()) <= 1e-8
    unembed = mm.unembed_directions(lm)
    w = lm.model.get_submodule(lm.spec.unembed).weight.double()
    gamma = lm.model.get_submodule(lm.spec.final_norm).weight.double()
    t = 7
    assert abs(float(mm.direction_token_scores(unembed, d[0])[t]) - float((w[t] * gamma) @ d[0])) <= 1e-10
    # span{d_i} from ΣB: every row of every party's D lies in it
    basis = mm.value_basis(views.aggregate[last])
    all_d = torch.cat([value_diffs(hypernet, r)[last] for r in views.rows])
    assert float((all_d - (all_d @ basis) @ basis.T).norm() / all_d.norm()) <= 1e-8
    released = mm.column_basis(views.delta[last])  # ΔW = DᵀU (ΣG + cI)⁻¹: the same column space
    assert released.shape == basis.shape
    assert float((released @ released.T - basis @ basis.T).abs().max()) <= 1e-8
    # token_rank: a hand-made score vector
    scores = torch.tensor([0.0, 3.0, 1.0, 3.0, 2.0], dtype=torch.float64)
    assert mm.token_rank(scores, [0, 1, 2, 3, 4], 4) == 2
    assert mm.token_rank(scores, [0, 1, 2, 3, 4], 1) == 1  # the tie with token 3 counts against
    assert mm.token_rank(scores, [0, 2, 4], 4) == 0


def test_the_benchmark_runs_resumes_and_writes_its_tables(tmp_path, monkeypatch):
    """benchmarks/attacks_malmen.py on tiny-llama and real CounterFact records: one JSON per session, a second run
    reuses them (and adds a session asked for), results.json and results.md from every finished session."""
    import json
    from pathlib import Path

    from benchmarks import attacks_malmen
    from secure_collab.models import load_model
    from tests.conftest import SHARED

    if not (SHARED / "counterfact.json").is_file():
        pytest.skip("../shared/data is not beside the checkout")
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    cfg = TrainConfig(steps=1, edits_per_step=3, meta_lr=1e-2, norm_edits=8, val_every=0, val_edits=3,
                      checkpoint_every=1)
    train_hypernet(load_model("tiny-llama"), DEFAULTS["tiny-llama"], cfg, _records(12), _records(3, 40),
                   tmp_path / "net")
    argv = ["--model", "tiny-llama", "--hypernet", str(tmp_path / "net"), "--parties", "3", "--per-party", "2",
            "--distractors", "30", "--templates-limit", "3", "--key-cache", str(tmp_path / "keys"),
            "--out", str(tmp_path / "out")]
    assert attacks_malmen.main([*argv, "--sessions", "1"]) == 0
    first = (tmp_path / "out" / "session-0.json").read_text()
    assert attacks_malmen.main([*argv, "--sessions", "2"]) == 0
    assert (tmp_path / "out" / "session-0.json").read_text() == first  # reused, not recomputed
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["config"]["sessions_done"] == 2 and res["config"]["n_templates"] == 3
    s1 = json.loads((tmp_path / "out" / "session-1.json").read_text())
    assert not set(s1["case_ids"]) & set(json.loads(first)["case_ids"])  # sessions share no edit
    rows = {(r.get("knowledge"), r.get("view"), r["attack"]): r for r in res["rows"]}
    # exact prompts: every edited key is a row of U, so the span names every edited subject
    assert rows[("exact", "delta", "span-all")]["recall_m"] == 1.0
    assert rows[("templates", "delta", "span-all")]["sessions"] == 2
    split = res["template_split"]["delta/span-all"]
    assert sum(g["edits"] for g in split.values()) == 12
    assert "| templates | delta | norm-all |" in (tmp_path / "out" / "results.md").read_text()
