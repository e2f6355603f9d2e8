"""Red-team finding (cmem review, 4): release parts are meant to be at most ``RELEASE_PART_BYTES`` (1 MiB), but
an inline RELEASE (its ciphertext in the message, up to ``max_message_bytes``) was accepted from the solver and
relayed whole, and a ledger written before the merge may hold such releases. Now the coordinator refuses an inline
RELEASE whose ciphertext exceeds a part (the solver in this repo sends any larger ciphertext in parts) and relays any
stored release in parts, whatever way it arrived: a release kept inline is split on its first send as on a re-send,
its RELEASE rebuilt with ``parts`` and an empty ciphertext frame, which a party checks as the solver's own (the
signature covers the ciphertext's sha256, not the message it came in)."""

from __future__ import annotations

import hashlib
import os

import pytest
from network_doubles import make_config

from coordinator.server import Coordinator
from secure_collab.keys import load_signing_key
from secure_collab.ledger import Ledger, StoredRelease
from secure_collab.protection import get_scheme
from secure_collab.protection.statements import release_bytes
from secure_collab.protocol.messages import Message, MsgType, ProtocolError, build
from secure_collab.protocol.release import check_release, part_bytes

LIMIT = 8192  # max_message_bytes: parts of 4 KiB


def _inline_release(cfg, size: int) -> tuple[Message, bytes]:
    """A RELEASE as a solver would sign it, its ``size``-byte ciphertext inline."""
    ciphertext = os.urandom(size)
    sha, shape, parties = hashlib.sha256(ciphertext).hexdigest(), [4, 6], ["a", "b"]
    key = load_signing_key(cfg.paths.keys / "solver.key_secret")
    sig = key.sign(release_bytes(cfg.session.id, cfg.digest, 0, 1, 0, "<f8", shape, sha, parties))
    body = {"attempt": 0, "shape": shape, "dtype": "<f8", "sha256": sha, "parties": parties}
    msg = build(MsgType.RELEASE, session=cfg.session.id, sender="solver", seq=7, config=cfg.digest, round_=0,
                layer=1, body=body, frames=(ciphertext, sig))
    return msg, ciphertext


def _check(cfg, msg: Message, **kw) -> bytes:
    return check_release(msg, cfg.roster.signing_public(), cfg.session.id, cfg.digest, cfg.roster.parties, **kw)


def test_an_inline_release_over_one_part_is_refused_by_the_coordinator(tmp_path):
    cfg = make_config(tmp_path, network={"max_message_bytes": LIMIT})
    size = part_bytes(LIMIT)
    fits, _ = _inline_release(cfg, size)
    over, _ = _inline_release(cfg, size + 1)
    coordinator = Coordinator(cfg, get_scheme("plain"))
    try:
        coordinator._verify_release(fits)  # a part's worth inline: as the solver sends it
        with pytest.raises(ProtocolError, match="travels in parts"):
            coordinator._verify_release(over)
    finally:
        coordinator.ctx.term()
    assert _check(cfg, over)  # a party (no limit) still checks it as before


@pytest.mark.parametrize("stored", ["file", "row"])
def test_a_stored_inline_release_over_one_part_is_relayed_in_parts_that_a_party_accepts(tmp_path, stored):
    """``file``: kept by the ledger on disk from an inline RELEASE; ``row``: an old ledger's SQLite row (inline)."""
    cfg = make_config(tmp_path, network={"max_message_bytes": LIMIT})
    size = part_bytes(LIMIT)
    msg, ciphertext = _inline_release(cfg, 3 * size + 100)
    raw = msg.to_frames()
    with Ledger(cfg.paths.ledger) as ledger:
        ledger.open_session(cfg.session.id, cfg.digest, "plain", b"pub", b"bundles", b"sig", {"a": b"k" * 40})
        rel = ledger.release(cfg.session.id, 0, 1, 0, msg.body["sha256"], ("a", "b"), raw)
    if stored == "row":
        rel = StoredRelease(0, 1, 0, rel.sha256, rel.parties, bytes(raw[0]), None, (bytes(raw[1]), bytes(raw[2])))
    assert rel.ciphertext is None
    coordinator = Coordinator(cfg, get_scheme("plain"))
    sent: list[tuple[str, list[bytes]]] = []
    try:
        coordinator.routes["a"] = b"a-route"
        coordinator._send_frames = lambda name, route, frames, mtype, where, track=False: sent.append(  # type: ignore[method-assign]
            (mtype, [bytes(f) for f in frames])) or []
        coordinator._send_release(["a"], rel)
    finally:
        coordinator.ctx.term()
    parts = [Message.from_frames(frames) for mtype, frames in sent if mtype == "release_part"]
    assert [mtype for mtype, _ in sent] == ["release_part"] * 4 + ["release"]
    assert all(len(p.frames[0]) <= size for p in parts) and [p.body["part"] for p in parts] == [0, 1, 2, 3]
    release = Message.from_frames(sent[-1][1])
    assert release.body["parts"] == 4 and release.frames[0] == b"" and release.frames[1] == raw[2]
    assembled = b"".join(bytes(p.frames[0]) for p in parts)
    assert assembled == ciphertext
    # the party's check: the solver's signature over the assembled ciphertext's sha256
    assert _check(cfg, release, assembled=hashlib.sha256(assembled).hexdigest()) == b""
