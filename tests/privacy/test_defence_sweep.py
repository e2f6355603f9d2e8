"""`secure-collab defences` on a tiny model: rows with every field, resumable, costs by hand; `attack --defence`."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import pytest

from attacks.defence_sweep import BUDGETS, budget_curve
from secure_collab.cli import main

EPS = [EntryPoint("defences", "attacks.cli.defences", "secure_collab.commands"),
       EntryPoint("attack", "attacks.cli.attack", "secure_collab.commands")]
FIELDS = {"view", "attack", "defence", "sessions", "m", "recall_m", "recall_m_ci", "recall_5m", "recall_5m_ci",
          "chance_m", "efficacy", "generalization", "specificity", "damage_kl", "damage_kl_decoys", "epsilon",
          "queries_per_candidate", "flops_per_candidate"}


def test_the_sweep_writes_every_field_resumes_and_the_defences_change_the_release(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["defences", "--model", "tiny-llama", "--requests", "bundled", "--limit", "12", "--sessions", "2",
            "--parties", "2", "--per-party", "3", "--grid", "none,camouflage:2,rank:1,noise:2,decoys:1@0",
            "--out", str(out),
            "--damage-subjects", "20", "--key-norm-bound", "30", "--residual-norm-bound", "5", "--model-floor", "-q",
            "--json", str(tmp_path / "r.json")]
    assert main(argv, entry_points=EPS) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    rows = doc["results"]
    assert {r["defence"] for r in rows} == {"none", "camouflage:2", "rank:1", "noise:2", "decoys:1@0"}
    assert all(FIELDS <= set(r) and r["sessions"] == 2 and r["m"] == 6 for r in rows)
    assert all((r["epsilon"] is None) == (r["defence"] != "noise:2") and 0 <= r["recall_m"] <= 1 for r in rows)
    # noise:2's ε is the accountant's for these sessions: 2 parties (min_parties), 3 edits each, κ = 30, ρ = 5, the
    # tiny model's layers × 1 round, the shares encoding of a session file's default value_bound
    from secure_collab.editing.accounting import plan_epsilon
    from secure_collab.editing.noise import plan_noise
    from secure_collab.protection import encoding_frac_bits
    from secure_collab.protocol.messages import MAX_PARTIES

    meta = doc["meta"]
    assert meta["key_norm_bound"] == 30.0 and meta["residual_norm_bound"] == 5.0
    plan = plan_noise(2.0, 30.0, 5.0, 2, 96, 64, encoding_frac_bits("shares", 1e5, MAX_PARTIES), 3, 1e5)
    want = plan_epsilon(plan, 1e-6, len(meta["layers"]), 1).session
    assert {r["epsilon"] for r in rows if r["defence"] == "noise:2"} == {want}
    by = {r["defence"]: r for r in rows if r["attack"] == "subspace@first"}
    assert by["none"]["damage_kl_decoys"] is None and by["camouflage:2"]["damage_kl_decoys"] > 0
    # camouflage answers its decoys' keys: the decoys move more than random public subjects do
    assert by["camouflage:2"]["damage_kl_decoys"] > by["camouflage:2"]["damage_kl"]
    assert by["none"]["flops_per_candidate"] < next(r for r in rows if r["attack"] == "subspace-all")[
        "flops_per_candidate"]
    # decoys:1: 6 decoys per session (one per edit), their answer changes counted; the answer check costs queries
    dec = {r["attack"]: r for r in rows if r["defence"] == "decoys:1@0"}
    assert dec["norm-all"]["decoys"] == 6 and 0 <= dec["norm-all"]["decoys_changed"] <= 6
    assert by["decoys:1@0"]["damage_kl_decoys"] > 0 and "decoys" not in by["none"]
    check = dec["answer-check"]
    assert check["queries_per_checked_candidate"] >= 2 and 0 < check["queries_per_candidate"] < 2 * 6
    assert check["flops_per_candidate"] > dec["norm-all"]["flops_per_candidate"]
    assert len(list(out.glob("session-*.json"))) == 10 and (out / "frontier.png").stat().st_size > 10_000
    assert (out / "frontier-cost.png").stat().st_size > 10_000 and (out / "frontier-budget.png").is_file()
    floor = next(r for r in rows if r["attack"] == "model" and r["defence"] == "none")
    assert floor["queries_per_candidate"] == 2 and set(floor["query_budget"]) == {str(q) for q in BUDGETS}
    # a budget that queries every candidate gives the unbudgeted recall; 10 queries (5 candidates) almost none
    assert floor["query_budget"]["10000"]["recall_m"] == pytest.approx(floor["recall_m"])
    assert floor["query_budget"]["10"]["recall_m"] <= 5 / doc["meta"]["n_candidates"] * 6 + 1e-9
    # a second run finds every (session, defence) on disk and computes none again
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("session-*.json")}
    argv_again = [a for a in argv if a != "-q"]
    assert main(argv_again, entry_points=EPS) == 0
    assert "10 runs cached" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("session-*.json")}
    # --cached-only runs nothing new: a defence not on disk gets no rows and no session file
    grid = argv.index("--grid") + 1
    cached = [*argv[:grid], argv[grid] + ",rank:2", *argv[grid + 1:], "--cached-only"]
    assert main(cached, entry_points=EPS) == 0
    again = json.loads((tmp_path / "r.json").read_text())
    assert {r["defence"] for r in again["results"]} == {r["defence"] for r in rows} and again["meta"]["cached_only"]
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("session-*.json")}


def test_attack_rows_carry_the_defence_its_cost_to_the_model_and_each_attacks_cost(tmp_path):
    """`attack --view delta --defence D`: one session's rows name the defence, what the release cost the model
    (CounterFact's metrics, the damage KL on public titles), ε (null: no noise here) and each attack's cost per
    candidate: the span attack's keys up to the first edited layer, the black box's 2 full queries."""
    def run(defence: str) -> list[dict]:
        out = tmp_path / f"{defence.replace(':', '_')}.json"
        assert main(["attack", "--model", "tiny-llama", "--requests", "bundled", "--limit", "12", "--view", "delta",
                     "--m", "4", "--parties", "2", "--defence", defence, "--cache-dir", str(tmp_path / "cache"),
                     "--json", str(out), "-q"], entry_points=EPS) == 0
        return json.loads(out.read_text())["results"]

    plain, camo = run("default"), run("camouflage:2")
    for rows, spec in ((plain, "none"), (camo, "camouflage:2")):
        assert {r["defence"] for r in rows} == {spec} and all(r["epsilon"] is None for r in rows)
        assert all(0 <= r[k] <= 1 for r in rows for k in ("efficacy", "generalization", "specificity"))
        assert len({(r["efficacy"], r["damage_kl"]) for r in rows}) == 1 and rows[0]["damage_kl"] >= 0
        by = {(r["view"], r["attack"]): r for r in rows}
        span, floor = by[("delta", "subspace")], by[("model", "kl-shift")]
        assert span["queries_per_candidate"] == 0 and floor["queries_per_candidate"] == 2
        assert span["flops_per_candidate"] > 0 and floor["flops_per_candidate"] > 0
        assert by[("delta", "target")]["flops_per_candidate"] is None  # ranks objects, not candidate subjects
    # the camouflaged release answers decoy keys too: it moves unedited public subjects more
    assert camo[0]["damage_kl"] > plain[0]["damage_kl"]


def test_forward_flops_count_the_blocks_used_by_hand():
    from attacks.defence_sweep import forward_flops
    from secure_collab.models import load_model
    from secure_collab.models.specs import get_module

    lm = load_model("tiny-llama")
    block = [sum(p.numel() for p in get_module(lm.model, lm.spec.block_name(i)).parameters()) for i in range(2)]
    assert forward_flops(lm, 5, 1) == 2 * 5 * (block[0] + block[1])
    assert forward_flops(lm, 5, None) > forward_flops(lm, 5, 1)


def test_bad_grid_and_too_few_records_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["defences", "--grid", "none,decoys:0", "--out", str(tmp_path)], entry_points=EPS)
    assert "bad defence 'decoys:0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # `attack` has no session bounds for noise:Z's plan: the sweep measures it
        main(["attack", "--defence", "noise:1", "--out", str(tmp_path)], entry_points=EPS)
    assert "measured by `secure-collab defences`" in capsys.readouterr().err
    rc = main(["defences", "--model", "tiny-llama", "--requests", "bundled", "--limit", "5", "--out",
               str(tmp_path)], entry_points=EPS)
    err = capsys.readouterr().err
    assert rc == 2 and "need 300 records" in err and err.strip().count("\n") == 0
    rc = main(["defences", "--model", "tiny-llama", "--requests", "bundled", "--key-norm-bound", "0", "--out",
               str(tmp_path)], entry_points=EPS)
    err = capsys.readouterr().err
    assert rc == 2 and "--key-norm-bound must be a finite number > 0" in err and err.strip().count("\n") == 0
    rc = main(["defences", "--model", "tiny-llama", "--requests", "bundled", "--sessions", "2", "--first-session",
               "2", "--out", str(tmp_path)], entry_points=EPS)
    err = capsys.readouterr().err
    assert rc == 2 and "--first-session must be in [0, 2)" in err and err.strip().count("\n") == 0


def test_the_budget_curve_by_hand():
    import torch

    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])  # candidates 0 and 1 are the edited ones, ranked first
    curve = budget_curve(scores, [0, 1], 2, 2, budgets=(2, 6, 12), draws=2000)
    # Q = 12: all 6 queried, both found; Q = 2: one candidate queried, an edited one with probability 2/6, and
    # then it is named (recall 1/2 of the two); Q = 6: 3 queried, each edited one seen with probability 1/2
    assert curve["12"] == 1.0
    assert curve["2"] == pytest.approx(2 / 6 * 0.5, abs=0.03) and curve["6"] == pytest.approx(0.5, abs=0.03)


def test_the_answer_check_ranks_last_the_shortlisted_candidates_whose_answers_did_not_change(monkeypatch):
    """Of the shortlist (answer_shortlist × m best), the unchanged go below every other candidate, in their order;
    the rest keep theirs. Its cost: 2 queries per prompt per checked candidate."""
    import torch

    import attacks.defence_sweep as ds

    sw = ds.Sweep.__new__(ds.Sweep)
    sw.answer_shortlist = 2
    sw.exp = type("E", (), {"candidates": [f"c{i}" for i in range(8)]})()
    asked = []

    def changed(_sw, _e, names, prompts):
        asked.extend(zip(names, prompts, strict=True))
        return [n in ("c1", "c3") for n in names]

    monkeypatch.setattr(ds, "answer_changed", changed)
    scores = torch.tensor([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    got, cost = ds.answer_check(sw, {}, scores, lambda i: f"{{}} is {i}", 2)  # shortlist: c0-c3
    assert torch.argsort(got, descending=True).tolist() == [1, 3, 4, 5, 6, 7, 0, 2]
    assert cost == {"checked": 4, "queries_per_checked": 2}
    assert asked == [("c0", "{} is 0"), ("c1", "{} is 1"), ("c2", "{} is 2"), ("c3", "{} is 3")]
