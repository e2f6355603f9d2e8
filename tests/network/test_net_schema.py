"""The message schema bounds every integer, length and string of a header and of every body (no sockets)."""

from __future__ import annotations

import msgpack
import pytest

from secure_collab.protocol.messages import (
    BODY_SCHEMA,
    BODY_TYPES,
    HEADER_SCHEMA,
    MAX_PAYLOAD_FRAMES,
    MAX_TEXT,
    PAYLOAD_SCHEMA,
    STORED_TEXT,
    Message,
    MsgType,
    ProtocolError,
    clean_text,
)
from secure_collab.protocol.schema import INT64_MAX, INT64_MIN, Field

PAYLOAD = {"v": 2, "mode": "shares", "kind": "party", "session": "s1", "round": 0, "layer": 3, "statistic": "G",
           "chunk_index": 0, "attempt": 0, "party": "a", "n_values": 2, "tag_values": 4, "chunk": 2,
           "public": "ab" * 32}
CHUNK = {"attempt": 0, "chunk": 0, "n_chunks": 1, "offset": 0, "count": 2, "payload": PAYLOAD}
VALID_BODIES = {
    MsgType.HELLO: {"role": "party", "public": False, "setup": True, "applied": [[0, 3], [0, 4]]},
    MsgType.SETUP: {"mode": "shares", "layers": [3, 4], "rounds": 1, "variant": "sequential"},
    MsgType.REQUEST: {"layers": [3], "attempt": 2},
    MsgType.CONTRIB: CHUNK,
    MsgType.AGGREGATE: {**CHUNK, "payload": {**PAYLOAD, "kind": "aggregate", "parties": ["a", "b"]},
                        "parties": ["a", "b"], "n_values": 2},
    MsgType.VERDICT: {"attempt": 1, "layers": [3], "opened": False, "exclude": ["c"], "reason": "bad seal"},
    MsgType.RELEASE: {"attempt": 0, "shape": [4, 6], "dtype": "<f8", "sha256": "0" * 64, "parties": ["a", "b"]},
    MsgType.RELEASE_PART: {"attempt": 0, "part": 1, "parts": 3, "sha256": "0" * 64},
    MsgType.ACK: {"ok": True, "reason": ""},
    MsgType.ERROR: {"refused_seq": 5, "reason": "bad"},
    MsgType.END: {"ok": False, "reason": "aborted"},
    MsgType.TAG_OPEN: {"attempt": 0},
    MsgType.BLINDED: {"party": "", "slots": 8},
    MsgType.EVALUATED: {"party": "a", "slots": 8},
    MsgType.TAGS: {"party": "b", "slots": 8},
    MsgType.DECIDE: {"parties": ["a", "b"]},
    MsgType.DECISION: {"party": "a", "records": [["0f" * 32, "duplicate"], ["a1" * 32, "conflict"]]},
    MsgType.NOTICE: {"attempt": 0, "shape": [4, 6], "dtype": "<f8", "sha256": "0" * 64, "parties": ["a", "b"]},
    MsgType.QUERY: {"party": "", "counter": 3},
    MsgType.ANSWER: {"party": "a", "counter": 3, "kind": "logprobs", "cost": 2, "accepted": True, "used": 5,
                     "refusal": ""},
}
OVERFLOWS = [2**64 - 1, 2**63, INT64_MIN]  # msgpack carries [-2**63, 2**64 - 1]; SQLite takes signed 64-bit


def _frames(mtype=MsgType.CONTRIB, body=None, payload=None, **header):
    frames = (b"abc",) if (MAX_PAYLOAD_FRAMES[mtype] if payload is None else payload) else ()
    msg = Message(mtype, "s1", 0, 3, "G", "a", 7, "f" * 64, VALID_BODIES[mtype] if body is None else body,
                  frames)
    h = {**msg.header(), **header}
    return [msgpack.packb(h), *frames]


def _int_paths(spec: Field, value, path=()):
    """Every (path, field) of an integer inside a valid value of ``spec``."""
    if spec.kind == "int":
        yield path, spec
    elif spec.kind == "list" and value:
        yield from _int_paths(spec.item, value[0], (*path, 0))
    elif spec.kind == "map":
        for key, sub in value.items():
            yield from _int_paths((spec.fields or {}).get(key, spec.extra), sub, (*path, key))


def _replace(value, path, new):
    if not path:
        return new
    head, *rest = path
    if isinstance(value, list):
        return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]
    return {**value, head: _replace(value.get(head), rest, new)}


