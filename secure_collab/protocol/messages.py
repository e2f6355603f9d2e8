"""Wire format of secure-collab: versioned multipart ZeroMQ messages, checked before any buffer is used.

Every message is a list of ZeroMQ frames::

    frame 0      header: a msgpack map (string keys, no extension types)
    frame 1..n   payload frames: raw bytes, opaque to the transport

Header keys (all required; bounds in ``HEADER_SCHEMA``):

    v        int    protocol version (``PROTOCOL_VERSION``); anything else is refused
    type     str    a ``MsgType`` value
    session  str    session id, a name (``secure_collab.names``: 1-32 of a-z 0-9 _ -, matched whole)
    round    int    edit round, 0..MAX_ROUND (-1 when not bound to a round)
    layer    int    edited layer, 0..MAX_LAYER (-1 when not bound to a layer)
    stat     str    statistic: "G" (upper triangle of K Kᵀ), "B" (R Kᵀ) or ""
    sender   str    the sender's roster name (a name, "solver" or "coordinator"), informational only: a
                    receiver identifies a peer by its authenticated CURVE key, and refuses a message whose
                    claim differs
    seq      int    per-sender sequence number (0..MAX_SEQ), strictly increasing on one connection
                    (ZeroMQ keeps a connection's order, so the coordinator refuses a repeat as a replay)
    config   str    hex sha256 of the session configuration (``SessionConfig.digest``)
    digests  list   hex sha256 of each payload frame, in order; len(digests) == n
    body     map    type-specific fields, checked against ``BODY_SCHEMA``

Every integer, length and string of the header, of each body, and of the protection payload header nested
in CONTRIB and AGGREGATE bodies is bounded by these tables (one line per field, see ``schema.Field``), so
nothing out of range reaches SQLite (signed 64-bit), numpy, a dict key or an index. Free text (reasons) is
capped at ``MAX_TEXT`` characters on the wire and passed through ``clean_text`` (control characters out,
``STORED_TEXT`` characters at most) before it is stored or echoed.

Checks in ``Message.from_frames``, in this order, before any payload byte is interpreted: frame count,
header size, total size, msgpack decoding with bounded lengths, version, header schema (types and bounds),
digest count == payload frame count (a truncated message fails here), payload frames allowed for the type
(``MAX_PAYLOAD_FRAMES``), sha256 of every payload frame, body schema. Failures raise ``ProtocolError``
whose text is the reason sent back to the peer. Nothing is ever unpickled or evaluated; numeric arrays
travel as raw little-endian float64 bytes with their shape in the body (see ``secure_collab.protocol.release``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict, cast

import msgpack

from secure_collab.names import MAX_NAME, NAME_PATTERN
from secure_collab.protection.base import MODES as MODES  # re-exported: the wire bounds the mode by it
from secure_collab.protocol.query import MAX_QUERY_BUDGET, MAX_QUERY_COST, QUERY_KINDS, REFUSALS
from secure_collab.protocol.schema import (
    Bool,
    Field,
    Int,
    ListOf,
    MapOf,
    OneOf,
    Scalar,
    Str,
)
from secure_collab.protocol.schema import ProtocolError as ProtocolError  # re-exported: the wire's one error
from secure_collab.protocol.schema import clean_text as clean_text  # re-exported: the wire's text sanitiser

PROTOCOL_VERSION = 2
Frame = bytes | bytearray | memoryview  # received frames are bytes; sent ones may be zero-copy views


class MsgType(StrEnum):
    HELLO = "hello"  # party/solver -> coordinator: join / heartbeat (solver's carries the signed setup)
    SETUP = "setup"  # coordinator -> party: [public params, sealed bundles, solver signature]
    REQUEST = "request"  # coordinator -> party: send statistics for (round, layers, attempt)
    CONTRIB = "contrib"  # party -> coordinator: one chunk of one protected, signed statistic
    AGGREGATE = "aggregate"  # coordinator -> solver: one chunk of an aggregate (with each party's seal+signature)
    VERDICT = "verdict"  # solver -> coordinator: an aggregate refused (parties to exclude, or opened and failed)
    RELEASE = "release"  # solver -> coordinator -> parties: signed, encrypted ΔW of one layer
    RELEASE_PART = "release_part"  # solver -> coordinator -> parties: one slice of a release's ciphertext, before it
    ACK = "ack"  # party -> coordinator: a release was applied (ok) or refused (reason)
    ERROR = "error"  # any -> peer: the message with seq `refused_seq` was refused for `reason`
    END = "end"  # coordinator -> all: session done (ok) or aborted (reason)
    # the keyed-tag exchange that opens a round with dedupe or conflict resolution (protocol/tags.py)
    TAG_OPEN = "tag-open"  # coordinator -> party: send the round's blinded tag inputs
    BLINDED = "blinded"  # party -> coordinator -> solver: [padded blinded batch, sealed count, signature]
    EVALUATED = "evaluated"  # solver -> coordinator -> party: [padded answer, solver signature]
    TAGS = "tags"  # party -> coordinator -> solver: [sealed fixed-size tags, signature]
    DECIDE = "decide"  # coordinator -> solver: decide over the tags of these parties
    DECISION = "decision"  # solver -> coordinator -> party: [sealed verdicts, signature], public records
    # the served release (session.release = "served", protocol/query.py)
    NOTICE = "notice"  # solver -> coordinator -> parties: a RELEASE without ΔW: [signature] over the same statement
    QUERY = "query"  # party -> coordinator -> solver: [query encrypted on the party's channel with the solver]
    ANSWER = "answer"  # solver -> coordinator -> party: [answer encrypted on that channel] or [] (unauthenticated)


# ---- bounds shared by the wire and the configuration (config.py validates sessions against them) ----------
VARIANTS = ("sequential", "oneshot")
STATISTICS = ("G", "B", "N")  # upper triangle of K Kᵀ, R Kᵀ, and the edit count (one value)
MAX_SEQ = (1 << 53) - 1  # exact in JSON and float64 too; a sender would need 285 years at 1 M msg/s
MAX_ROUND = (1 << 20) - 1
MAX_LAYER = (1 << 16) - 1
MAX_ATTEMPT = (1 << 20) - 1
MAX_VALUES = 1 << 40  # values of one statistic (d_v * d_k, or d_k (d_k + 1) / 2)
MAX_DIM = 1 << 20  # one dimension of a released array
MAX_PARTIES = 1024
MAX_LAYERS = 1024  # layers per session
MAX_STEPS = 1 << 14  # (round, layer) pairs per session, so a HELLO can list what it holds
MAX_TEXT = 4096  # a reason on the wire; longer is refused
MAX_RELEASE_PARTS = 1 << 20  # RELEASE_PART messages of one release
STORED_TEXT = 512  # what is kept of any free text in the ledger or echoed back (``clean_text``)

_SESSION = Str(MAX_NAME, NAME_PATTERN)  # a session id becomes the solver's state directory: a name, nothing else
_NAME = Str(MAX_NAME, NAME_PATTERN)
_SENDER = Str(MAX_NAME, f"|{NAME_PATTERN}|solver|coordinator")
_HEX64 = Str(64, "[0-9a-f]{64}")
_ROUND, _LAYER = Int(-1, MAX_ROUND), Int(-1, MAX_LAYER)
_ATTEMPT = Int(0, MAX_ATTEMPT)
_LAYERS = ListOf(Int(0, MAX_LAYER), MAX_LAYERS, min_len=1)
_PARTIES = ListOf(_NAME, MAX_PARTIES)
_TEXT = Str(MAX_TEXT)
# the tag exchange (protocol/tags.py): slots per party and round (two per request; a verdict's index is 16-bit)
MAX_TAG_SLOTS = 1 << 16
MAX_DECISION_RECORDS = 1 << 16
DECISION_KINDS = ("duplicate", "conflict")
_HEX64_RE = re.compile("[0-9a-f]{64}")
_TAG_PARTY = Str(MAX_NAME, f"|{NAME_PATTERN}")
_SLOTS = Int(2, MAX_TAG_SLOTS)
_RECORD = ListOf(Str(64, f"[0-9a-f]{{64}}|{'|'.join(DECISION_KINDS)}"), 2, min_len=2)  # [decision id, kind]

HEADER_SCHEMA: dict[str, Field] = {
    "v": Int(PROTOCOL_VERSION, PROTOCOL_VERSION),
    "type": OneOf(*(t.value for t in MsgType)),
    "session": _SESSION,
    "round": _ROUND,
    "layer": _LAYER,
    "stat": OneOf("", *STATISTICS),
    "sender": _SENDER,
    "seq": Int(0, MAX_SEQ),
    "config": Str(64, "|[0-9a-f]{64}"),  # empty only in messages that a receiver then refuses by digest
    "digests": ListOf(_HEX64, 1 << 16),  # the frame count limit (``Limits``) is checked before the header
    "body": Field("map", max_len=64, exact=False, extra=Field("later")),  # BODY_SCHEMA, once the type is known
}
HEADER_KEYS = tuple(HEADER_SCHEMA)

# The protection payload header (secure_collab.protection._wire) that the coordinator and solver read:
# known keys are bounded here; a key a scheme adds later is a bounded scalar until it gets its own line.
PAYLOAD_SCHEMA = MapOf({
    "v": Int(0, 255),
    "mode": OneOf(*MODES),
    "kind": OneOf("party", "aggregate"),
    "session": _SESSION,
    "round": Int(0, MAX_ROUND),
    "layer": Int(0, MAX_LAYER),
    "statistic": OneOf(*STATISTICS),
    "chunk_index": Int(0, MAX_VALUES - 1),
    "attempt": _ATTEMPT,
    "party": _NAME,
    "parties": _PARTIES,
    "n_values": Int(1, MAX_VALUES),
    "tag_values": Int(0, 1 << 16),
    "chunk": Int(1, MAX_VALUES),
    "public": _HEX64,
}, extra=Scalar(max_len=MAX_TEXT, lo=-MAX_VALUES, hi=MAX_VALUES), max_keys=32)

_CHUNKING = {"attempt": _ATTEMPT, "chunk": Int(0, MAX_VALUES - 1), "n_chunks": Int(1, MAX_VALUES),
             "offset": Int(0, MAX_VALUES - 1), "count": Int(1, MAX_VALUES), "payload": PAYLOAD_SCHEMA}

# Per message type: the body's fields and their bounds. Keys not listed are refused; keys in ``optional``
# may be left out.
# parts: the ciphertext did not fit one message and came before in that many RELEASE_PARTs (the frame is then
# empty); sha256 is always of the whole ciphertext, and the solver's signature covers it
_RELEASE = MapOf({"attempt": _ATTEMPT, "shape": ListOf(Int(1, MAX_DIM), 2, min_len=2), "dtype": Str(16),
                  "sha256": _HEX64, "parties": _PARTIES, "parts": Int(1, MAX_RELEASE_PARTS)}, optional=("parts",))
BODY_SCHEMA: dict[MsgType, Field] = {
    MsgType.HELLO: MapOf({
        "role": OneOf("party", "solver"),
        "public": Bool(),
        "setup": Bool(),  # the sender holds the verified setup: do not send it again
        "applied": ListOf(ListOf(Int(0, MAX_ROUND), 2, min_len=2), MAX_STEPS),  # [round, layer] releases held
    }, optional=("setup", "applied")),
    MsgType.SETUP: MapOf({"mode": OneOf(*MODES), "layers": _LAYERS, "rounds": Int(1, MAX_ROUND + 1),
                          "variant": OneOf(*VARIANTS)}),
    # upto: the party may send the step's chunks numbered below it, in order (layers, G/B/N, chunks), until a later
    # REQUEST of the same attempt grants more (the coordinator's window, coordinator/stages.py); absent: all
    MsgType.REQUEST: MapOf({"layers": _LAYERS, "attempt": _ATTEMPT, "upto": Int(1, MAX_VALUES)}, optional=("upto",)),
    MsgType.CONTRIB: MapOf(_CHUNKING),
    MsgType.AGGREGATE: MapOf({**_CHUNKING, "parties": _PARTIES, "n_values": Int(1, MAX_VALUES)}),
    MsgType.VERDICT: MapOf({"attempt": _ATTEMPT, "layers": _LAYERS, "opened": Bool(), "exclude": _PARTIES,
                            "reason": _TEXT}),
    MsgType.RELEASE: _RELEASE,
    MsgType.RELEASE_PART: MapOf({"attempt": _ATTEMPT, "part": Int(0, MAX_RELEASE_PARTS - 1),
                                 "parts": Int(1, MAX_RELEASE_PARTS), "sha256": _HEX64}),
    MsgType.ACK: MapOf({"ok": Bool(), "reason": _TEXT}),
    MsgType.ERROR: MapOf({"refused_seq": Int(-1, MAX_SEQ), "reason": _TEXT}),
    MsgType.END: MapOf({"ok": Bool(), "reason": _TEXT}),
    # the tag exchange. party: "" from a party (the sender is its authenticated key), its name when the
    # coordinator forwards; the slot count and the party names are checked against the session in
    # ``check_tag_body`` once the receiver knows them
    MsgType.TAG_OPEN: MapOf({"attempt": _ATTEMPT}),
    MsgType.BLINDED: MapOf({"party": _TAG_PARTY, "slots": _SLOTS}),
    MsgType.EVALUATED: MapOf({"party": _TAG_PARTY, "slots": _SLOTS}),
    MsgType.TAGS: MapOf({"party": _TAG_PARTY, "slots": _SLOTS}),
    MsgType.DECIDE: MapOf({"parties": _PARTIES}),
    MsgType.DECISION: MapOf({"party": _TAG_PARTY, "records": ListOf(_RECORD, MAX_DECISION_RECORDS)}),
    # the served release: a NOTICE is a RELEASE's body (the sha256 is of the ΔW ciphertext the solver keeps); a
    # QUERY's party is "" from a party, its name when the coordinator forwards it; an ANSWER says, for the ledger,
    # what the solver made of the query (never what it asked or what the answer says)
    MsgType.NOTICE: _RELEASE,
    MsgType.QUERY: MapOf({"party": _TAG_PARTY, "counter": Int(1, MAX_SEQ)}),
    MsgType.ANSWER: MapOf({"party": _NAME, "counter": Int(1, MAX_SEQ), "kind": OneOf("", *QUERY_KINDS),
                           "cost": Int(0, MAX_QUERY_COST), "accepted": Bool(), "used": Int(0, MAX_QUERY_BUDGET),
                           "refusal": OneOf(*REFUSALS)}),
}



# ---- typed bodies: what a role reads once ``Message.from_frames`` has checked a body against BODY_SCHEMA --------
class ChunkBody(TypedDict):
    """A CONTRIB: one chunk of one protected statistic (``protocol.statistics.chunk_body``)."""

    attempt: int
    chunk: int  # the chunk's index
    n_chunks: int
    offset: int
    count: int  # the values in this chunk
    payload: dict[str, Any]  # the protection payload header, bounded by PAYLOAD_SCHEMA


class AggregateBody(ChunkBody):
    """An AGGREGATE: a CONTRIB's fields for the running sum, with the included parties and the statistic's size."""

    parties: list[str]
    n_values: int


class _ReleaseParts(TypedDict, total=False):
    parts: int  # the ciphertext came in this many RELEASE_PARTs before (the RELEASE's frame is empty)


class ReleaseBody(_ReleaseParts):
    """A RELEASE: the encrypted ΔW's attempt, 2-D shape, dtype, sha256 and the parties it was computed from."""

    attempt: int
    shape: list[int]  # exactly two entries (the schema's bound)
    dtype: str
    sha256: str
    parties: list[str]


