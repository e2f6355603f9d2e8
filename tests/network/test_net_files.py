"""State and secret files are 0600 and their directories 0700 whatever the umask (a live session)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from network_doubles import SyntheticEngine, make_config, reference_deltas, run_session

from parties import run_party
from secure_collab.files import open_private, private_dir, touch_private, write_private
from secure_collab.protection import get_scheme


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ledger_solver_state_and_keys_are_private_during_a_session(tmp_path, umask):
    cfg = make_config(tmp_path / "work", network={"stage_timeout_s": 30.0},
                      paths={"ledger": "coordinator/ledger.sqlite", "solver_state": "state/solver"})
    ledger = cfg.paths.ledger  # in a directory the ledger creates
    seen = {}

    class Inspecting(SyntheticEngine):
        """Layer 2 waits while the test looks at the files of the running session."""

        def compute_statistics(self, round_, layer):
            if layer == 2:
                try:
                    wal = ledger.with_name(ledger.name + "-wal")
                    shm = ledger.with_name(ledger.name + "-shm")
                    state = cfg.paths.solver_state / cfg.session.id
                    seen.update({p: _mode(p) for p in [ledger, wal, shm, *state.iterdir()]})
                    seen.update({p: _mode(p) for p in [ledger.parent, cfg.paths.solver_state, state]})
                except OSError as exc:  # reported by the assertions below
                    seen["error"] = exc
            return super().compute_statistics(round_, layer)

    engine = Inspecting("c", cfg)
    run = run_session(cfg, ["a", "b"], extra={
        "c": lambda: run_party(cfg, "c", get_scheme("plain"), engine.compute_statistics, engine.apply_delta)})
    assert run.outcome.ok and set(run.solver.releases) == set(reference_deltas(cfg, ["a", "b", "c"]))
    assert "error" not in seen, seen
    names = {p.name for p in seen}
    assert {"ledger.sqlite-wal", "ledger.sqlite-shm", "setup.sealed", "opened-r0-l1.sealed",
            "release-r0-l1.sealed", "coordinator", "solver", cfg.session.id} <= names
    assert {str(p): oct(m) for p, m in seen.items() if m != (0o700 if p.is_dir() else 0o600)} == {}
    keys = cfg.paths.keys
    assert _mode(keys) == 0o700 and all(_mode(p) == 0o600 for p in keys.glob("*.key_secret"))


def test_helpers_tighten_whatever_the_umask(tmp_path, umask):
    os.umask(0o277)  # even a umask that would leave a file read-only for its owner
    try:
        deep = private_dir(tmp_path / "a" / "b")
        assert _mode(tmp_path / "a") == _mode(deep) == 0o700
        with open_private(deep / "f", "w") as f:
            f.write("x")
        write_private(deep / "g", b"y")
        touch_private(deep / "h")
    finally:
        os.umask(umask)
    assert [_mode(deep / n) for n in "fgh"] == [0o600] * 3
    (deep / "h").chmod(0o644)
    touch_private(deep / "h")  # an existing file is tightened too
    assert _mode(deep / "h") == 0o600 and (deep / "g").read_bytes() == b"y"
    assert not [p for p in deep.iterdir() if p.name.endswith(".tmp")]


def test_scratch_writes_are_atomic_and_private_but_skip_the_fsyncs(tmp_path, monkeypatch):
    """The solver's spool (``durable=False``): 0600 whatever the umask and replaced whole, but no fsync of the file
    or its directory (a restart drops the spool unread, so durability buys nothing; the fsyncs cost ~7.5 ms per
    2 MB chunk). The durable default still fsyncs."""
    import os
    import stat

    from secure_collab.files import write_private

    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    old = os.umask(0)
    try:
        path = write_private(tmp_path / "spool-x.sealed", b"a" * 1000, durable=False)
        write_private(path, [b"b" * 10, b"c"], durable=False)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"b" * 10 + b"c" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert calls == [] and [p.name for p in tmp_path.iterdir()] == ["spool-x.sealed"]  # no temporary left
    write_private(tmp_path / "durable", b"d")
    assert len(calls) == 2  # the file and its directory
