"""Framing, signed releases, statistics layout, keys, config and ledger, without sockets."""

from __future__ import annotations

import os
import sqlite3
import stat

import msgpack
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from network_doubles import make_config

from secure_collab.config import ConfigError, config_from_dict
from secure_collab.keys import KeyFileError, init_keys, load_curve_pair, load_public_identity, load_roster
from secure_collab.ledger import Ledger
from secure_collab.protection.statements import release_bytes
from secure_collab.protocol.messages import Limits, Message, MsgType, ProtocolError
from secure_collab.protocol.release import decode_delta, encode_delta, verify
from secure_collab.protocol.statistics import chunk_bounds, pack_statistics, unpack_g


def _msg(**kw):
    body = {"attempt": 0, "chunk": 0, "n_chunks": 1, "offset": 0, "count": 2, "payload": {"n": 2}}
    return Message(MsgType.CONTRIB, "s1", 0, 3, "G", "a", 7, "f" * 64, body, (b"abc", b"defg"), **kw)


def test_message_round_trip():
    msg = _msg()
    frames = msg.to_frames()
    assert len(frames) == 3 and frames[1:] == [b"abc", b"defg"]
    assert Message.from_frames(frames) == msg


@pytest.mark.parametrize("mutate, reason", [
    (lambda f: f[:2], "frame count mismatch"),
    (lambda f: [f[0], f[1], f[2] + b"x"], "sha256 mismatch on payload frame 1"),
    (lambda f: [msgpack.packb({**msgpack.unpackb(f[0]), "v": 9}), *f[1:]], "unsupported protocol version 9"),
    (lambda f: [msgpack.packb({**msgpack.unpackb(f[0]), "type": "nope"}), *f[1:]], "unknown message type"),
    (lambda f: [msgpack.packb({**msgpack.unpackb(f[0]), "round": "0"}), *f[1:]], "field 'round'"),
    (lambda f: [msgpack.packb({**msgpack.unpackb(f[0]), "extra": 1}), *f[1:]], "header keys"),
    (lambda f: [msgpack.packb({**msgpack.unpackb(f[0]), "body": {}}), *f[1:]], "body keys"),
    (lambda f: [msgpack.packb([1, 2]), *f[1:]], "not a map"),
    (lambda f: [b"\xc1", *f[1:]], "not valid msgpack"),
    (lambda f: [], "empty message"),
    (lambda f: f + [b""] * 10, "too many frames"),
    (lambda f: [f[0], f[1], f[2] * 200], "message too large"),
])
def test_message_checks(mutate, reason):
    with pytest.raises(ProtocolError, match=reason):
        Message.from_frames(mutate(_msg().to_frames()), Limits(max_frames=8, max_total_bytes=600))


def test_release_signature_binds_every_field():
    key = Ed25519PrivateKey.generate()
    delta = np.arange(6.0).reshape(2, 3)
    raw, dtype, shape = encode_delta(delta)
    args = ["s1", "c" * 64, 0, 3, 1, dtype, shape, "d" * 64, ["b", "a"]]
    sig = key.sign(release_bytes(*args))
    verify(key.public_key(), sig, release_bytes(*args[:-1], ["a", "b"]), "release")  # party order is free
    for i, other in enumerate(["s2", "e" * 64, 1, 4, 2, "<f4", [3, 2], "0" * 64, ["a"]]):
        changed = list(args)
        changed[i] = other
        with pytest.raises(ProtocolError, match="signature does not verify"):
            verify(key.public_key(), sig, release_bytes(*changed), "release")
    np.testing.assert_array_equal(decode_delta(raw, dtype, shape), delta)
    for buf, dt, sh, reason in [(raw, "|O", shape, "not allowed"), (raw[:-8], dtype, shape, "needs 48"),
                                (raw, dtype, [3, 3], "needs"), (raw, dtype, [6], "bad"),
                                (np.full(6, np.inf).tobytes(), dtype, shape, "non-finite")]:
        with pytest.raises(ProtocolError, match=reason):
            decode_delta(buf, dt, sh)


