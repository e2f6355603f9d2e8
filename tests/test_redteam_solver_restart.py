"""Red team: what a restarted solver forgets. The solver process is restarted (crash, or an operator after the
coordinator went silent past the solver's idle limit) between rounds of a multi-round session with the dynamic
covariance; its sealed state brings back the keys, the opened steps and Σ of the earlier rounds' ΣG (record
``past-r{R}-l{L}``), so round 1 is solved as if nothing had happened. Over real sockets with a SIGKILL:
tests/network/test_net_rounds.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import zmq

from secure_collab.protection import get_scheme
from solver.server import Solver
from solver.solve import SessionSolve

sys.path.insert(0, str(Path(__file__).parent / "network"))
from network_doubles import make_config  # noqa: E402


def test_redteam_restarted_solver_keeps_the_dynamic_covariance(tmp_path, monkeypatch):
    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path / "cache"))
    hparams = {"mom2_tokens": 200, "n_templates": 1, "template_length": 3}
    common = dict(model="tiny-llama", layers=[1], d_k=96, d_v=64, rounds=2, update_rule="memit-dynamic",
                  hparams=hparams)
    rng = np.random.default_rng(0)
    k0, k1 = rng.normal(size=(3, 96)), rng.normal(size=(2, 96))  # (n, d_k) keys of round 0 and round 1
    g0, g1 = k0.T @ k0, k1.T @ k1
    b0, b1 = rng.normal(size=(64, 96)), rng.normal(size=(64, 96))

    ctx = zmq.Context()  # no socket is opened: the solver's step from an opened aggregate to ΔW only
    cfg = make_config(tmp_path / "straight", **common)
    solve = SessionSolve(cfg.session, cache=tmp_path / "cache")
    straight = Solver(cfg, get_scheme("plain"), solve, ctx=ctx)
    straight.solve_step(0, 1, g0, b0)
    uninterrupted = straight.solve_step(1, 1, g1, b1)

    cfg = make_config(tmp_path / "restarted", **common)
    first = Solver(cfg, get_scheme("plain"), solve, ctx=ctx)
    first.solve_step(0, 1, g0, b0)  # round 0 opened, then the process dies (and its lock on the store goes)
    first.state.close()
    after_restart = Solver(cfg, get_scheme("plain"), solve, ctx=ctx).solve_step(1, 1, g1, b1)  # same store
    ctx.term()

    np.testing.assert_allclose(after_restart, uninterrupted, rtol=1e-12)
    # independent reference: the dynamic rule's direct formula with round 0's ΣG, and it is not the forgetful one
    hp = solve.hp
    c = solve.covs[1].double().numpy()
    direct = b1 @ np.linalg.inv(hp.mom2_update_weight * c + g1 + hp.rule.past_weight * g0)
    np.testing.assert_allclose(after_restart, direct, rtol=1e-8, atol=1e-12)
    forgetful = b1 @ np.linalg.inv(hp.mom2_update_weight * c + g1)
    assert not np.allclose(after_restart, forgetful, rtol=1e-6)
