"""Red team, second pass on protocol v2: a hostile party against the live coordinator, a cheating coordinator
against a real party runtime. Real CurveZMQ sockets; the attacker holds a roster key (a party's, or the
coordinator's with the fake coordinator of test_net_auth).

Each test was a BREAK of a claim in docs/threat-model.md when written (a strict xfail), fixed since.
"""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from network_doubles import RawClient, make_config, reference_deltas, run_session
from test_net_auth import _setup
from test_redteam_peers import _party_against

from secure_collab.keys import load_signing_key
from secure_collab.ledger import Ledger
from secure_collab.protocol.messages import MsgType

SHORT = {"stage_timeout_s": 1.0}


def _rows(cfg, peer):
    with Ledger(cfg.paths.ledger) as ledger:
        return [r for r in ledger.rows("messages") if r["peer"] == peer]


def test_redteam_acks_for_releases_never_sent_are_recorded_one_row_each(tmp_path):
    cfg = make_config(tmp_path, network=SHORT)
    forged = 60

    def attack():
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx)
        try:
            client.join()  # takes the setup and the first REQUEST, then never contributes
            for layer in range(100, 100 + forged):  # no such layer in this session: nothing was ever released
                client.send(client.msg(MsgType.ACK, 7, layer, body={
                    "ok": False, "reason": "forged: this release was tampered with " + "x" * 300}).to_frames())
            client.sock.setsockopt(zmq.RCVTIMEO, 3000)
            try:
                while True:
                    client.recv(MsgType.END)
                    return
            except zmq.Again:
                return
        finally:
            client.close()
            ctx.term()

    run = run_session(cfg, ["a", "b"], extra={"c": attack})
    assert run.outcome.ok, run.outcome.reason  # the attack is not a denial of service: the session completes
    for key, delta in reference_deltas(cfg, ["a", "b"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    accepted = [r for r in _rows(cfg, "c") if r["type"] == "ack" and r["outcome"] == "accepted"]
    released = {(r, lay) for r, lay in run.outcome.releases}
    bogus = [r for r in accepted if (r["round"], r["layer"]) not in released]
    assert bogus == [], f"{len(bogus)} ledger rows for ACKs of releases that do not exist, e.g. {bogus[0]['reason']!r}"


def test_redteam_oneshot_party_contributes_again_to_a_layer_it_applied(tmp_path):
    cfg = make_config(tmp_path, variant="oneshot")
    key = load_signing_key(cfg.paths.keys / "solver.key_secret")
    per_layer = sum(cfg.session.n_chunks(st) for st in ("G", "B", "N"))
    seen = {}

    def script(fake, route):
        _setup(fake, route, key)
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [1, 2], "attempt": 0}))
        for _ in range(2 * per_layer):
            fake.recv(MsgType.CONTRIB)
        # the solver released both layers; this coordinator forwards layer 1's (genuine) and withholds layer 2's
        fake.send(route, fake.release(1, np.full((4, 6), 0.5), key))
        seen["ack"] = fake.recv(MsgType.ACK)[1].body
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [1, 2], "attempt": 1}))
        _, reply = fake.recv_any()
        seen["reply"] = reply
        fake.send(route, fake.msg(MsgType.END, body={"ok": False, "reason": "test over"}))

    result, error, engine, _ = _party_against(cfg, script)
    assert error is None, f"party a died of {error!r}"
    assert seen["ack"]["ok"] is True and (0, 1) in result.applied  # layer 1's release was applied
    reply = seen["reply"]
    assert reply.type is not MsgType.CONTRIB, (
        f"party a contributed again (layer {reply.layer} {reply.stat}, attempt {reply.body['attempt']}) to a "
        "step whose layer 1 release it had applied")


# ---- a CKKS decompression bomb in one CONTRIB frame ------------------------------------------------------------
def _varint(x):
    out = bytearray()
    while True:
        low, x = x & 0x7F, x >> 7
        out.append(low | (0x80 if x else 0))
        if not x:
            return bytes(out)


def _zero_ciphertext(parms_id, n, primes, scale):
    """A SEAL ciphertext (size 2, all-zero data, the session's parms_id and scale) serialised with zstd, its zero
    data as RLE blocks: ~130 bytes on the wire for 2·n·primes·8 bytes once loaded (the SEAL 4 layout)."""
    import struct

    words = 2 * n * primes
    inner = struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 3, 0, 0, 16 + 8 + 8 * words) + struct.pack("<Q", words)
    meta = struct.pack("<4QBQQQdQ", *parms_id, 1, 2, n, primes, scale, 1) + inner
    blocks, left = (len(meta) << 3).to_bytes(3, "little") + meta, 8 * words  # one raw block, then RLE zeros
    while left:
        size = min(left, 1 << 17)
        left -= size
        blocks += ((not left) | (1 << 1) | (size << 3)).to_bytes(3, "little") + b"\0"
    frame = b"\x28\xb5\x2f\xfd\xe0" + struct.pack("<Q", len(meta) + 8 * words) + blocks
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 3, 2, 0, 16 + len(frame)) + frame


