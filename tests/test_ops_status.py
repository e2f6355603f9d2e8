"""`secure-collab status` over real processes: a coordinator process waiting for c and the solver, two parties
joined; status, run as its own process on the coordinator's host, shows the stage, the counts and the time left."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "network"))
sys.path.insert(0, str(ROOT / "tests"))

from network_doubles import SyntheticEngine, Threads, closed_form_solve, make_config  # noqa: E402
from test_role_feedback import _lines_until, _spawn  # noqa: E402


def _status(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "secure_collab", "status", *argv], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)


def _time_left(out: str) -> int:
    """The seconds on the 'time left' line (the test must not assume how fast a loaded machine gets there)."""
    import re

    m = re.search(r"^  time left +(\d+) s \(until \d\d:\d\d:\d\d[):]", out, re.M)
    assert m, out
    return int(m.group(1))


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
    assert 0 < _time_left(out) <= 120  # of the 120 s join deadline; how much is left depends on the machine's load
    assert "c            joined no" in out  # per-party detail: this is the coordinator's host


def test_status_away_from_the_coordinators_host_says_why_it_shows_nothing(tmp_path):
    make_config(tmp_path)
    res = _status("--config", str(next(tmp_path.glob("config-*.toml"))))
    assert res.returncode == 2 and "not the coordinator's host" in res.stderr and "attacks/wire.py" in res.stderr


def test_a_partys_status_on_its_own_host_shows_stage_and_counts_only(tmp_path):
    """Party a runs from its own directory (its session file, no ledger there): while the coordinator process
    waits for c and the solver, and after the session ends, `secure-collab status` there reads a's status file and
    shows a's stage, its own counts and the time left, and nothing of another party (no names, no timing)."""
    import shutil

    from parties import run_party
    from parties.status import FIELDS
    from secure_collab.config import load_config
    from secure_collab.protection import get_scheme
    from solver.server import run_solver

    cfg = make_config(tmp_path, min_parties=3, network={"join_timeout_s": 120.0})
    config = next(tmp_path.glob("config-*.toml"))
    site = tmp_path / "site-a"  # party a's host: the same session file, no ledger beside it
    site.mkdir()
    site_config = site / config.name
    shutil.copy(config, site_config)
    cfg_a = load_config(site_config)
    assert cfg_a.digest == cfg.digest and not cfg_a.paths.ledger.exists()
    scheme = get_scheme("plain")
    proc = _spawn(["coordinator", "--config", str(config)])
    th = Threads()
    try:
        _lines_until(proc, "listening on", 60)
        for n, c in (("a", cfg_a), ("b", cfg)):
            e = SyntheticEngine(n, cfg)
            th.start(n, lambda n=n, c=c, e=e: run_party(c, n, scheme, e.compute_statistics, e.apply_delta))
        _lines_until(proc, r"waiting for c, solver \(2 of 3 parties joined", 30)
        live = _status("--config", str(site_config), "--json", "-")  # auto-detects status-a.json
        live_human = _status("--config", str(site_config))
        e = SyntheticEngine("c", cfg)
        th.start("c", lambda: run_party(cfg, "c", scheme, e.compute_statistics, e.apply_delta))
        th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
        th.join(120)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert all(th.results[n].ok for n in "abc"), (th.errors, {n: r.reason for n, r in th.results.items()})
    after = _status("--config", str(site_config), "--json", "-")
    after_human = _status("--config", str(site_config))
    named = _status("--config", str(config), "--name", "b", "--json", "-")  # on the coordinator's host: --name
    for res in (live, live_human, after, after_human, named):
        assert res.returncode == 0, res.stderr
    steps = len(cfg.session.steps())
    releases = sum(len(layers) for _, layers in cfg.session.steps())
    doc = json.loads(live.stdout)
    assert set(doc) == set(FIELDS) and doc["party"] == "a" and doc["session"] == "s1"
    assert doc["stage"] == "joining" and not doc["joined"] and doc["contributed"] == 0 and doc["applied"] == 0
    assert doc["steps"] == steps and doc["releases"] == releases and doc["deadline"] > 0
    assert "session s1 (party a): joining" in live_human.stdout and 0 < _time_left(live_human.stdout) <= 120
    doc = json.loads(after.stdout)
    assert doc["stage"] == "done" and doc["joined"] and doc["deadline"] is None
    assert doc["contributed"] == steps and doc["applied"] == releases
    assert f"contributed  {steps} of {steps} steps" in after_human.stdout
    assert f"applied      {releases} of {releases} releases" in after_human.stdout
    assert json.loads(named.stdout)["party"] == "b" and json.loads(named.stdout)["stage"] == "done"
    # a party's status holds no other party: no name of b, c or the solver, no per-party timing
    for res in (live, live_human, after, after_human):
        text = json.dumps(json.loads(res.stdout)) if res.stdout.startswith("{") else res.stdout
        assert "per_party" not in text and "last heard" not in text and "last_heard" not in text
        assert not any(f'"{p}"' in text or f" {p} " in text for p in ("b", "c", "solver"))
    assert (site / "status-a.json").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "status-a.json").exists() and (tmp_path / "status-b.json").exists()


def test_a_partys_status_asks_which_party_when_several_ran_on_one_host(tmp_path):
    from parties.status import StatusFile

    cfg = make_config(tmp_path)
    config = next(tmp_path.glob("config-*.toml"))
    (tmp_path / "ledger.sqlite").unlink(missing_ok=True)
    for n in ("a", "b"):
        StatusFile(cfg, n, logging.getLogger("t")).update("joining")
    res = _status("--config", str(config))
    assert res.returncode == 2 and "--name" in res.stderr and "a, b" in res.stderr
    res = _status("--config", str(config), "--name", "b")
    assert res.returncode == 0 and "session s1 (party b): joining" in res.stdout
    res = _status("--config", str(config), "--name", "../x")
    assert res.returncode == 2 and "not a party of the roster" in res.stderr
