"""The solver's state: sealed at rest, private whatever the umask, and enough for a restarted solver to
rejoin the same session; no plaintext ΔW ever passes through the coordinator."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import threading
import time

import numpy as np
import pytest
from network_doubles import SyntheticEngine, Threads, ledger_bytes, make_config, reference_deltas, solver_process

from coordinator.server import Coordinator
from parties import run_party
from secure_collab.protection import get_scheme


class Gated(SyntheticEngine):
    """Waits before computing layer 2 until the test opens the gate."""

    gate = threading.Event()

    def compute_statistics(self, round_, layer):
        if layer == 2:
            assert self.gate.wait(60)
        return super().compute_statistics(round_, layer)


class Watching(Coordinator):
    """The honest coordinator, keeping every frame it received or sent (its 'memory' of the session)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.frames: list[bytes] = []

    def _check(self, m):
        self.frames.extend(m.raw)
        super()._check(m)

    def _send_frames(self, name, route, frames, mtype, where, track=False):
        self.frames.extend(bytes(f) for f in frames)
        return super()._send_frames(name, route, frames, mtype, where, track)


def _released_layers(ledger_path) -> set[int]:
    if not ledger_path.exists():
        return set()
    try:
        with sqlite3.connect(ledger_path) as db:
            return {lay for (lay,) in db.execute("SELECT layer FROM releases")}
    except sqlite3.OperationalError:
        return set()


def _wait(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_solver_sigkilled_between_steps_rejoins_and_nothing_plain_reaches_the_coordinator(tmp_path, umask):
    old = os.umask(umask)
    try:
        cfg = make_config(tmp_path, mode="shares")
    finally:
        os.umask(old)
    config_path = next(tmp_path.glob("config-*.toml"))
    Gated.gate = threading.Event()
    engines = {"a": SyntheticEngine("a", cfg), "b": SyntheticEngine("b", cfg), "c": Gated("c", cfg)}
    coordinator = Watching(cfg, get_scheme("shares"))
    th = Threads()
    th.start("coordinator", coordinator.run)
    for n, e in engines.items():
        th.start(n, lambda n=n, e=e: run_party(cfg, n, get_scheme("shares"), e.compute_statistics, e.apply_delta))
    old = os.umask(umask)
    try:
        first = solver_process(config_path)
        _wait(lambda: _released_layers(cfg.paths.ledger) == {1})
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        second = solver_process(config_path)
    finally:
        os.umask(old)
    Gated.gate.set()
    th.join(60)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    import json

    result = json.loads(out)
    outcome = th.results["coordinator"]
    assert outcome.ok, outcome.reason
    ref = reference_deltas(cfg, ["a", "b", "c"])
    assert result["solve_calls"] == [[0, 2]]  # layer 1 was solved by the first process, never again
    np.testing.assert_allclose(np.array(result["releases"]["0/2"]), ref[(0, 2)], rtol=1e-9, atol=1e-9)
    for name, e in engines.items():
        assert th.results[name].ok
        for (_, lay), delta in ref.items():
            np.testing.assert_allclose(e.w[lay], delta, rtol=1e-9, atol=1e-9)

    # the state directory and its files are private whatever the umask, and sealed
    state = cfg.paths.solver_state / cfg.session.id
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = sorted(state.iterdir())
    assert {f.name for f in files} >= {"setup.sealed", "opened-r0-l1.sealed", "release-r0-l2.sealed"}
    from solver.state import released_steps

    assert released_steps(state) == len(ref) == 2  # what the demo's "ΔW released" bar counts (it once counted 0)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert b'"mode"' not in f.read_bytes() and b"secrets" not in f.read_bytes()

    # no plaintext ΔW in the coordinator's ledger (main file and WAL) or in any frame it handled: search for
    # the exact bytes every party applied (its W started at zero, so W is the released ΔW bit for bit)
    ledger = ledger_bytes(cfg.paths.ledger)
    seen = b"".join(coordinator.frames)
    assert len(seen) > 10 * sum(d.nbytes for d in ref.values())  # it did see the whole session
    for lay in cfg.session.layers:
        released = engines["a"].w[lay]
        assert np.array_equal(released, engines["b"].w[lay])
        for row in np.ascontiguousarray(released, dtype="<f8"):
            assert row.tobytes() not in ledger and row.tobytes() not in seen
