"""The solver's tag desk on its own: one evaluation per party and round, signatures bound to party and round,
at most as many tags as evaluated elements, decisions stored before they leave."""

from __future__ import annotations

import pytest
from network_doubles import make_config

from secure_collab.keys import load_identity
from secure_collab.protection import _primitives as hazmat
from secure_collab.protection import oprf, sealing, statements
from secure_collab.protocol import tags as wire
from secure_collab.protocol.messages import Message, MsgType, ProtocolError
from solver.state import SolverState
from solver.tags import TagDesk


@pytest.fixture
def desk(tmp_path):
    cfg = make_config(tmp_path, dedupe=True, max_edits_per_party=4, rounds=2)
    solver = load_identity(cfg.paths.keys / "solver.key_secret")
    seal_private = hazmat.random_bytes(32)
    sent = []
    state = SolverState(tmp_path / "state", solver.sealing.private_bytes_raw(), cfg.session.id, cfg.digest)
    d = TagDesk(cfg, state, solver.signing, seal_private, oprf.new_key(),
                lambda t, r, body, frames: sent.append((t, r, body, frames)))
    d.sent, d.seal_public = sent, hazmat.x25519_public(seal_private)
    return d


def _blinded(desk, party, round_, inputs, *, claim=None, count=None):
    s, ident = desk.s, load_identity(desk.cfg.paths.keys / f"party-{party}.key_secret")
    batch, blinds = oprf.blind_batch(inputs, s.tag_slots)
    ad = statements.seal_ad(s.id, desk.cfg.digest, round_, claim or party)
    sealed = sealing.seal_to(desk.seal_public, (len(inputs) if count is None else count).to_bytes(4, "big"),
                             wire.COUNT_INFO, ad, hazmat.random_bytes(32))
    sig = ident.signing.sign(statements.blinded_statement(s.id, desk.cfg.digest, round_, party, batch, sealed))
    msg = Message(MsgType.BLINDED, s.id, round_, -1, "", "coordinator", 1, desk.cfg.digest,
                  {"party": claim or party, "slots": s.tag_slots}, (batch, sealed, sig))
    return msg, blinds


def _tags(desk, party, round_, pairs):
    s, ident = desk.s, load_identity(desk.cfg.paths.keys / f"party-{party}.key_secret")
    plain = wire.encode_tags(pairs, s.tag_slots, bytes(wire.tags_plain_size(s.tag_slots)))
    sealed = sealing.seal_to(desk.seal_public, plain, wire.TAGS_INFO,
                             statements.seal_ad(s.id, desk.cfg.digest, round_, party), hazmat.random_bytes(32))
    sig = ident.signing.sign(statements.tags_statement(s.id, desk.cfg.digest, round_, party, sealed))
    return Message(MsgType.TAGS, s.id, round_, -1, "", "coordinator", 2, desk.cfg.digest,
                   {"party": party, "slots": s.tag_slots}, (sealed, sig))


def test_one_evaluation_per_party_and_round(desk):
    msg, _ = _blinded(desk, "a", 0, [b"x", b"y"])
    desk.on_blinded(msg)
    desk.on_blinded(msg)  # the same bytes again (a coordinator restart): the same stored answer
    assert len(desk.sent) == 2 and desk.sent[0][3] == desk.sent[1][3]
    other, _ = _blinded(desk, "a", 0, [b"z", b"w"])
    with pytest.raises(ProtocolError, match="already evaluated"):
        desk.on_blinded(other)
    later, _ = _blinded(desk, "a", 1, [b"z", b"w"])  # another round is another evaluation
    desk.on_blinded(later)
    assert len(desk.sent) == 3


def test_signatures_bind_the_party_and_the_round(desk):
    msg, _ = _blinded(desk, "a", 0, [b"x", b"y"], claim="b")  # a's signature presented as b's
    with pytest.raises(ProtocolError, match="do not authenticate"):
        desk.on_blinded(msg)
    msg, _ = _blinded(desk, "a", 0, [b"x", b"y"])
    replay = Message(msg.type, msg.session, 1, -1, "", "coordinator", 3, msg.config, msg.body, msg.frames)
    with pytest.raises(ProtocolError, match="do not authenticate"):
        desk.on_blinded(replay)  # round 0's batch replayed as round 1's
    assert desk.sent == []


def test_no_more_tags_than_evaluated_elements_and_counts_that_fit(desk):
    msg, _ = _blinded(desk, "a", 0, [b"x", b"y"])
    desk.on_blinded(msg)
    t = bytes(32)
    with pytest.raises(ProtocolError, match="2 tag pairs for 2 evaluated elements"):
        desk.on_tags(_tags(desk, "a", 0, [(t, t), (t, t)]))
    with pytest.raises(ProtocolError, match="never evaluated"):
        desk.on_tags(_tags(desk, "b", 0, [(t, t)]))
    odd, _ = _blinded(desk, "c", 0, [b"x"], count=9)
    with pytest.raises(ProtocolError, match="declared 9 elements for 8 slots"):
        desk.on_blinded(odd)


def test_decisions_are_stored_before_they_are_sent_and_sent_again_the_same(desk):
    pairs = {}
    for p, facts in (("a", [b"s1", b"s1o"]), ("b", [b"s1", b"s1o"])):
        msg, blinds = _blinded(desk, p, 0, facts)
        desk.on_blinded(msg)
        tags = oprf.finalize_batch(facts, blinds, desk.sent[-1][3][0], desk.s.tag_slots)
        pairs[p] = [(tags[0], tags[1])]
        desk.on_tags(_tags(desk, p, 0, pairs[p]))
    decide = Message(MsgType.DECIDE, desk.s.id, 0, -1, "", "coordinator", 9, desk.cfg.digest,
                     {"parties": ["a", "b"]})
    desk.on_decide(decide)
    first = [m for m in desk.sent if m[0] is MsgType.DECISION]
    assert [m[2]["party"] for m in first] == ["a", "b"] and first[0][2]["records"][0][1] == "duplicate"
    assert desk.expected_edits(0, ("a", "b")) == 2  # two requests kept, each at weight 1/2: the fact counts once
    desk.on_decide(decide)
    assert [m for m in desk.sent if m[0] is MsgType.DECISION][2:] == first  # the stored decisions, again
    with pytest.raises(ProtocolError, match="was decided over"):
        desk.on_decide(Message(MsgType.DECIDE, desk.s.id, 0, -1, "", "coordinator", 10, desk.cfg.digest,
                               {"parties": ["a"]}))
