"""The sealed verdict plaintext: the weight 1/m of a kept duplicate travels as m, bounded and checked both ways."""

from __future__ import annotations

import struct

import pytest

from secure_collab.protection import statements
from secure_collab.protocol import tags as wire
from secure_collab.protocol.messages import MAX_PARTIES, ProtocolError

D = "ab" * 32


def _plain(rows, max_requests=4):
    body = b"".join(struct.pack(">HBBH32s", *r) for r in rows)
    out = len(rows).to_bytes(4, "big") + body
    return out + bytes(wire.verdicts_plain_size(max_requests) - len(out))


def test_verdicts_round_trip_with_their_holders():
    verdicts = [(0, "keep", "duplicate", D, 3), (1, "augment", "conflict", D, 2), (2, "withdraw", "conflict", D, 1),
                (3, "keep", "", "", 1)]
    plain = wire.encode_verdicts(verdicts, 4, bytes(wire.verdicts_plain_size(4)))
    assert len(plain) == wire.verdicts_plain_size(4)
    assert wire.decode_verdicts(plain, 4) == verdicts


@pytest.mark.parametrize(("action", "kind", "holders"), [
    (0, 1, 0),  # keep, duplicate, no holder: a weight of 1/0
    (0, 1, MAX_PARTIES + 1),  # more holders than a roster can have
    (1, 1, 2),  # a withdrawn request has no share
    (0, 0, 2),  # a request that collided with nothing has weight 1
])
def test_a_decision_with_an_impossible_weight_is_refused(action, kind, holders):
    with pytest.raises(ProtocolError, match="holders"):
        wire.decode_verdicts(_plain([(0, action, kind, holders, bytes.fromhex(D))]), 4)
    with pytest.raises(ValueError, match="holders"):
        wire.encode_verdicts([(0, wire.ACTIONS[action], wire.KINDS[kind], D, holders)], 4, bytes(300))


def test_a_party_refuses_a_signed_decision_with_more_holders_than_the_roster(tmp_path):
    """Even signed by the solver, a share 1/m with m above the roster's size is refused (three parties here)."""
    from types import SimpleNamespace

    from parties.tags import PartyTags, _Round
    from secure_collab.keys import init_keys, load_identity
    from secure_collab.protection import sealing
    from secure_collab.protocol.messages import Message, MsgType

    roster = init_keys(tmp_path, ["a", "b", "c"])
    solver, party = load_identity(tmp_path / "solver.key_secret"), load_identity(tmp_path / "party-b.key_secret")
    session = SimpleNamespace(id="s1", max_edits_per_party=2)

    def decision(holders):
        desk = PartyTags(session, "cfg", "b", party, roster.signing_public(), tagger=None, parties=3)
        desk.rounds[0] = _Round([b"sr", b"sro"], [], (b"", b"", b""), tags=(b"", b""))
        records = [[D, "duplicate"]]
        plain = wire.encode_verdicts([(0, "keep", "duplicate", D, holders)], 2, bytes(wire.verdicts_plain_size(2)))
        box = sealing.seal_to(roster.parties["b"].sealing, plain, wire.DECISION_INFO,
                              statements.seal_ad("s1", "cfg", 0, "b"), bytes(range(32)))
        sig = solver.signing.sign(statements.decision_statement("s1", "cfg", 0, "b", box, records))
        return desk.on_decision(Message(MsgType.DECISION, "s1", 0, -1, "", "solver", 1, "cfg",
                                        {"party": "b", "records": records}, (box, sig)))

    assert decision(3) == [(0, "keep", "duplicate", D, 3)]
    with pytest.raises(ProtocolError, match="more holders than the roster"):
        decision(4)
