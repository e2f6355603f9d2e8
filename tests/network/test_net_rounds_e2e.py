"""A whole multi-round session with dedupe and a conflict, through the role commands over real sockets, on a
tiny model: the real solver engine and the real party engine (per-round request files, a 'round' field and
contiguous blocks), and every applied ΔW equal to the single-machine simulation of the same decisions."""

from __future__ import annotations

import json
from dataclasses import replace

from network_doubles import make_config, run_role_commands

from secure_collab.data.formats import load_requests
from tests.conftest import SHARED

HP = {"mom2_tokens": 600, "v_num_grad_steps": 4, "n_templates": 1, "template_length": 3}


def _jsonl(path, reqs, rounds=None):
    rows = []
    for i, r in enumerate(reqs):
        row = {"subject": r.subject, "prompt": r.prompt, "target_new": r.target_new, "target_true": r.target_true,
               "relation": r.relation, "case_id": r.case_id}
        if rounds is not None:
            row["round"] = rounds[i]
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_role_commands_run_two_rounds_with_dedupe_and_a_conflict_like_the_simulation(tmp_path, monkeypatch):

    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path / "cache"))
    cf = load_requests(SHARED / "counterfact.json", limit=8)
    other = replace(cf[0], target_new=cf[1].target_new, case_id="0b")  # the same fact, another object
    plan = {"a": [[cf[0], cf[1]], [cf[4]]], "b": [[cf[0], cf[2]], [cf[1]]], "c": [[cf[3], other], [cf[5]]]}
    files = {"a": [_jsonl(tmp_path / "a0.jsonl", plan["a"][0]), _jsonl(tmp_path / "a1.jsonl", plan["a"][1])],
             "b": [_jsonl(tmp_path / "b.jsonl", plan["b"][1] + plan["b"][0], rounds=[1, 0, 0])],
             "c": [_jsonl(tmp_path / "c.jsonl", plan["c"][0] + plan["c"][1])]}
    cfg = make_config(tmp_path, model="tiny-llama", d_k=96, d_v=64, layers=[1, 2], chunk_values=8192, rounds=2,
                      dedupe=True, conflict_policy="priority", update_rule="memit-dynamic", augment=2,
                      max_edits_per_party=8, value_bound=1e5, key_norm_bound=1e4, residual_norm_bound=1e4,
                      hparams=HP, network={"max_message_bytes": 1 << 20, "stage_timeout_s": 120.0,
                                           "solve_timeout_s": 120.0, "join_timeout_s": 60.0})
    config_path = str(next(tmp_path.glob("config-*.toml")))
    codes = run_role_commands(config_path, tmp_path, files)
    assert all(code == 0 for code in codes.values()), codes
    reports = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc"}
    actions = {n: {r: [v[1] for v in vs] for r, vs in rep["decisions"].items()} for n, rep in reports.items()}
    assert actions == {"a": {"0": ["augment", "keep"], "1": ["keep"]}, "b": {"0": ["keep", "keep"],
                       "1": ["keep"]}, "c": {"0": ["keep", "withdraw"], "1": ["keep"]}}
    assert [v[4] for v in reports["a"]["decisions"]["0"]] == [2, 1]  # cf[0] won by a, held by a and b: 1/2 each
    assert [v[4] for v in reports["b"]["decisions"]["0"]] == [2, 1]

    # the simulation of the same session: the same decision rule, augmentation and update rule on one machine
    from secure_collab.covariance import layer_covariances
    from secure_collab.editing.hparams import auto_request_batch
    from secure_collab.editing.rounds import CrossRound, run_rounds
    from secure_collab.editing.session import session_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.experiments.tagsim import TagSim, apply_weighted
    from secure_collab.models import load_model
    from secure_collab.patch import read_patch

    s = cfg.session
    lm = load_model("tiny-llama")
    hp = session_hparams(s.model, 4, s.layers, s.variant, s.template_seed, s.hparams, auto_request_batch("cpu"),
                         s.update_rule)
    covs = layer_covariances(lm, hp.layers, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len, progress=False)
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed)
    sim, state = TagSim(priority=["a", "b", "c"], dedupe=True, policy="priority"), CrossRound()
    expected = []
    for r in range(2):
        verdicts = sim.round(r, {n: plan[n][r] for n in "abc"})
        kept = [apply_weighted(lm, plan[n][r], verdicts[n], s.augment, seed=s.template_seed) for n in "abc"]
        expected.append(run_rounds(lm, [[k[0] for k in kept]], hp, covs, templates, state=state,
                                   weights=[[k[1] for k in kept]])[0].deltas)
    for n in "abc":
        patch = read_patch(tmp_path / f"{n}.safetensors").deltas  # (round, layer) -> ΔW
        for r in range(2):
            for lay in s.layers:
                got, want = patch[(r, lay)].double(), expected[r][lay].double()
                assert float((got - want).norm() / want.norm()) < 1e-9, (n, r, lay)
