"""A served release on tiny-llama over real sockets (solver, coordinator, three parties in threads; shares mode; the
real party and solver engines): no party receives ΔW and every party's model stays the base model, while a party's
queries are answered as the same queries on a model edited locally with the simulation's ΔW, and a party measures
its own efficacy through queries as it would on that model."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from network_doubles import Threads, make_config, simulation_of

HP = {"mom2_tokens": 600, "v_num_grad_steps": 4, "n_templates": 1, "template_length": 3}


def test_a_served_session_answers_as_the_locally_edited_model_and_no_party_holds_dw(tmp_path, capitals):
    from coordinator.server import run_coordinator
    from parties.engine import PartyEditor
    from parties.queries import QueryClient
    from parties.runner import PartyEngine, run_party_session
    from secure_collab.editing.memit import rel_diff_per_layer, run_edit, split_parties
    from secure_collab.evaluation import evaluate
    from secure_collab.evaluation.served import candidate_logprobs
    from secure_collab.models import load_model
    from secure_collab.models.specs import down_weight
    from secure_collab.protection import get_scheme
    from solver.server import run_solver
    from solver.solve import SessionSolve

    cache = tmp_path / "cache"
    cfg = make_config(tmp_path, mode="shares", model="tiny-llama", d_k=96, d_v=64, layers=[1, 2], chunk_values=8192,
                      variant="oneshot", release="served", query_budget=12, value_bound=1e5, key_norm_bound=1e4,
                      residual_norm_bound=1e4, hparams=HP,
                      network={"max_message_bytes": 1 << 20, "stage_timeout_s": 120.0, "solve_timeout_s": 120.0,
                               "join_timeout_s": 60.0, "serve_timeout_s": 120.0})
    names = ("a", "b", "c")
    split = split_parties(capitals[:6], 3)
    editors = {n: PartyEditor(cfg.session, split[i], cache=cache, progress=False) for i, n in enumerate(names)}
    base = {layer: down_weight(editors["a"].lm.model, editors["a"].lm.spec, layer).detach().clone()
            for layer in cfg.session.layers}
    solve = SessionSolve(cfg.session, cache=cache)  # a served session: it keeps the model and serves it
    scheme = get_scheme("shares")
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, solve))
    th.start("coordinator", lambda: run_coordinator(cfg, scheme))
    a = editors["a"]  # a measures its own efficacy through queries, as `secure-collab party --served-eval` does
    th.start("a", lambda: run_party_session(cfg, "a", scheme, PartyEngine(
        a.compute_statistics, a.apply_delta, lambda r: a.finish_served(r.served), served_queries=a.served_queries)))
    for n in ("b", "c"):
        ed = editors[n]
        th.start(n, lambda n=n, ed=ed: run_party_session(cfg, n, scheme, PartyEngine(ed.compute_statistics,
                                                                                     ed.apply_delta)))
    deadline = time.monotonic() + 240
    while not set(names) <= set(th.results) | set(th.errors) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        reports = {n: th.results[n] for n in names}
        for n, ed in editors.items():  # no ΔW reached a party: its model is the base model, bit for bit
            assert reports[n]["ok"] and reports[n]["applied"] == {} and len(reports[n]["noticed"]) == 2, reports[n]
            assert ed.applied == {}
            for layer, w in base.items():
                assert torch.equal(down_weight(ed.lm.model, ed.lm.spec, layer), w), (n, layer)

        # the simulation of the same session, applied to a local copy of the model
        s = cfg.session
        lm, hp, covs, templates = simulation_of(s, cache)
        out = run_edit(lm, split, hp, covs, "collab", templates)  # lm is now edited with the simulation's ΔW

        prompt = split[1][0].text  # one of b's own edits, asked by b
        candidates = [split[1][0].target_new, split[1][0].target_true, "Rome"]
        with QueryClient(cfg, "b") as client:
            answer = client.ask({"kind": "logprobs", "prompt": prompt, "candidates": candidates})
            said = client.ask({"kind": "generate", "prompt": prompt, "max_tokens": 3})
        local = candidate_logprobs(lm.model, lm.tokenizer, prompt, candidates)
        assert answer["ok"] and answer["cost"] == 3 and answer["tokens"] == [n for _, n in local], answer
        np.testing.assert_allclose(answer["logprobs"], [lp for lp, _ in local], rtol=0, atol=1e-6)
        from secure_collab.evaluation import generate

        assert said["ok"] and said["used"] == 6 and said["text"] == generate(lm.model, lm.tokenizer, [prompt], 3)[0]
        with torch.no_grad():  # and the base model answers otherwise: the answer is the edit's
            unedited = load_model("tiny-llama")
            assert not np.allclose([lp for lp, _ in candidate_logprobs(unedited.model, unedited.tokenizer, prompt,
                                                                       candidates)], answer["logprobs"], atol=1e-3)

        # a's own efficacy through queries (2 forward passes per request) is what the edited model gives
        served = reports["a"]["served"]
        assert served["evaluated"] and served["measured"] == len(split[0]) and served["cost"] == 2 * len(split[0])
        assert reports["a"]["post"]["efficacy"] == pytest.approx(evaluate(lm, split[0]).efficacy)
        assert reports["a"]["model"].startswith("unchanged")
        for n in names:
            with QueryClient(cfg, n) as client:
                assert client.ask({"kind": "done"})["ok"]
    finally:
        th.join(120)
    assert th.results["coordinator"].ok and "every party is done" in th.results["coordinator"].reason
    released = th.results["solver"].releases
    diffs = rel_diff_per_layer({layer: torch.from_numpy(released[(0, layer)]) for layer in cfg.session.layers},
                               out.deltas)
    assert max(diffs.values()) < 1e-9, diffs
