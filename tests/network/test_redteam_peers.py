"""Red team on the peers: a hostile party against the coordinator, a cheating coordinator against a party.

Real coordinator and party runtimes over CurveZMQ; the attacker is a hand-driven peer holding a roster key
(a party's, or the coordinator's with the fake coordinator of test_net_auth).
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import zmq
from network_doubles import RawClient, SyntheticEngine, Threads, make_config
from test_net_auth import FakeCoordinator, _setup

from parties import run_party
from secure_collab.keys import load_signing_key
from secure_collab.protection import ProtectionParams, get_scheme
from secure_collab.protection.statements import setup_bytes
from secure_collab.protocol.messages import Message, MsgType


# Was a BREAK (strict xfail): a round above 2^63 - 1 reached the ledger and SQLite's OverflowError killed the
# coordinator. Fixed by the schema tables of protocol/messages.py (every header and body integer bounded) and
# _receive refusing anything a parser or handler raises; the test now passes.
def test_redteam_out_of_range_integer_from_a_party_stops_the_coordinator(tmp_path):
    from coordinator.server import run_coordinator

    cfg = make_config(tmp_path)
    stop, th = threading.Event(), Threads()
    th.start("coordinator", lambda: run_coordinator(cfg, get_scheme("plain"), stop=stop))
    ctx = zmq.Context()
    client = RawClient(cfg, "c", ctx)
    client.sock.setsockopt(zmq.RCVTIMEO, 2000)
    try:
        client.send(client.msg(MsgType.HELLO, body={"role": "party", "public": False}).to_frames())
        client.send(client.msg(MsgType.ACK, 2**64 - 1, body={"ok": True, "reason": ""}).to_frames())
        # a probe the coordinator always answers (a contribution while it is still waiting for the solver)
        client.send(client.msg(MsgType.CONTRIB, 0, 1, "G", body={}).to_frames())
        refusals = []
        try:
            while not any("contrib" in r for r in refusals):  # the ACK's refusal comes first
                refusals.append(client.recv(MsgType.ERROR).body["reason"])
        except zmq.Again:
            pass
        answer = refusals[-1] if refusals else None
    finally:
        client.close()
        ctx.term()
        stop.set()
        for t in th.threads:
            t.join(10)
    assert not th.errors, f"the coordinator died: {th.errors}"
    assert answer is not None and "contrib" in answer


def _party_against(cfg, script):
    """Party a (real runtime) against the fake coordinator running ``script(fake, route)``; the party's
    result or the exception it died of."""
    ctx = zmq.Context()
    fake = FakeCoordinator(cfg, ctx)
    engine = SyntheticEngine("a", cfg)
    th = Threads()
    th.start("a", lambda: run_party(cfg, "a", get_scheme("plain"), engine.compute_statistics, engine.apply_delta))
    acks = []
    try:
        route, _ = fake.recv(MsgType.HELLO)
        script(fake, route)
        for t in th.threads:
            t.join(15)
            assert not t.is_alive()
        while fake.sock.poll(200):  # what the party said before it stopped (its socket lingers to send it)
            _, *frames = fake.sock.recv_multipart()
            msg = Message.from_frames(frames)
            if msg.type is MsgType.ACK:
                acks.append(msg.body)
    finally:
        fake.sock.close(linger=0)
        fake.auth.stop()
        ctx.term()
    return th.results.get("a"), th.errors.get("a"), engine, acks


@pytest.mark.parametrize("parties", [[1, "a"], [b"a"]], ids=["mixed", "bytes"])
def test_redteam_malformed_release_body_is_refused_not_a_crash(tmp_path, parties):
    cfg = make_config(tmp_path)
    key = load_signing_key(cfg.paths.keys / "solver.key_secret")

    def script(fake, route):
        _setup(fake, route, key)
        good = fake.release(1, np.ones((4, 6)), key)
        fake.send(route, dataclasses.replace(good, body={**good.body, "parties": parties}))

    result, error, engine, acks = _party_against(cfg, script)
    assert error is None, f"party a died of {error!r}"
    assert not result.ok and "refused release" in result.reason and acks and acks[0]["ok"] is False
    np.testing.assert_array_equal(engine.w[1], 0.0)


@pytest.mark.parametrize("replay", ["setup-of-another-session", "release-as-another-layer",
                                    "release-as-another-round", "release-as-another-attempt"])
def test_redteam_party_refuses_solver_signed_messages_replayed_out_of_context(tmp_path, replay):
    """Defence: everything the solver signs is bound to its session, configuration, round, layer and attempt.
    The coordinator replays genuine solver-signed bytes where they were not made for: refused, nothing
    applied, nothing computed."""
    cfg = make_config(tmp_path)
    other = make_config(tmp_path / "other", keys_dir=tmp_path / "keys", id="older-session")
    key = load_signing_key(cfg.paths.keys / "solver.key_secret")

    def script(fake, route):
        if replay == "setup-of-another-session":
            scheme = get_scheme("plain")
            recipients = {n: ident.sealing for n, ident in cfg.roster.parties.items()}
            keys = scheme.solver_setup(ProtectionParams("plain", 3, cfg.session.value_bound), recipients)
            sig = key.sign(setup_bytes(other.session.id, other.digest, keys.public, keys.bundles))
            fake.send(route, fake.msg(MsgType.SETUP, body={"mode": "plain", "layers": [1, 2], "rounds": 1,
                                                           "variant": "sequential"},
                                      frames=(keys.public, keys.bundles, sig)))
            return
        _setup(fake, route, key)
        genuine = fake.release(1, np.ones((4, 6)), key)  # signed for round 0, layer 1, attempt 0
        moved = {"release-as-another-layer": dataclasses.replace(genuine, layer=2),
                 "release-as-another-round": dataclasses.replace(genuine, round=1),
                 "release-as-another-attempt": dataclasses.replace(genuine, body={**genuine.body, "attempt": 1})}
        fake.send(route, moved[replay])

    result, error, engine, acks = _party_against(cfg, script)
    assert error is None and not result.ok and "signature does not verify" in result.reason
    assert result.applied == {} and engine.compute_calls == [] and all(np.all(w == 0) for w in engine.w.values())
    if replay.startswith("release"):
        assert acks and all(a["ok"] is False and "signature does not verify" in a["reason"] for a in acks)
