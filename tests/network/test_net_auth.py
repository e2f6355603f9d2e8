"""Authentication: roster-only CURVE admission, and parties that refuse what the solver did not sign."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from network_doubles import SyntheticEngine, make_config

from coordinator.server import run_coordinator
from parties import run_party
from secure_collab.keys import CurveKeyPair, load_curve_pair, load_signing_key
from secure_collab.protection import ProtectionParams, get_scheme
from secure_collab.protection.sealing import encrypt_release
from secure_collab.protection.statements import release_bytes, release_label, setup_bytes
from secure_collab.protocol import transport
from secure_collab.protocol.messages import Message, MsgType, Sequencer, sha256_hex
from secure_collab.protocol.release import encode_delta


def test_key_not_in_roster_is_refused(tmp_path):
    cfg = make_config(tmp_path)
    stop = threading.Event()
    done: dict = {}
    coordinator = threading.Thread(target=lambda: done.setdefault("o", run_coordinator(cfg, get_scheme("plain"),
                                                                                      stop=stop)))
    coordinator.start()
    ctx = zmq.Context()
    public, secret = zmq.curve_keypair()
    sock = transport.dealer(ctx, CurveKeyPair(public, secret), cfg.roster.coordinator.curve, cfg.network)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    monitor.setsockopt(zmq.RCVTIMEO, 10000)
    try:
        hello = Message(MsgType.HELLO, cfg.session.id, sender="a", config=cfg.digest,
                        body={"role": "party", "public": False})
        sock.send_multipart(hello.to_frames())
        from zmq.utils.monitor import recv_monitor_message

        event = recv_monitor_message(monitor)
        assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert event["value"] == 400  # ZAP said no
        assert not sock.poll(200)  # and nothing ever comes back
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
        ctx.term()
        stop.set()
        coordinator.join(10)
    assert not done["o"].ok
    from secure_collab.ledger import Ledger

    with Ledger(cfg.paths.ledger) as ledger:
        assert ledger.rows("messages") == []


class FakeCoordinator:
    """A coordinator that tampers with what it relays (it has the coordinator's CURVE key)."""

    def __init__(self, cfg, ctx):
        from zmq.auth.thread import ThreadAuthenticator

        self.cfg, self.s = cfg, cfg.session
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        self.sock = transport.router(ctx, load_curve_pair(cfg.paths.keys / "coordinator.key_secret"),
                                     cfg.network)
        self.sock.setsockopt(zmq.RCVTIMEO, 10000)
        self.seq = Sequencer()

    def msg(self, mtype, round_=-1, layer=-1, body=None, frames=()):
        return Message(mtype, self.s.id, round_, layer, "", "coordinator", self.seq.next(), self.cfg.digest,
                       body or {}, frames)

    def recv(self, want):
        while True:
            route, *frames = self.sock.recv_multipart()
            msg = Message.from_frames(frames)
            if msg.type is want:
                return route, msg

    def recv_any(self):
        """The next message other than a heartbeat HELLO."""
        while True:
            route, *frames = self.sock.recv_multipart()
            msg = Message.from_frames(frames)
            if msg.type is not MsgType.HELLO:
                return route, msg

    def send(self, route, msg):
        self.sock.send_multipart([route, *msg.to_frames()])

    def release(self, layer, delta, key, tamper=False):
        raw, dtype, shape = encode_delta(delta)
        parties = ["a", "b"]
        label = release_label(self.s.id, self.cfg.digest, 0, layer, 0)
        ciphertext = encrypt_release(self.release_key, label, raw, bytes(12))
        sig = key.sign(release_bytes(self.s.id, self.cfg.digest, 0, layer, 0, dtype, shape,
                                     sha256_hex(ciphertext), parties))
        if tamper:  # change ΔW after signing, keep its sha256 consistent
            ciphertext = encrypt_release(self.release_key, label, encode_delta(delta + 1e-3)[0], bytes(12))
        body = {"attempt": 0, "shape": shape, "dtype": dtype, "sha256": sha256_hex(ciphertext),
                "parties": parties}
        return self.msg(MsgType.RELEASE, 0, layer, body, (ciphertext, sig))


def _drive(cfg, script):
    """Run party a against a fake coordinator running ``script(fake, route)``."""
    ctx = zmq.Context()
    fake = FakeCoordinator(cfg, ctx)
    engine = SyntheticEngine("a", cfg)
    out = {}
    party = threading.Thread(target=lambda: out.setdefault("r", run_party(
        cfg, "a", get_scheme("plain"), engine.compute_statistics, engine.apply_delta)))
    party.start()
    try:
        route, _ = fake.recv(MsgType.HELLO)
        script(fake, route)
        party.join(15)
        assert not party.is_alive()
    finally:
        fake.sock.close(linger=0)
        fake.auth.stop()
        ctx.term()
    return out["r"], engine


def _setup(fake, route, key):
    """A real setup (public parameters and bundles sealed to each roster party), signed with ``key``."""
    scheme = get_scheme("plain")
    recipients = {n: ident.sealing for n, ident in fake.cfg.roster.parties.items()}
    params = ProtectionParams("plain", len(recipients), fake.s.value_bound, fake.s.min_parties)
    keys = scheme.solver_setup(params, recipients)
    fake.release_key = keys.release_key
    sig = key.sign(setup_bytes(fake.s.id, fake.cfg.digest, keys.public, keys.bundles))
    fake.send(route, fake.msg(MsgType.SETUP, body={"mode": "plain", "layers": [1, 2], "rounds": 1,
                                                   "variant": "sequential"},
                              frames=(keys.public, keys.bundles, sig)))


def test_party_refuses_release_whose_signature_does_not_verify(tmp_path):
    cfg = make_config(tmp_path)
    key = load_signing_key(cfg.paths.keys / "solver.key_secret")
    good = np.full((4, 6), 0.5)
    acks = []

    def script(fake, route):
        _setup(fake, route, key)
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [1], "attempt": 0}))
        for _ in range(sum(cfg.session.n_chunks(st) for st in ("G", "B", "N"))):
            fake.recv(MsgType.CONTRIB)
        fake.send(route, fake.release(1, good, key))
        acks.append(fake.recv(MsgType.ACK)[1].body)
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [2], "attempt": 0}))
        for _ in range(sum(cfg.session.n_chunks(st) for st in ("G", "B", "N"))):
            fake.recv(MsgType.CONTRIB)
        fake.send(route, fake.release(2, good, key, tamper=True))
        acks.append(fake.recv(MsgType.ACK)[1].body)

    result, engine = _drive(cfg, script)
    assert acks[0] == {"ok": True, "reason": ""}
    assert acks[1]["ok"] is False and "signature does not verify" in acks[1]["reason"]
    assert not result.ok and "signature does not verify" in result.reason
    np.testing.assert_array_equal(engine.w[1], good)
    np.testing.assert_array_equal(engine.w[2], 0.0)  # the tampered ΔW was never applied
    assert list(result.applied) == [(0, 1)]


