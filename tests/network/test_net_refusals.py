"""Bad contributions are refused with a reason sent back, and the session completes without them."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import zmq
from network_doubles import (
    RawClient,
    SyntheticEngine,
    make_config,
    reference_deltas,
    run_session,
)

from parties.client import Party
from secure_collab.ledger import Ledger
from secure_collab.protection import StatContext, get_scheme
from secure_collab.protocol.messages import MsgType


def _contrib(client, cfg, *, layer=1, chunk=0, values=None, attempt=0, session=None, config=None,
             stat="G", round_=0, raw=False):
    """A CONTRIB message; signed and protected for real unless ``raw`` (then dummy payload frames)."""
    s = cfg.session
    count = min(s.chunk_values, s.n_values(stat) - chunk * s.chunk_values)
    values = np.ones(count) if values is None else values
    ctx = StatContext(session or s.id, round_, layer, stat, client.name, chunk, attempt)
    if raw:
        payload_header, frames = {"party": client.name}, (b"\0" * 8 * count,)
    else:
        payload = client.protect(values, ctx)
        payload_header, frames = dict(payload.header), payload.frames
    body = {"attempt": attempt, "chunk": chunk, "n_chunks": s.n_chunks(stat),
            "offset": chunk * s.chunk_values, "count": count, "payload": payload_header}
    return client.msg(MsgType.CONTRIB, round_, layer, stat, body, frames, session=session, config=config)


def _bad_messages(cfg, other_cfg, client):
    good = _contrib(client, cfg)
    frames = good.to_frames()
    header = msgpack.unpackb(frames[0])
    data, seal, signature = frames[1:-2], frames[-2], frames[-1]

    def edited(**changes):  # the good header, changed, under a fresh sequence number
        return msgpack.packb(dict(header, seq=client.seq.next(), **changes))

    # built in sending order, so that sequence numbers increase as an honest sender's do
    return {
        "truncated": [frames[0]],
        "short payload": client.msg(MsgType.CONTRIB, 0, 1, "G", good.body,
                                    (bytes(data[0])[:24], *data[1:], seal, signature)).to_frames(),
        "oversized": [edited(digests=header["digests"] * 3), *frames[1:], b"x" * 40000, b"y" * 40000],
        "wrong digest": [edited(digests=["0" * 64] * len(frames[1:])), *frames[1:]],
        "wrong version": [edited(v=1), *frames[1:]],
        "garbage header": [b"\xc1\xff\x00", *frames[1:]],
        "wrong session": _contrib(client, other_cfg, session=other_cfg.session.id,
                                  config=other_cfg.digest).to_frames(),
        "wrong config": _contrib(client, cfg, config="ab" * 32).to_frames(),
        "wrong layer": _contrib(client, cfg, layer=2).to_frames(),
        "wrong round": _contrib(client, cfg, round_=1).to_frames(),
        "stale attempt": _contrib(client, cfg, attempt=5).to_frames(),
        "bad chunking": [edited(body=dict(header["body"], offset=1)), *frames[1:]],
        "bad signature": client.msg(MsgType.CONTRIB, 0, 1, "G", good.body,
                                    (*data, seal, bytes(64))).to_frames(),
        "forged sender": [edited(sender="a"), *frames[1:]],
        "forged payload party": [edited(body=dict(
            header["body"], payload=dict(header["body"]["payload"], party="a"))), *frames[1:]],
        "wrong type": client.msg(MsgType.RELEASE, 0, 1, body={
            "attempt": 0, "shape": [4, 6], "dtype": "<f8", "sha256": "0" * 64, "parties": []}).to_frames(),
        "replayed": frames,  # a well-formed message, byte for byte again
    }


EXPECTED = {
    "truncated": "frame count mismatch",
    "short payload": "frame 0: 24 bytes",
    "oversized": "message too large",
    "wrong digest": "sha256 mismatch",
    "wrong version": "unsupported protocol version",
    "garbage header": "not valid msgpack",
    "wrong session": "wrong session",
    "wrong config": "configuration digest",
    "wrong layer": "layer 2 is not open",
    "wrong round": "round 1 is not open",
    "stale attempt": "stale attempt",
    "bad chunking": "chunk 0 must cover",
    "bad signature": "party 'c': contribution signature does not verify",
    "forged sender": "sender claims 'a'",
    "forged payload party": "payload claims party 'a'",
    "wrong type": "not accepted from c",
    "replayed": "sequence number",
}


def test_bad_contributions_are_refused_and_session_completes(tmp_path):
    cfg = make_config(tmp_path, network={"stage_timeout_s": 1.5})
    other = make_config(tmp_path / "other", keys_dir=tmp_path / "keys", id="older-session")
    seen: dict[str, str] = {}

    def malicious() -> None:
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx)
        try:
            client.join()
            for label, frames in _bad_messages(cfg, other, client).items():
                client.send(frames)
                seen[label] = client.recv(MsgType.ERROR).body["reason"]
        finally:
            client.close()
            ctx.term()

    run = run_session(cfg, ["a", "b"], extra={"c": malicious})
    assert run.outcome.ok, run.outcome.reason
    assert set(seen) == set(EXPECTED)
    for label, want in EXPECTED.items():
        assert want in seen[label], (label, seen[label])
    ref = reference_deltas(cfg, ["a", "b"])
    for key, delta in ref.items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    assert run.outcome.included[(0, (1,))] == ("a", "b")
    with Ledger(cfg.paths.ledger) as ledger:
        refused = [r for r in ledger.rows("messages") if r["outcome"] == "refused"]
    assert len(refused) == len(seen) and all(r["peer"] == "c" and r["reason"] for r in refused)


class ReplayingParty(Party):
    """An authenticated party that, in round 1, replays its round-0 contributions twice: byte for byte,
    then re-numbered so the sequence check passes (then behaves)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.round0: list = []

    def _send(self, msg):
        if msg.type is MsgType.CONTRIB and msg.round == 0:
            self.round0.append(msg)
        if msg.type is MsgType.CONTRIB and msg.round == 1 and self.round0:
            for old in self.round0:
                self.sock.send_multipart(old.to_frames())
            for old in self.round0:
                self.sock.send_multipart(dataclasses.replace(old, seq=self.seq.next()).to_frames())
            self.round0 = []
            msg = dataclasses.replace(msg, seq=self.seq.next())  # numbered after the replays
        return super()._send(msg)


