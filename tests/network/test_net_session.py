"""End-to-end sessions over real CurveZMQ sockets on loopback: the ΔW equals the single-process one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from network_doubles import make_config, reference_deltas, run_session

from secure_collab.ledger import Ledger


@pytest.mark.parametrize("variant", ["sequential", "oneshot"])
def test_session_matches_single_process(tmp_path, variant):
    cfg = make_config(tmp_path, variant=variant)
    run = run_session(cfg)
    assert run.outcome.ok, run.outcome.reason
    ref = reference_deltas(cfg, ["a", "b", "c"])
    assert set(run.solver.releases) == set(ref)
    for key, delta in ref.items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    for name in run.engines:
        assert run.parties[name].ok, run.parties[name].reason
        assert set(run.parties[name].applied) == set(ref)
    for engine in run.engines.values():
        for layer in cfg.session.layers:
            np.testing.assert_allclose(engine.w[layer], ref[(0, layer)], rtol=1e-12, atol=1e-12)
    assert all(p.refusals == [] for p in run.parties.values())


def test_solver_only_receives_aggregates(tmp_path):
    cfg = make_config(tmp_path)
    run = run_session(cfg)
    assert run.outcome.ok
    with Ledger(cfg.paths.ledger) as ledger:
        to_solver = [r for r in ledger.rows("messages") if r["peer"] == "solver" and r["direction"] == "out"]
        handoffs = ledger.rows("handoffs")
    assert {r["type"] for r in to_solver} <= {"aggregate", "end"}
    assert len([r for r in to_solver if r["type"] == "aggregate"]) == len(handoffs) > 0
    assert all(len(json.loads(h["parties"])) >= cfg.session.min_parties for h in handoffs)
    assert all(len(parties) >= cfg.session.min_parties for *_, parties in run.solver.received)


def test_parties_in_turn(tmp_path):
    cfg = make_config(tmp_path, network={"request_in_turn": True})
    run = run_session(cfg)
    assert run.outcome.ok, run.outcome.reason
    for key, delta in reference_deltas(cfg, ["a", "b", "c"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    with Ledger(cfg.paths.ledger) as ledger:
        rows = ledger.rows("messages")
    flow = [(r["type"], r["peer"]) for r in rows if r["type"] in ("request", "contrib")]
    runs = [x for i, x in enumerate(flow) if i == 0 or flow[i - 1] != x]  # collapse repeats
    one_step = [("request", "a"), ("contrib", "a"), ("request", "b"), ("contrib", "b"),
                ("request", "c"), ("contrib", "c")]
    assert runs == one_step * len(cfg.session.layers)