@pytest.mark.parametrize("forged", ["setup", "release"])
def test_party_refuses_anything_signed_by_another_key(tmp_path, forged):
    cfg = make_config(tmp_path)
    real = load_signing_key(cfg.paths.keys / "solver.key_secret")
    other = Ed25519PrivateKey.generate()

    def script(fake, route):
        _setup(fake, route, other if forged == "setup" else real)
        if forged == "release":
            fake.send(route, fake.release(1, np.ones((4, 6)), other))
            fake.recv(MsgType.ACK)

    result, engine = _drive(cfg, script)
    assert not result.ok and f"{forged}: signature does not verify" in result.reason
    assert engine.compute_calls == [] and result.bytes_sent == 0 and result.applied == {}


def test_solver_refuses_an_aggregate_of_fewer_than_min_parties(tmp_path):
    from network_doubles import closed_form_solve

    from solver.server import run_solver

    cfg = make_config(tmp_path)
    ctx = zmq.Context()
    fake = FakeCoordinator(cfg, ctx)
    out = {}
    solver = threading.Thread(target=lambda: out.setdefault("r", run_solver(cfg, get_scheme("plain"),
                                                                            closed_form_solve)))
    solver.start()
    try:
        route, hello = fake.recv(MsgType.HELLO)
        assert hello.body == {"role": "solver", "public": True}
        one = {"scheme": "test-plain-sum", "parties": ["a"], "n": 7}
        body = {"attempt": 0, "chunk": 0, "n_chunks": 3, "offset": 0, "count": 7, "payload": one,
                "parties": ["a"], "n_values": 21}
        msg = Message(MsgType.AGGREGATE, cfg.session.id, 0, 1, "G", "coordinator", 1, cfg.digest, body,
                      (np.ones(7).tobytes(),))
        fake.send(route, msg)
        _, error = fake.recv(MsgType.ERROR)
        fake.send(route, fake.msg(MsgType.END, body={"ok": False, "reason": "test over"}))
        solver.join(15)
        assert not solver.is_alive()
    finally:
        fake.sock.close(linger=0)
        fake.auth.stop()
        ctx.term()
    assert "min_parties" in error.body["reason"]
    assert out["r"].received == [] and out["r"].releases == {}


def test_party_never_contributes_to_a_step_it_applied_a_release_of(tmp_path):
    """A coordinator that asks again for a released step (hoping for a second opening over another party set,
    e.g. after rolling the solver's disk back) gets a refusal and no contribution from an honest party."""
    cfg = make_config(tmp_path)
    key = load_signing_key(cfg.paths.keys / "solver.key_secret")
    seen = {}

    def script(fake, route):
        _setup(fake, route, key)
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [1], "attempt": 0}))
        for _ in range(sum(cfg.session.n_chunks(st) for st in ("G", "B", "N"))):
            fake.recv(MsgType.CONTRIB)
        fake.send(route, fake.release(1, np.full((4, 6), 0.5), key))
        fake.recv(MsgType.ACK)
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [1], "attempt": 1}))
        _, reply = fake.recv_any()
        seen["reply"] = reply
        fake.send(route, fake.msg(MsgType.END, body={"ok": False, "reason": "test over"}))

    result, engine = _drive(cfg, script)
    assert seen["reply"].type is MsgType.ERROR and "already released" in seen["reply"].body["reason"]
    assert engine.compute_calls == [(0, 1)]  # nothing computed or sent for the second request