def test_statistics_layout():
    rng = np.random.default_rng(0)
    k, r = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    packed = pack_statistics({"G": k @ k.T, "B": r @ k.T, "N": 3}, d_k=5, d_v=4)
    assert packed["G"].shape == (15,) and packed["B"].shape == (20,) and packed["N"].tolist() == [3.0]
    np.testing.assert_array_equal(unpack_g(packed["G"], 5), k @ k.T)
    assert chunk_bounds(15, 7) == [(0, 7), (7, 7), (14, 1)]
    with pytest.raises(ValueError, match="shape"):
        pack_statistics({"G": np.eye(4), "B": r @ k.T, "N": 3}, d_k=5, d_v=4)
    with pytest.raises(ValueError, match="exactly G, B and N"):
        pack_statistics({"G": k @ k.T, "B": r @ k.T}, d_k=5, d_v=4)
    with pytest.raises(ValueError, match="edit count"):
        pack_statistics({"G": k @ k.T, "B": r @ k.T, "N": -1}, d_k=5, d_v=4)


def test_keys_are_private_and_roster_round_trips(tmp_path):
    roster = init_keys(tmp_path / "k", ["a", "b"])
    for path in (tmp_path / "k").glob("*.key_secret"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_roster(tmp_path / "k" / "roster.toml") == roster
    pair = load_curve_pair(tmp_path / "k" / "party-a.key_secret")
    assert roster.name_for(pair.public) == "a" and roster.name_for(roster.solver.curve) == "solver"
    # the public file each site sends is what the roster holds, and carries no secret
    assert load_public_identity(tmp_path / "k" / "party-a.public.toml") == roster.parties["a"]
    assert "secret" not in (tmp_path / "k" / "party-a.public.toml").read_text()
    os.chmod(tmp_path / "k" / "party-a.key_secret", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_curve_pair(tmp_path / "k" / "party-a.key_secret")
    with pytest.raises(FileExistsError):
        init_keys(tmp_path / "k", ["a", "b"])
    with pytest.raises(KeyFileError, match="bad party name"):
        init_keys(tmp_path / "k2", ["solver"])


def test_config_paths_digest_and_validation(tmp_path):
    cfg = make_config(tmp_path)
    assert cfg.paths.ledger == tmp_path / "ledger.sqlite"  # relative to the config file
    assert cfg.session.n_values("G") == 21 and cfg.session.n_chunks("B") == 4
    assert cfg.session.steps() == [(0, (1,)), (0, (2,))]
    other = make_config(tmp_path / "o", keys_dir=tmp_path / "keys", id="s2")
    same = make_config(tmp_path / "p", keys_dir=tmp_path / "keys")
    assert other.digest != cfg.digest and same.digest == cfg.digest  # endpoints are not bound
    base = {"session": {"id": "x", "mode": "plain", "layers": [1], "d_k": 2, "d_v": 2},
            "paths": {"roster": str(tmp_path / "keys" / "roster.toml")}}
    for change, reason in [({"mode": "rot13"}, "mode"), ({"layers": [2, 1]}, "ascending"),
                           ({"bogus": 1}, "unknown"), ({"min_parties": 0}, "min_parties"),
                           # finite but past 2**100: the solver's float64 checks could overflow (red team 3)
                           ({"value_bound": 5e307}, "value_bound"), ({"key_norm_bound": 2.0**101}, "key_norm_bound"),
                           ({"residual_norm_bound": 1e300}, "residual_norm_bound")]:
        with pytest.raises(ConfigError, match=reason):
            config_from_dict({**base, "session": {**base["session"], **change}}, tmp_path)


def test_ledger_is_append_only_and_resumable(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        assert ledger.resume_state("s") is None
        ledger.open_session("s", "d", "plain", b"pub", b"bundles", b"sig", {"a": b"k" * 40})
        ledger.stage_event("s", 0, (1,), 0, "open")
        ledger.stage_event("s", 0, (1,), 1, "open")
        ledger.message("s", "in", "a", "contrib", "h" * 64, 10, "refused", "duplicate", round_=0, layer=1)
        ledger.message("s", "in", "b", "?", "", 10, "cut off", "over its budget")
        stored = ledger.release("s", 0, 1, 1, "x" * 64, ("a", "b"), [b"head", b"", b"delta"])
        state = ledger.resume_state("s")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            ledger._db.execute("UPDATE messages SET outcome='accepted'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            ledger._db.execute("DELETE FROM releases")
    assert state.setup_public == b"pub" and state.setup_bundles == b"bundles"
    assert state.attempts == {(0, "[1]"): 1} and state.ended is None
    assert state.cut_off == ("b",)
    assert state.releases[(0, 1)].frames() == stored.frames() == [b"head", b"", b"delta"]


def test_a_release_is_kept_on_disk_0600_named_by_integers_not_in_memory_or_a_sqlite_row(tmp_path):
    """One ΔW is d_v x d_k x 8 bytes (470 MB at Llama-3-8B): the ledger keeps the release message's header in SQLite
    and its payload frames in one 0600 file of a 0700 directory, ``<ledger>.releases/<session>/r{R}-l{L}.frames``
    (the session id a checked name, round and layer integers); StoredRelease holds no payload, and reads the file
    when a release is re-sent."""
    import stat

    delta = bytes(range(256)) * 64
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.open_session("s", "d", "plain", b"pub", b"bundles", b"sig", {"a": b"k" * 40})
        stored = ledger.release("s", 2, 7, 0, "x" * 64, ("a", "b"), [b"head", delta, b"sig"])
        row = ledger.rows("releases")[0]
        with pytest.raises(ValueError, match="name"):
            ledger.release("../x", 0, 1, 0, "x" * 64, ("a",), [b"h", b"d"])
        with pytest.raises(ValueError):
            ledger.release("s", -1, 1, 0, "x" * 64, ("a",), [b"h", b"d"])
        resumed = ledger.resume_state("s").releases[(2, 7)]
    path = tmp_path / "l.sqlite.releases" / "s" / "r2-l7.frames"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert delta in path.read_bytes() and delta not in bytes(row["frames"]) and row["header"] == b"head"
    assert all(not isinstance(v, bytes) or len(v) < 64 for v in vars(stored).values())  # no payload in memory
    assert resumed.frames() == stored.frames() == [b"head", delta, b"sig"]
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("**/x"))


def test_golden_message():
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).parents[1] / "vectors" / "protocol_golden_message.json").read_text())
    m = doc["message"]
    msg = Message(MsgType(m["type"]), m["session"], m["round"], m["layer"], m["stat"], m["sender"], m["seq"],
                  m["config"], m["body"], tuple(bytes.fromhex(f) for f in m["frames_hex"]))
    wire = [bytes.fromhex(f) for f in doc["wire_hex"]]
    assert msg.to_frames() == wire
    assert Message.from_frames(wire) == msg