class PartBody(TypedDict):
    """A RELEASE_PART: slice ``part`` of ``parts`` of the ciphertext whose sha256 the coming RELEASE signs."""

    attempt: int
    part: int
    parts: int
    sha256: str


class AnswerBody(TypedDict):
    """An ANSWER: how the solver took a party's query (its kind and cost, accepted or why not, the party's budget
    used so far), for the coordinator's ledger; the answer itself is the encrypted frame."""

    party: str
    counter: int
    kind: str  # "" when the query could not be authenticated
    cost: int
    accepted: bool
    used: int
    refusal: str  # one of protocol.query.REFUSALS ("" when accepted)


BODY_TYPES: dict[MsgType, type] = {MsgType.CONTRIB: ChunkBody, MsgType.AGGREGATE: AggregateBody,
                                   MsgType.RELEASE: ReleaseBody, MsgType.NOTICE: ReleaseBody,
                                   MsgType.RELEASE_PART: PartBody,
                                   MsgType.ANSWER: AnswerBody}  # tests keep their keys those of BODY_SCHEMA


def chunk_of(msg: Message) -> ChunkBody:
    """The body of a received CONTRIB or AGGREGATE (schema-checked by ``from_frames``)."""
    if msg.type not in (MsgType.CONTRIB, MsgType.AGGREGATE):
        raise ProtocolError(f"a {msg.type.value} carries no chunk")
    return cast(ChunkBody, msg.body)


