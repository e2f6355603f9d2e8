"""Multi-round sessions over real sockets: the solver carries earlier rounds' ΣG (sealed in its store) into the
update rule, and a solver killed between rounds resumes from that store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import threading
import time

import numpy as np
import pytest
from network_doubles import SyntheticEngine, Threads, make_config, reference_deltas, run_session, solver_process

from coordinator.server import Coordinator
from parties import run_party
from secure_collab.protection import get_scheme


@pytest.mark.parametrize("rule", ["memit-static", "memit-dynamic"])
def test_three_rounds_release_what_the_rule_computes_from_the_aggregates(tmp_path, rule):
    cfg = make_config(tmp_path, rounds=3, update_rule=rule)
    run = run_session(cfg)
    assert run.outcome.ok, run.outcome.reason
    ref = reference_deltas(cfg, ["a", "b", "c"])
    assert set(run.solver.releases) == {(r, lay) for r in range(3) for lay in (1, 2)}
    for key, delta in ref.items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-9, atol=1e-12)
    for e in run.engines.values():  # every party applied every round's ΔW, in order
        for lay in (1, 2):
            np.testing.assert_allclose(e.w[lay], sum(ref[(r, lay)] for r in range(3)), rtol=1e-9, atol=1e-12)
    # the dynamic rule really reads the past: its later rounds differ from the static ones
    static = reference_deltas(make_config(tmp_path / "s", rounds=3), ["a", "b", "c"])
    assert np.allclose(ref[(0, 1)], static[(0, 1)])
    assert np.allclose(ref[(2, 2)], static[(2, 2)]) == (rule == "memit-static")


class RoundGate(SyntheticEngine):
    """Waits before its first statistics of round 1 until the test opens the gate."""

    gate = threading.Event()

    def compute_statistics(self, round_, layer):
        if round_ == 1:
            assert self.gate.wait(60)
        return super().compute_statistics(round_, layer)


def _released(ledger) -> set[tuple[int, int]]:
    if not ledger.exists():
        return set()
    try:
        with sqlite3.connect(ledger) as db:
            return {(r, lay) for r, lay in db.execute("SELECT round, layer FROM releases")}
    except sqlite3.OperationalError:
        return set()


def _wait(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def test_solver_killed_between_rounds_resumes_with_its_cross_round_state(tmp_path):
    cfg = make_config(tmp_path, mode="shares", rounds=3, update_rule="memit-dynamic")
    config_path = next(tmp_path.glob("config-*.toml"))
    RoundGate.gate = threading.Event()
    engines = {"a": SyntheticEngine("a", cfg), "b": SyntheticEngine("b", cfg), "c": RoundGate("c", cfg)}
    th = Threads()
    th.start("coordinator", Coordinator(cfg, get_scheme("shares")).run)
    for n, e in engines.items():
        th.start(n, lambda n=n, e=e: run_party(cfg, n, get_scheme("shares"), e.compute_statistics, e.apply_delta))
    first = solver_process(config_path)
    _wait(lambda: _released(cfg.paths.ledger) == {(0, 1), (0, 2)})
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    state = cfg.paths.solver_state / cfg.session.id
    assert {"past-r0-l1.sealed", "past-r0-l2.sealed"} <= {f.name for f in state.iterdir()}
    second = solver_process(config_path)
    RoundGate.gate.set()
    th.join(60)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    result = json.loads(out)
    assert th.results["coordinator"].ok, th.results["coordinator"].reason
    assert result["solve_calls"] == [[1, 1], [1, 2], [2, 1], [2, 2]]  # round 0 was the first process's
    ref = reference_deltas(cfg, ["a", "b", "c"])  # rounds 1 and 2 read round 0's ΣG: it came from the store
    for r in (1, 2):
        for lay in (1, 2):
            np.testing.assert_allclose(np.array(result["releases"][f"{r}/{lay}"]), ref[(r, lay)], rtol=1e-9,
                                       atol=1e-12)
    for name, e in engines.items():
        assert th.results[name].ok, name
        np.testing.assert_allclose(e.w[2], sum(ref[(r, 2)] for r in range(3)), rtol=1e-9, atol=1e-12)
    names = {f.name for f in state.iterdir()}
    assert {"past-r1-l1.sealed", "past-r1-l2.sealed"} <= names  # the latest only: r0 was replaced, the last
    assert not {"past-r0-l1.sealed", "past-r2-l1.sealed"} & names  # round needs none
    for f in state.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
