"""What roles say about their connection: nothing alarming after a successful session's END; a back-off at its
cap still says it retries, and until when."""

from __future__ import annotations

import logging
import time

import zmq
from network_doubles import SyntheticEngine, Threads, closed_form_solve, make_config, run_session

from secure_collab.protocol.watch import RETRY_MAX_MS, ConnectionWatch

ALARMS = ("lost the connection", "cannot reach the coordinator", "no connection to the coordinator")


def test_a_successful_session_ends_without_connection_warnings(tmp_path, caplog):
    cfg = make_config(tmp_path)
    with caplog.at_level(logging.INFO):
        run = run_session(cfg)
        time.sleep(3.0)  # longer than a watch's grace: a held-back warning would be out by now
    assert run.outcome.ok
    ends = [r for r in caplog.records if "ended the session" in r.getMessage()]
    assert len(ends) == 4  # three parties and the solver were told
    after = [r.getMessage() for r in caplog.records if r.created >= min(e.created for e in ends)
             and any(a in r.getMessage() for a in ALARMS)]
    assert after == []


def test_a_back_off_at_its_cap_keeps_saying_it_retries_and_until_when(caplog):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        watch = ConnectionWatch(sock, "tcp://127.0.0.1:9", logging.getLogger("party.t"), 600, repeat_s=0.0)
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                watch._on(zmq.EVENT_CONNECT_RETRIED, RETRY_MAX_MS)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 3 and "retrying in 8 s" in lines[0]
        assert all("still cannot reach" in ln and f"until {watch.until}" in ln for ln in lines[1:])
    finally:
        ctx.destroy(linger=0)  # the socket and the watch's monitor


def test_after_a_lost_connection_the_retry_lines_say_the_idle_limit_not_the_passed_join_deadline(caplog):
    """A CI log showed "retrying every 8 s until 12:35:35 (then this role stops)" at 12:35:57: after the first
    connection the role stops on its idle limit, which the lines now say."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        watch = ConnectionWatch(sock, "tcp://127.0.0.1:9", logging.getLogger("party.t"), 600, repeat_s=0.0,
                                grace_s=0.0, idle_s=1234)
        watch._on(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0)
        watch._on(zmq.EVENT_DISCONNECTED, 0)
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                watch._on(zmq.EVENT_CONNECT_RETRIED, RETRY_MAX_MS)
            watch._flush()
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 4 and "lost the connection" in lines[0], lines
        assert all("up to 1234 s since the coordinator was last heard" in ln and watch.until not in ln
                   for ln in lines[1:]), lines
    finally:
        ctx.destroy(linger=0)


class _Stopped(Exception):
    """Party c's operator pressed Ctrl-C while it computed its statistics."""


def test_a_party_stopped_mid_session_is_named_in_the_coordinator_log_within_one_interval(tmp_path, caplog):
    from coordinator.server import run_coordinator
    from parties import run_party
    from secure_collab.protection import get_scheme
    from solver.server import run_solver

    interval = 1.0
    cfg = make_config(tmp_path, network={"wait_log_s": interval, "stage_timeout_s": 6.0})
    scheme = get_scheme("plain")
    stopped_at: list[float] = []

    def stop_c(round: int, layer: int) -> dict:
        stopped_at.append(time.time())
        raise _Stopped

    def run_c() -> str:
        try:
            run_party(cfg, "c", scheme, stop_c, SyntheticEngine("c", cfg).apply_delta)
        except _Stopped:
            return "stopped"
        return "not stopped"

    th = Threads()
    with caplog.at_level(logging.INFO):
        th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
        th.start("coordinator", lambda: run_coordinator(cfg, scheme))
        for n in ("a", "b"):
            e = SyntheticEngine(n, cfg)
            th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
        th.start("c", run_c)
        th.join(60)
    assert th.results["c"] == "stopped" and th.results["coordinator"].ok  # a and b go on at the stage timeout
    coord = [r for r in caplog.records if r.name == "coordinator" and r.created >= stopped_at[0]]
    named = [r for r in coord if "c" in r.getMessage() and ("dropped" in r.getMessage()
                                                            or "still waiting" in r.getMessage())]
    assert named and named[0].created - stopped_at[0] <= interval + 0.5, [r.getMessage() for r in coord]
    assert any("party c's connection dropped" in r.getMessage() and "the same command" in r.getMessage()
               for r in named)
    waits = [r.getMessage() for r in named if "still waiting" in r.getMessage()]
    assert waits and "c (since " in waits[0] and "connection dropped at" in waits[-1]
    assert "goes on without them if at least min_parties (2) remain" in waits[0]