def aggregate_of(msg: Message) -> AggregateBody:
    """The body of a received AGGREGATE (schema-checked by ``from_frames``)."""
    if msg.type is not MsgType.AGGREGATE:
        raise ProtocolError(f"a {msg.type.value} is not an aggregate")
    return cast(AggregateBody, msg.body)


def part_of(msg: Message) -> PartBody:
    """The body of a received RELEASE_PART (schema-checked by ``from_frames``)."""
    if msg.type is not MsgType.RELEASE_PART:
        raise ProtocolError(f"a {msg.type.value} is not a release part")
    return cast(PartBody, msg.body)


def release_of(msg: Message) -> ReleaseBody:
    """The body of a received RELEASE or NOTICE (schema-checked by ``from_frames``: a 2-entry shape of positive
    integers)."""
    if msg.type not in (MsgType.RELEASE, MsgType.NOTICE):
        raise ProtocolError(f"a {msg.type.value} is not a release")
    return cast(ReleaseBody, msg.body)


# Payload frames each type may carry (the frame count of a message is also bounded by ``Limits``).
MAX_PAYLOAD_FRAMES: dict[MsgType, int] = {
    MsgType.HELLO: 3,  # the solver's [public params, sealed bundles, signature]; a party's carries none
    MsgType.SETUP: 3,  # [public params, sealed bundles, solver signature]
    MsgType.REQUEST: 0,
    MsgType.CONTRIB: 1 << 16,
    MsgType.AGGREGATE: 1 << 16,
    MsgType.VERDICT: 0,
    MsgType.RELEASE: 2,  # [encrypted ΔW (empty when it came in parts), signature]
    MsgType.RELEASE_PART: 1,  # [a slice of the encrypted ΔW]
    MsgType.ACK: 0,
    MsgType.ERROR: 0,
    MsgType.END: 0,
    MsgType.TAG_OPEN: 0,
    MsgType.BLINDED: 3,  # [padded blinded batch, count sealed to the solver, party signature]
    MsgType.EVALUATED: 2,  # [padded answer, solver signature]
    MsgType.TAGS: 2,  # [fixed-size tags sealed to the solver, party signature]
    MsgType.DECIDE: 0,
    MsgType.DECISION: 2,  # [verdicts sealed to the party, solver signature]
    MsgType.NOTICE: 1,  # [signature]
    MsgType.QUERY: 1,  # [encrypted query]
    MsgType.ANSWER: 1,  # [encrypted answer], or none when the query could not be authenticated
}


