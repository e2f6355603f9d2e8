"""A party's older connection still talking after a newer one took over must not keep the party from hearing the end.

Found by a CI failure of the fuzz test (party c: "send timed out" after a session the others completed): the
coordinator reads each connection's queue in turn, so a message of an older connection of c (the fuzzer's, or a
restarted party's old process) can be read after the newer connection's HELLO and make the older one c's route; END
went only there, and c waited on. Here an older connection of c sends a valid heartbeat HELLO every 20 ms through
the whole session while the honest c runs on a newer one: c ends the session with every release applied. Since
coordinator/connections.py a connection is a party's route only from its welcomed HELLO, once per connection, so the
older connection's heartbeats no longer move c's route at all (each connection joins once).
"""

from __future__ import annotations

import threading
import time

import zmq
from network_doubles import RawClient, SyntheticEngine, assert_extra_party_complete, make_config, run_session

from parties import run_party
from secure_collab.ledger import Ledger
from secure_collab.protection import get_scheme
from secure_collab.protocol.messages import MsgType


def test_an_older_connection_of_a_party_does_not_keep_it_from_the_end(tmp_path):
    cfg = make_config(tmp_path, network={"budget_headroom": 1e4, "welcome_interval_s": 0.05})
    scheme = get_scheme(cfg.session.mode)
    engine = SyntheticEngine("c", cfg)
    stop, old_sent, honest_run = threading.Event(), [], []

    def c_twice():
        ctx = zmq.Context()
        old = RawClient(cfg, "c", ctx)
        try:
            old.send(old.msg(MsgType.HELLO, body={"role": "party", "public": False}).to_frames())
            old.recv(MsgType.SETUP)  # the older connection is c's route now

            def keep_talking():
                while not stop.is_set():
                    old.send(old.msg(MsgType.HELLO, body={"role": "party", "public": False}).to_frames())
                    old_sent.append(time.monotonic())
                    while old.sock.poll(0):
                        old.sock.recv_multipart()
                    time.sleep(0.02)

            talker = threading.Thread(target=keep_talking, daemon=True)
            talker.start()
            try:  # the honest party on a newer connection, while the older one keeps sending
                honest_run.append(time.monotonic())
                result = run_party(cfg, "c", scheme, engine.compute_statistics, engine.apply_delta)
                honest_run.append(time.monotonic())
                return result
            finally:
                stop.set()
                talker.join(5)
        finally:
            old.close()
            ctx.term()

    run = run_session(cfg, ["a", "b"], extra={"c": c_twice}, timeout=60.0)
    assert_extra_party_complete(cfg, run, "c", ["a", "b", "c"])
    start, end = honest_run
    assert sum(start <= t <= end for t in old_sent) >= 3  # the older connection talked while the honest c ran
    with Ledger(cfg.paths.ledger) as ledger:
        rows = ledger.rows("messages")
    joins = [r for r in rows if r["peer"] == "c" and r["direction"] == "in" and r["reason"] == "joined"]
    assert len(joins) == 2  # each connection of c joined once: the older one's heartbeats did not take c's route back