@pytest.mark.parametrize("mtype", list(MsgType))
def test_valid_bodies_pass(mtype):
    assert Message.from_frames(_frames(mtype)).body == VALID_BODIES[mtype]


@pytest.mark.parametrize("key", ["round", "layer", "seq"])
@pytest.mark.parametrize("value", OVERFLOWS + [-2])
def test_header_integers_out_of_range_are_refused(key, value):
    with pytest.raises(ProtocolError, match=f"header field '{key}'.* is outside"):
        Message.from_frames(_frames(**{key: value}))


@pytest.mark.parametrize("mtype", list(MsgType))
def test_every_body_integer_is_bounded_within_int64(mtype):
    """Walks the schema for each integer in a valid body (the nested payload header too) and sends the
    values that crashed the ledger: each is refused by the schema."""
    paths = list(_int_paths(BODY_SCHEMA[mtype], VALID_BODIES[mtype]))
    assert paths or mtype in (MsgType.ACK, MsgType.END, MsgType.DECIDE, MsgType.DECISION)
    for path, spec in paths:
        assert spec.lo is not None and spec.hi is not None and INT64_MIN <= spec.lo <= spec.hi <= INT64_MAX
        for value in OVERFLOWS + [spec.lo - 1, spec.hi + 1]:
            body = _replace(VALID_BODIES[mtype], path, value)
            with pytest.raises(ProtocolError, match="is outside"):
                Message.from_frames(_frames(mtype, body))


@pytest.mark.parametrize("change, reason", [
    ({"session": "x" * 129}, "header field 'session' has length 129"),
    ({"session": "a b"}, "not well-formed"),
    ({"sender": "Mallory"}, "header field 'sender'"),
    ({"sender": "a" * 5000}, "header field 'sender' has length"),
    ({"config": "z" * 64}, "header field 'config'"),
    ({"stat": "GG"}, "header field 'stat'"),
    ({"seq": True}, "must be an integer, got bool"),
    ({"round": 1.5}, "must be an integer, got float"),
    ({"digests": ["g" * 64]}, "header field 'digests'\\[0\\]"),
])
def test_header_strings_are_bounded(change, reason):
    with pytest.raises(ProtocolError, match=reason):
        Message.from_frames(_frames(**change))


@pytest.mark.parametrize("mtype, path, value, reason", [
    (MsgType.ERROR, ("reason",), "x" * (MAX_TEXT + 1), "has length"),
    (MsgType.ACK, ("reason",), 7, "must be a string"),
    (MsgType.HELLO, ("role",), "admin", "not one of"),
    (MsgType.HELLO, ("applied",), [[0, 1]] * (2**14 + 1), "has length"),
    (MsgType.HELLO, ("applied", 0), [0], "has length 1"),
    (MsgType.SETUP, ("layers",), [], "has length 0"),
    (MsgType.RELEASE, ("shape",), [1] * 5, "has length 5"),
    (MsgType.RELEASE, ("shape",), [4, 6, 1], "has length 3"),  # ΔW is 2-D: the schema says so, no role re-checks
    (MsgType.RELEASE, ("shape", 0), 0, "is outside"),
    (MsgType.RELEASE, ("parties", 0), "../etc", "not well-formed"),
    (MsgType.CONTRIB, ("payload", "party"), "A" * 40, "has length"),
    (MsgType.CONTRIB, ("payload", "public"), "nothex", "not well-formed"),
    (MsgType.CONTRIB, ("payload", "extra-key"), "x" * (MAX_TEXT + 1), "has length"),
    (MsgType.CONTRIB, ("payload", "nested"), {"a": 1}, "not a scalar"),
    (MsgType.CONTRIB, ("payload", "huge"), 2**62, "is outside"),
    (MsgType.CONTRIB, ("payload", "k" * 65), 1, "a key that is not a string of at most 64"),
])
def test_body_fields_are_bounded(mtype, path, value, reason):
    with pytest.raises(ProtocolError, match=reason):
        Message.from_frames(_frames(mtype, _replace(VALID_BODIES[mtype], path, value)))


@pytest.mark.parametrize("mtype", [MsgType.ACK, MsgType.ERROR, MsgType.END, MsgType.REQUEST, MsgType.VERDICT,
                                   MsgType.TAG_OPEN, MsgType.DECIDE])
def test_control_messages_carry_no_payload(mtype):
    with pytest.raises(ProtocolError, match="at most 0 payload frames"):
        Message.from_frames(_frames(mtype, payload=True))


