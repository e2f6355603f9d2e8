"""What roles say about their connection: nothing alarming after a successful session's END; a back-off at its
cap still says it retries, and until when."""

from __future__ import annotations

import logging
import time

import zmq
from network_doubles import make_config, run_session

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