def test_a_release_in_parts_is_assembled_on_disk_and_resumes(tmp_path):
    """The coordinator's side of a release that came in RELEASE_PARTs: each part appended to a 0600 temporary file
    and hashed, moved into place as ``r{R}-l{L}.ciphertext`` with the release, found again by a resumed ledger, and
    read back a part at a time; a discarded sink leaves nothing."""
    import hashlib
    import stat

    from secure_collab.ledger import read_parts

    data = bytes(range(256)) * 40
    sha = hashlib.sha256(data).hexdigest()
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.open_session("s", "d", "plain", b"pub", b"bundles", b"sig", {"a": b"k" * 40})
        dropped = ledger.part_sink("s", 0, 2, sha, 3, 0)
        dropped.add(data[:10])
        dropped.discard()
        sink = ledger.part_sink("s", 0, 1, sha, 3, 0)
        for i in range(3):
            assert sink.digest() is None
            sink.add(data[i * 4096:(i + 1) * 4096])
        assert sink.digest() == sha
        stored = ledger.release("s", 0, 1, 0, sha, ("a",), [b"head", b"", b"sig"], sink)
        resumed = ledger.resume_state("s").releases[(0, 1)]
    assert stored.ciphertext == resumed.ciphertext == tmp_path / "l.sqlite.releases" / "s" / "r0-l1.ciphertext"
    assert stat.S_IMODE(resumed.ciphertext.stat().st_mode) == 0o600
    assert b"".join(read_parts(resumed.ciphertext, 4096)) == data and resumed.frames() == [b"head", b"", b"sig"]
    assert sorted(p.name for p in resumed.ciphertext.parent.iterdir()) == ["r0-l1.ciphertext", "r0-l1.frames"]