def answer_of(msg: Message) -> AnswerBody:
    """The body of a received ANSWER (schema-checked by ``from_frames``)."""
    if msg.type is not MsgType.ANSWER:
        raise ProtocolError(f"a {msg.type.value} is not an answer")
    return cast(AnswerBody, msg.body)


def check_tag_body(msg: Message, slots: int, parties: frozenset[str] | set[str]) -> None:
    """What the tables cannot know: the session's slot count, roster parties (or "" from a party itself),
    a set of at most as many parties as the roster, decision records of [64-hex id, known kind]."""
    b = msg.body
    if "slots" in b and b["slots"] != slots:
        raise ProtocolError(f"{msg.type.value}: {b['slots']} slots, the session has {slots}")
    if "party" in b and b["party"] and b["party"] not in parties:
        raise ProtocolError(f"{msg.type.value}: party {clean_text(b['party'], 40)!r} is not in the roster")
    if "parties" in b:
        names = b["parties"]
        if len(names) > len(parties) or len(set(names)) != len(names) or not set(names) <= set(parties):
            raise ProtocolError(f"{msg.type.value}: party list is not a set of roster parties")
    if "records" in b and not all(_HEX64_RE.fullmatch(r[0]) and r[1] in DECISION_KINDS for r in b["records"]):
        raise ProtocolError(f"{msg.type.value}: decision records must be [64-hex id, kind] pairs")