def test_replay_from_earlier_round_is_refused(tmp_path):
    cfg = make_config(tmp_path, rounds=2, layers=[1])
    engine = SyntheticEngine("c", cfg)
    scheme = get_scheme("plain")

    def replayer():
        return ReplayingParty(cfg, "c", scheme, engine.compute_statistics, engine.apply_delta).run()

    run = run_session(cfg, ["a", "b"], extra={"c": replayer})
    assert run.outcome.ok, run.outcome.reason
    refusals = run.extra["c"].refusals
    n_chunks = sum(cfg.session.n_chunks(st) for st in ("G", "B", "N"))
    assert len(refusals) == 2 * n_chunks
    assert all("sequence number" in r for r in refusals[:n_chunks])
    assert all("round 0 is not open" in r for r in refusals[n_chunks:])
    ref = reference_deltas(cfg, ["a", "b", "c"])
    for key, delta in ref.items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)


def test_frame_over_maxmsgsize_drops_the_connection_and_the_coordinator_goes_on(tmp_path):
    """libzmq enforces MAXMSGSIZE per frame by disconnecting the peer: no reply is possible there."""
    import threading

    from zmq.utils.monitor import recv_monitor_message

    from coordinator.server import run_coordinator

    cfg = make_config(tmp_path)
    stop = threading.Event()
    coordinator = threading.Thread(target=run_coordinator, args=(cfg, get_scheme("plain")),
                                   kwargs={"stop": stop})
    coordinator.start()
    ctx = zmq.Context()
    client = RawClient(cfg, "c", ctx)
    monitor = client.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    monitor.setsockopt(zmq.RCVTIMEO, 10000)
    try:
        huge = _contrib(client, cfg, raw=True).to_frames()[:1] + [b"x" * (cfg.network.max_message_bytes + (2 << 20))]
        client.send(huge)

        def wait_event(event):  # events before the one wanted (the first handshake) are skipped
            while recv_monitor_message(monitor)["event"] != event:
                pass

        wait_event(zmq.EVENT_DISCONNECTED)
        wait_event(zmq.EVENT_HANDSHAKE_SUCCEEDED)  # libzmq reconnects by itself
        client.send(_contrib(client, cfg, raw=True).to_frames())
        assert "unexpected contrib in stage joining" in client.recv(MsgType.ERROR).body["reason"]
    finally:
        client.sock.disable_monitor()
        monitor.close(linger=0)
        client.close()
        ctx.term()
        stop.set()
        coordinator.join(10)