def test_hello_fields_added_for_rejoins_are_optional():
    assert Message.from_frames(_frames(MsgType.HELLO, {"role": "party", "public": False})).body["role"] == "party"


def test_payload_schema_leaves_room_for_scheme_keys_but_bounds_their_number():
    many = {**PAYLOAD, **{f"k{i}": i for i in range(40)}}
    with pytest.raises(ProtocolError, match="has length"):
        PAYLOAD_SCHEMA.check(many, "payload")
    PAYLOAD_SCHEMA.check({"scheme": "test-plain-sum", "label": "[...]", "party": "c", "n": 7}, "payload")


def test_reasons_are_quoted_short_and_clean():
    """An attacker's value is echoed back (and stored) only as a short, control-free quote."""
    with pytest.raises(ProtocolError) as err:
        Message.from_frames(_frames(session="\x1b[2J" + "A" * 100))
    assert "\x1b" not in str(err.value) and len(str(err.value)) < 200
    huge_key = {**msgpack.unpackb(_frames()[0]), "k" * 100_000: 1}
    with pytest.raises(ProtocolError) as err:
        Message.from_frames([msgpack.packb(huge_key), b"abc"])  # a contrib with one payload frame
    assert len(str(err.value)) < 300
    text = clean_text("line\nbreak\u202eevil" + "x" * 1000, STORED_TEXT)
    assert "\n" not in text and "\u202e" not in text and len(text) < STORED_TEXT + 40


def test_header_schema_names_every_header_key():
    msg = Message(MsgType.ACK, "s1", body={"ok": True, "reason": ""})
    assert set(msg.header()) == set(HEADER_SCHEMA)


def test_peek_names_a_refused_message_only_when_its_header_says_so_within_bounds():
    from secure_collab.protocol.messages import peek

    bad_release = _frames(MsgType.RELEASE, {**VALID_BODIES[MsgType.RELEASE], "parties": [1]})
    with pytest.raises(ProtocolError):
        Message.from_frames(bad_release)
    assert peek(bad_release) == (MsgType.RELEASE, 0, 3)
    assert peek(_frames(MsgType.RELEASE, round=2**64 - 1)) is None
    assert peek([b"\xc1"]) is None and peek([msgpack.packb([1])]) is None


@pytest.mark.parametrize("mtype, frames", [(MsgType.BLINDED, 3), (MsgType.EVALUATED, 2), (MsgType.TAGS, 2),
                                           (MsgType.DECISION, 2)])
def test_tag_messages_carry_their_frames_and_no_more(mtype, frames):
    msg = Message(mtype, "s1", 0, -1, "", "a", 7, "f" * 64, VALID_BODIES[mtype], (b"x",) * (frames + 1))
    with pytest.raises(ProtocolError, match=f"at most {frames} payload frames"):
        Message.from_frames(msg.to_frames())


@pytest.mark.parametrize("mtype, change, reason", [
    (MsgType.BLINDED, {"slots": 16}, "16 slots, the session has 8"),
    (MsgType.EVALUATED, {"party": "zed"}, "not in the roster"),
    (MsgType.DECIDE, {"parties": ["a", "a"]}, "not a set of roster parties"),
    (MsgType.DECIDE, {"parties": ["a", "b", "c", "zed"]}, "not a set of roster parties"),
    (MsgType.DECISION, {"records": [["duplicate", "0f" * 32]]}, "must be \\[64-hex id, kind\\] pairs"),
])
def test_tag_bodies_are_checked_against_the_session(mtype, change, reason):
    """What the table cannot know (the session's slots, the roster) is checked by ``check_tag_body``."""
    from secure_collab.protocol.messages import check_tag_body

    good = Message.from_frames(_frames(mtype))
    check_tag_body(good, 8, {"a", "b", "c"})
    bad = Message.from_frames(_frames(mtype, {**VALID_BODIES[mtype], **change}))
    with pytest.raises(ProtocolError, match=reason):
        check_tag_body(bad, 8, {"a", "b", "c"})


def test_typed_bodies_name_the_schema_fields():
    """The TypedDicts the roles read (``release_of``, ``chunk_of``, ``aggregate_of``) have exactly the keys that
    BODY_SCHEMA checks, so a body read through them was checked field by field."""
    for mtype, typed in BODY_TYPES.items():
        schema = BODY_SCHEMA[mtype]
        assert schema.fields is not None
        assert typed.__required_keys__ | typed.__optional_keys__ == frozenset(schema.fields), mtype
        assert typed.__required_keys__ == frozenset(schema.fields) - schema.optional, mtype