@dataclass(frozen=True)
class Limits:
    """Bounds applied before decoding; the coordinator derives them from its config."""

    max_frames: int = 1024
    max_header_bytes: int = 1 << 20
    max_total_bytes: int = 64 << 20


@dataclass(frozen=True)
class Message:
    type: MsgType
    session: str
    round: int = -1
    layer: int = -1
    stat: str = ""
    sender: str = ""
    seq: int = 0
    config: str = ""
    body: Mapping[str, Any] = field(default_factory=dict)
    frames: tuple[Frame, ...] = ()
    version: int = PROTOCOL_VERSION

    def header(self) -> dict[str, Any]:
        return {
            "v": self.version, "type": self.type.value, "session": self.session, "round": self.round,
            "layer": self.layer, "stat": self.stat, "sender": self.sender, "seq": self.seq,
            "config": self.config, "digests": [sha256_hex(f) for f in self.frames], "body": dict(self.body),
        }

    def to_frames(self) -> list[Frame]:
        return [msgpack.packb(self.header(), use_bin_type=True), *self.frames]

    @property
    def nbytes(self) -> int:
        return sum(memoryview(f).nbytes for f in self.frames)

    @classmethod
    def from_frames(cls, frames: Sequence[Any], limits: Limits = Limits()) -> Message:
        """Parse and check a received multipart message (bytes or zmq.Frame parts)."""
        if not frames:
            raise ProtocolError("empty message")
        if len(frames) > limits.max_frames:
            raise ProtocolError(f"too many frames: {len(frames)} > {limits.max_frames}")
        parts = [_as_bytes(f) for f in frames]
        if len(parts[0]) > limits.max_header_bytes:
            raise ProtocolError(f"header too large: {len(parts[0])} bytes")
        total = sum(len(p) for p in parts)
        if total > limits.max_total_bytes:
            raise ProtocolError(f"message too large: {total} > {limits.max_total_bytes} bytes")
        header = _decode_header(parts[0], limits)
        payload = tuple(parts[1:])
        if len(header["digests"]) != len(payload):
            raise ProtocolError(
                f"frame count mismatch: header lists {len(header['digests'])} payload frames, "
                f"got {len(payload)} (truncated?)"
            )
        mtype = MsgType(header["type"])
        if len(payload) > MAX_PAYLOAD_FRAMES[mtype]:  # before hashing them
            raise ProtocolError(f"a {mtype.value} carries at most {MAX_PAYLOAD_FRAMES[mtype]} payload frames, "
                                f"got {len(payload)}")
        for i, (want, frame) in enumerate(zip(header["digests"], payload, strict=True)):
            if sha256_hex(frame) != want:
                raise ProtocolError(f"sha256 mismatch on payload frame {i}")
        _check_body(mtype, header["body"])
        return cls(
            type=mtype, session=header["session"], round=header["round"], layer=header["layer"],
            stat=header["stat"], sender=header["sender"], seq=header["seq"], config=header["config"],
            body=header["body"], frames=payload, version=header["v"],
        )