def _bomb(parms_id, n, primes, scale, count, limit):
    """A TenSEAL CKKSVector (protobuf: sizes, ciphertexts, scale) holding as many zero ciphertexts as fit in
    ``limit`` bytes: the size check of ckks._load_checked passes, the parse happens before the count check."""
    import struct

    ct = _zero_ciphertext(parms_id, n, primes, scale)
    item = b"\x12" + _varint(len(ct)) + ct
    head = b"\x0a" + _varint(len(_varint(count))) + _varint(count)
    tail = b"\x19" + struct.pack("<d", scale)
    return head + item * ((limit - len(head) - len(tail)) // len(item)) + tail


def _peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def test_redteam_ckks_decompression_bomb_in_one_contrib_frame(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from network_doubles import SyntheticEngine, Threads, closed_form_solve

    from parties import run_party
    from secure_collab.protection import StatContext, get_scheme
    from solver.server import run_solver

    cfg = make_config(tmp_path, mode="ckks", network={**SHORT, "max_message_bytes": 64 << 20})
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    coordinator = subprocess.Popen([sys.executable, "-m", "secure_collab", "coordinator", "--config",
                                    str(next(tmp_path.glob("config-*.toml")))], cwd=root, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scheme, th = get_scheme("ckks"), Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
    for name in ("a", "b"):
        engine = SyntheticEngine(name, cfg)
        th.start(name, lambda n=name, e=engine: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
    ctx = zmq.Context()
    client = RawClient(cfg, "c", ctx)
    try:
        request = client.join()
        meta = scheme._public(client.public).meta
        n, primes = meta["poly_modulus_degree"], len(meta["coeff_mod_bit_sizes"]) - 1
        s, attempt = cfg.session, request.body["attempt"]
        count = s.chunk_values  # G has 21 values in chunks of 7

        def contrib(chunk, first=None):
            ctx_ = StatContext(s.id, 0, 1, "G", "c", chunk, attempt)
            payload = client.protect(np.ones(count), ctx_)
            body = {"attempt": attempt, "chunk": chunk, "n_chunks": s.n_chunks("G"), "offset": chunk * count,
                    "count": count, "payload": dict(payload.header)}
            frames = payload.frames if first is None else (first, *payload.frames[1:])
            return payload, client.msg(MsgType.CONTRIB, 0, 1, "G", body, frames).to_frames()

        # positive control: c's genuine chunk 0 (accepted, added to the running sum) costs the coordinator little
        genuine, frames = contrib(0)
        before = _peak_rss_mb(coordinator.pid)
        client.send(frames)
        client.sock.setsockopt(zmq.RCVTIMEO, 500)
        with pytest.raises(zmq.Again):  # accepted: no answer
            client.recv(MsgType.ERROR)
        control = _peak_rss_mb(coordinator.pid) - before
        import tenseal as ts

        parms = list(ts.ckks_vector_from(scheme._context_for(scheme._public(client.public)),
                                         bytes(genuine.frames[0])).ciphertext()[0].parms_id())
        bomb = _bomb(parms, n, primes, 2.0 ** meta["scale_bits"], count, 2 * n * primes * 8 + 65536 - 64)
        before = _peak_rss_mb(coordinator.pid)
        client.sock.setsockopt(zmq.RCVTIMEO, 20000)
        client.send(contrib(1, bomb)[1])
        refusal = client.recv(MsgType.ERROR).body["reason"]
        grown = _peak_rss_mb(coordinator.pid) - before
    finally:
        client.close()
        ctx.term()
        try:
            coordinator.communicate(timeout=60)
        finally:
            if coordinator.poll() is None:
                coordinator.kill()
                coordinator.communicate()
        th.join(60)
    assert control < 32, f"control: a genuine chunk raised the coordinator's peak memory by {control:.0f} MB"
    assert "ciphertext" in refusal  # refused: the frame is not one ciphertext of `count` values
    assert grown < 32, f"one {len(bomb)}-byte frame raised the coordinator's peak memory by {grown:.0f} MB"


def test_redteam_unsigned_end_makes_a_party_report_success_without_the_releases(tmp_path):
    cfg = make_config(tmp_path)  # sequential, layers 1 and 2
    key = load_signing_key(cfg.paths.keys / "solver.key_secret")
    per_layer = sum(cfg.session.n_chunks(st) for st in ("G", "B", "N"))

    def script(fake, route):
        _setup(fake, route, key)
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [1], "attempt": 0}))
        for _ in range(per_layer):
            fake.recv(MsgType.CONTRIB)
        fake.send(route, fake.release(1, np.full((4, 6), 0.5), key))  # genuine release of layer 1
        fake.recv(MsgType.ACK)
        fake.send(route, fake.msg(MsgType.END, body={"ok": True, "reason": "session complete"}))  # layer 2: never

    result, error, engine, _ = _party_against(cfg, script)
    assert error is None, f"party a died of {error!r}"
    assert list(result.applied) == [(0, 1)]  # layer 2's release never reached it
    assert not result.ok, "party a reports the session done without layer 2's release"
