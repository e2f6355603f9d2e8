"""`secure-collab status` over real processes: a coordinator process waiting for c and the solver, two parties
joined; status, run as its own process on the coordinator's host, shows the stage, the counts and the time left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "network"))
sys.path.insert(0, str(ROOT / "tests"))

from network_doubles import SyntheticEngine, Threads, make_config  # noqa: E402
from test_role_feedback import _lines_until, _spawn  # noqa: E402


def _status(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "secure_collab", "status", *argv], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)


def test_status_shows_a_live_sessions_stage_counts_and_time_left(tmp_path):
    from parties import run_party
    from secure_collab.protection import get_scheme

    cfg = make_config(tmp_path, min_parties=3, network={"join_timeout_s": 120.0})
    config = next(tmp_path.glob("config-*.toml"))
    proc = _spawn(["coordinator", "--config", str(config)])
    th = Threads()
    try:
        _lines_until(proc, "listening on", 60)
        for n in ("a", "b"):
            e = SyntheticEngine(n, cfg)
            th.start(n, lambda n=n, e=e: run_party(cfg, n, get_scheme("plain"), e.compute_statistics,
                                                   e.apply_delta))
        _lines_until(proc, r"waiting for c, solver \(2 of 3 parties joined", 30)
        done = _status("--config", str(config), "--json", "-")
        human = _status("--config", str(config))
        proc.send_signal(signal.SIGINT)
        th.join(30)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["stage"] == "joining" and doc["joined"] == ["a", "b"] and doc["parties"] == ["a", "b", "c"]
    assert doc["contributed"] == [] and doc["applied"] == [] and 0 < doc["deadline"]
    out = human.stdout
    assert "session s1: joining" in out and "joined       2 of 3" in out and "applied      0 of 3" in out
    assert "time left    1" in out  # 100-odd seconds of the 120 s join deadline
    assert "c            joined no" in out  # per-party detail: this is the coordinator's host


def test_status_away_from_the_coordinators_host_says_why_it_shows_nothing(tmp_path):
    make_config(tmp_path)
    res = _status("--config", str(next(tmp_path.glob("config-*.toml"))))
    assert res.returncode == 2 and "not the coordinator's host" in res.stderr and "attacks/wire.py" in res.stderr