def header_of(raw: Frame, limits: Limits = Limits()) -> dict[str, Any]:
    """The checked header (its body too) of a message whose payload frames are elsewhere: a stored RELEASE that the
    coordinator re-sends in parts. Their digests are not checked here."""
    header = _decode_header(bytes(raw), limits)
    _check_body(MsgType(header["type"]), header["body"])
    return header


def build(mtype: MsgType, *, session: str, sender: str, seq: int, config: str, round_: int = -1, layer: int = -1,
          stat: str = "", body: Mapping[str, Any] | None = None, frames: Sequence[Frame] = ()) -> Message:
    """The one way a role makes a message to send: its session, its roster name, its next sequence number and the
    configuration digest, with what the type needs (round and layer default to -1: not bound to one)."""
    return Message(mtype, session, round_, layer, stat, sender, seq, config, body if body is not None else {},
                   tuple(frames))


def sha256_hex(data: Frame) -> str:  # a memoryview is hashed as its raw bytes
    return hashlib.sha256(data).hexdigest()


def _as_bytes(part: object) -> bytes:
    if isinstance(part, bytes):
        return part
    raw = getattr(part, "bytes", None)  # zmq.Frame
    if isinstance(raw, bytes):
        return raw
    raise ProtocolError(f"unexpected frame type {type(part).__name__}")


