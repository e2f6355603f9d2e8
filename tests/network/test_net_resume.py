"""A coordinator SIGKILLed mid-round and restarted resumes from its ledger; the ΔW is unchanged."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from network_doubles import (
    SyntheticEngine,
    Threads,
    closed_form_solve,
    make_config,
    reference_deltas,
)

from parties import run_party
from secure_collab.ledger import Ledger
from secure_collab.protection import get_scheme
from solver.server import run_solver

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _start_coordinator(config_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    return subprocess.Popen([sys.executable, str(HERE / "coordinator_process.py"), str(config_path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 20.0) -> None:
    """Poll a condition read from another process's ledger (there is no event to wait on)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def _accepted_layer2(ledger_path: Path) -> set[str]:
    if not ledger_path.exists():
        return set()
    with sqlite3.connect(ledger_path) as db:
        try:
            rows = db.execute("SELECT peer FROM messages WHERE type='contrib' AND layer=2 AND "
                              "outcome='accepted'").fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return set()
    return {peer for (peer,) in rows}


class GatedEngine(SyntheticEngine):
    """Blocks in compute_statistics for layer 2 until the test opens the gate."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.gate = threading.Event()

    def compute_statistics(self, round_, layer):
        if layer == 2:
            assert self.gate.wait(30)
        return super().compute_statistics(round_, layer)


def test_coordinator_sigkill_mid_round_resumes_with_same_delta(tmp_path):
    cfg = make_config(tmp_path)
    config_path = next(tmp_path.glob("config-*.toml"))
    scheme = get_scheme("plain")
    engines = {"a": SyntheticEngine("a", cfg), "b": SyntheticEngine("b", cfg), "c": GatedEngine("c", cfg)}
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
    for n, e in engines.items():
        th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
    first = _start_coordinator(config_path)
    try:
        _wait_for(lambda: _accepted_layer2(cfg.paths.ledger) >= {"a", "b"})  # layer 1 released, layer 2 open
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    second = _start_coordinator(config_path)
    engines["c"].gate.set()  # c now sends attempt-0 chunks (refused as stale), then resends for attempt 1
    out, err = second.communicate(timeout=60)
    th.join(30)
    assert second.returncode == 0, err
    outcome = json.loads(out)
    assert outcome["ok"], outcome["reason"]
    ref = reference_deltas(cfg, ["a", "b", "c"])
    solver = th.results["solver"]
    for key, delta in ref.items():
        np.testing.assert_allclose(solver.releases[key], delta, rtol=1e-12, atol=1e-12)
        for e in engines.values():
            np.testing.assert_allclose(e.w[key[1]], delta, rtol=1e-12, atol=1e-12)
    assert all(th.results[n].ok for n in engines)
    for n in ("a", "b"):
        assert engines[n].compute_calls == [(0, 1), (0, 2)]  # resent from cache, not recomputed
    with Ledger(cfg.paths.ledger) as ledger:
        stages = [(r["layers"], r["attempt"], r["event"]) for r in ledger.rows("stages")]
        releases = ledger.rows("releases")
        sent = [(r["peer"], r["type"], r["layer"]) for r in ledger.rows("messages")
                if r["direction"] == "out" and r["type"] in ("release", "setup") and r["outcome"] == "sent"]
    # the rejoining parties said what they held: neither the setup nor layer 1's release was sent twice
    assert sorted(sent) == sorted([(n, "setup", -1) for n in engines] + [(n, "release", lay) for n in engines
                                                                           for lay in (1, 2)])
    assert ("[2]", 0, "open") in stages and ("[2]", 1, "handoff") in stages
    assert [(r["layer"], r["attempt"]) for r in releases] == [(1, 0), (2, 1)]
