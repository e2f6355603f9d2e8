"""Roles say what they do: a party with no coordinator says so within 10 s and gives up at its join deadline;
a coordinator abort reaches every party with its reason; the coordinator logs listening / joining / releases."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from secure_collab.cli import main
from secure_collab.keys import init_keys
from secure_collab.protocol.transport import free_loopback_endpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "network"))

from network_doubles import SyntheticEngine, Threads, make_config  # noqa: E402


def _spawn(argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "secure_collab", *argv], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


_PENDING: dict[int, str] = {}  # per process: stderr text read from the pipe but not yet handed out as lines


def _lines_until(proc: subprocess.Popen, pattern: str, timeout: float) -> list[tuple[float, str]]:
    """(arrival time, line) of the process's stderr up to the first line matching ``pattern``.

    Reads the pipe's file descriptor itself: ``readline`` on the buffered ``proc.stderr`` pulls several lines into
    its buffer at once, and the selector, which watches the descriptor, then never reports the ones left there
    until the process writes again (a coordinator that wrote its "2 of 3 joined" line with the join line before it
    was seen to say nothing for 30 s)."""
    fd = proc.stderr.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    seen: list[tuple[float, str]] = []
    buf = _PENDING.pop(id(proc), "")
    end = time.monotonic() + timeout
    try:
        while True:
            while "\n" in buf:
                line, buf = buf.split("\n", 1)
                seen.append((time.monotonic(), line))
                if re.search(pattern, line):
                    return seen
            if time.monotonic() >= end:
                break
            if sel.select(timeout=0.2):
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                buf += chunk.decode("utf-8", errors="replace")
    finally:
        _PENDING[id(proc)] = buf
        sel.close()
    raise AssertionError(f"no stderr line matching {pattern!r} within {timeout} s; got {seen}")


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """``proc.communicate`` with the stderr that ``_lines_until`` read but did not hand out put back in front."""
    out, err = proc.communicate(timeout=timeout)
    return out, _PENDING.pop(id(proc), "") + (err or "")


def test_party_without_a_coordinator_says_so_within_10_s(tmp_path):
    init_keys(tmp_path / "keys", ["a", "b"])
    endpoint = free_loopback_endpoint()  # nothing listens there
    assert main(["session", "init", "--model", "tiny-llama", "--roster", str(tmp_path / "keys/roster.toml"), "--out",
                 str(tmp_path / "session.toml"), "--endpoint", endpoint, "--join-timeout-s", "8",
                 "--cache-dir", str(tmp_path / "cache"), "-q"]) == 0
    (tmp_path / "r.jsonl").write_text(json.dumps({"subject": "France", "prompt": "The capital of {} is",
                                                  "target_new": "Rome", "target_true": "Paris"}) + "\n")
    proc = _spawn(["party", "--config", str(tmp_path / "session.toml"), "--name", "a", "--requests",
                   str(tmp_path / "r.jsonl"), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
                   "--json", "-"])
    try:
        lines = _lines_until(proc, "connecting to the coordinator", 120)
        t_connect = lines[-1][0]
        lines = _lines_until(proc, "cannot reach the coordinator|no connection to the coordinator", 10)
        assert lines[-1][0] - t_connect < 10
        assert endpoint in lines[-1][1] and "until" in lines[-1][1]  # says how long it keeps trying
        out, err = _communicate(proc, 60)  # gives up at join_timeout_s (8 s), not after 40 minutes
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert re.search(r"retrying in [\d.]+ s", "\n".join(line for _, line in lines) + err)
    assert f"stopped: could not reach the coordinator at {endpoint} within join_timeout_s (8 s)" in err
    assert "party a: FAILED: could not reach the coordinator" in err  # human output on stderr with --json -
    report = json.loads(out)  # stdout is the JSON report alone
    assert report["ok"] is False and report["reason"].startswith("could not reach the coordinator")
    assert "Traceback" not in err


def test_coordinator_abort_reaches_every_party_with_its_reason(tmp_path):
    """A real coordinator process stopped by its operator while a and b wait for c: both get END and why."""
    from parties import run_party
    from secure_collab.protection import get_scheme

    cfg = make_config(tmp_path, min_parties=3, network={"join_timeout_s": 120.0})
    proc = _spawn(["coordinator", "--config", str(next(tmp_path.glob("config-*.toml")))])
    th = Threads()
    try:
        _lines_until(proc, "listening on", 60)
        engines = {n: SyntheticEngine(n, cfg) for n in ("a", "b")}
        for n, e in engines.items():
            th.start(n, lambda n=n, e=e: run_party(cfg, n, get_scheme("plain"), e.compute_statistics,
                                                   e.apply_delta))
        seen = _lines_until(proc, r"waiting for c, solver \(2 of 3 parties joined", 30)
        assert any("party a joined" in ln for _, ln in seen) and any("party b joined" in ln for _, ln in seen)
        proc.send_signal(signal.SIGINT)
        th.join(30)
        _, err = _communicate(proc, 30)
    finally:
        proc.kill()
    assert proc.returncode == 2 and err.strip().splitlines()[-1] == "secure-collab coordinator: error: interrupted"
    assert "coordinator: stopping… (telling every connected peer why" in err  # at once, before the linger
    for n in ("a", "b"):
        result = th.results[n]
        assert not result.ok and result.reason == "the coordinator was stopped by its operator", (n, result)


def test_join_deadline_abort_reaches_every_party(tmp_path):
    """Too few parties before the join deadline: the coordinator's reason reaches the parties that came."""
    from coordinator.server import run_coordinator
    from parties import run_party
    from secure_collab.protection import get_scheme

    cfg = make_config(tmp_path, min_parties=3, network={"join_timeout_s": 2.0})
    scheme = get_scheme("plain")
    th = Threads()
    th.start("coordinator", lambda: run_coordinator(cfg, scheme))
    for n in ("a", "b"):
        e = SyntheticEngine(n, cfg)
        th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
    th.join(30)
    outcome = th.results["coordinator"]
    assert not outcome.ok and outcome.reason
    for n in ("a", "b"):
        assert not th.results[n].ok and th.results[n].reason == outcome.reason