def _decode_header(raw: bytes, limits: Limits) -> dict[str, Any]:
    try:
        header = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, use_list=True, max_ext_len=0,
            max_bin_len=limits.max_header_bytes, max_str_len=limits.max_header_bytes,
            max_array_len=max(limits.max_frames, MAX_STEPS) + 16, max_map_len=256,
        )
    except Exception as exc:  # msgpack raises several unrelated types on malformed input
        raise ProtocolError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a map")
    if header.get("v") != PROTOCOL_VERSION or type(header.get("v")) is not int:
        raise ProtocolError(f"unsupported protocol version {clean_text(repr(header.get('v')), 40)} "
                            f"(want {PROTOCOL_VERSION})")
    if set(header) != set(HEADER_KEYS):
        unexpected = sorted((k for k in header if k not in HEADER_SCHEMA), key=str)
        raise ProtocolError(f"header keys differ: missing {sorted(set(HEADER_KEYS) - set(header))}, "
                            f"unexpected {clean_text(repr(unexpected), 60)}")
    if not isinstance(header.get("type"), str) or header["type"] not in _TYPES:
        raise ProtocolError(f"unknown message type {clean_text(repr(header.get('type')), 40)}")
    for key, spec in HEADER_SCHEMA.items():
        spec.check(header[key], f"header field {key!r}")
    return header


_TYPES = frozenset(t.value for t in MsgType)


def peek(frames: Sequence[Any], limits: Limits = Limits()) -> tuple[MsgType, int, int] | None:
    """(type, round, layer) of a message that ``from_frames`` refused, when its header still says them within
    bounds: lets a receiver answer a refused message of a known type (a party refuses a malformed RELEASE
    as it refuses a bad one). None when the header is unreadable."""
    try:
        raw = _as_bytes(frames[0])
        if len(raw) > limits.max_header_bytes:
            return None
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_ext_len=0,
                                 max_bin_len=limits.max_header_bytes, max_str_len=limits.max_header_bytes,
                                 max_array_len=max(limits.max_frames, MAX_STEPS) + 16, max_map_len=256)
        HEADER_SCHEMA["type"].check(header["type"], "type")
        HEADER_SCHEMA["round"].check(header["round"], "round")
        HEADER_SCHEMA["layer"].check(header["layer"], "layer")
    except Exception:  # anything malformed: nothing to say about it
        return None
    return MsgType(header["type"]), header["round"], header["layer"]


def _check_body(mtype: MsgType, body: dict[str, Any]) -> None:
    BODY_SCHEMA[mtype].check(body, f"{mtype.value} body")


class Sequencer:
    """Per-sender message counter: each process numbers what it sends, starting at 1."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> int:
        return next(self._counter)
