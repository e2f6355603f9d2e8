"""Wire format of secure-collab: versioned multipart ZeroMQ messages, checked before any buffer is used.

Every message is a list of ZeroMQ frames::

    frame 0      header: a msgpack map (string keys, no extension types)
    frame 1..n   payload frames: raw bytes, opaque to the transport

Header keys (all required):

    v        int    protocol version (``PROTOCOL_VERSION``); anything else is refused
    type     str    a ``MsgType`` value
    session  str    session id
    round    int    edit round (-1 when not bound to a round)
    layer    int    edited layer (-1 when not bound to a layer)
    stat     str    statistic: "G" (upper triangle of K Kᵀ), "B" (R Kᵀ) or ""
    sender   str    the sender's roster name, informational only: a receiver identifies a peer by
                    its authenticated CURVE key, and refuses a message whose claim differs
    seq      int    per-sender sequence number, strictly increasing on one connection (ZeroMQ keeps
                    a connection's order, so the coordinator refuses a repeat as a replay)
    config   str    hex sha256 of the session configuration (``SessionConfig.digest``)
    digests  list   hex sha256 of each payload frame, in order; len(digests) == n
    body     map    type-specific fields, checked against ``BODY_SCHEMA``

Checks in ``Message.from_frames``, in this order, before any payload byte is interpreted: frame count,
header size, total size, msgpack decoding with bounded lengths, version, type, header field types,
digest count == payload frame count (a truncated message fails here), sha256 of every payload frame,
body schema. Failures raise ``ProtocolError`` whose text is the reason sent back to the peer.
Nothing is ever unpickled or evaluated; numeric arrays travel as raw little-endian float64 bytes with
their shape in the body (see ``secure_collab.protocol.release``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

PROTOCOL_VERSION = 2
Frame = bytes | bytearray | memoryview  # received frames are bytes; sent ones may be zero-copy views


class ProtocolError(ValueError):
    """A message was refused; the text is the reason given to the sender (never a secret)."""


class MsgType(StrEnum):
    HELLO = "hello"  # party/solver -> coordinator: join / heartbeat (solver's carries the signed setup)
    SETUP = "setup"  # coordinator -> party: [public params, sealed bundles, solver signature]
    REQUEST = "request"  # coordinator -> party: send statistics for (round, layers, attempt)
    CONTRIB = "contrib"  # party -> coordinator: one chunk of one protected, signed statistic
    AGGREGATE = "aggregate"  # coordinator -> solver: one chunk of an aggregate (with each party's seal+signature)
    VERDICT = "verdict"  # solver -> coordinator: an aggregate refused (parties to exclude, or opened and failed)
    RELEASE = "release"  # solver -> coordinator -> parties: signed, encrypted ΔW of one layer
    ACK = "ack"  # party -> coordinator: a release was applied (ok) or refused (reason)
    ERROR = "error"  # any -> peer: the message with seq `refused_seq` was refused for `reason`
    END = "end"  # coordinator -> all: session done (ok) or aborted (reason)


# body key -> required type, per message type. Extra keys are refused too.
BODY_SCHEMA: dict[MsgType, dict[str, type | tuple[type, ...]]] = {
    MsgType.HELLO: {"role": str, "public": bool},
    MsgType.SETUP: {"mode": str, "layers": list, "rounds": int, "variant": str},
    MsgType.REQUEST: {"layers": list, "attempt": int},
    MsgType.CONTRIB: {
        "attempt": int, "chunk": int, "n_chunks": int, "offset": int, "count": int, "payload": dict,
    },
    MsgType.AGGREGATE: {
        "attempt": int, "chunk": int, "n_chunks": int, "offset": int, "count": int, "payload": dict,
        "parties": list, "n_values": int,
    },
    MsgType.VERDICT: {"attempt": int, "layers": list, "opened": bool, "exclude": list, "reason": str},
    MsgType.RELEASE: {"attempt": int, "shape": list, "dtype": str, "sha256": str, "parties": list},
    MsgType.ACK: {"ok": bool, "reason": str},
    MsgType.ERROR: {"refused_seq": int, "reason": str},
    MsgType.END: {"ok": bool, "reason": str},
}

HEADER_KEYS = ("v", "type", "session", "round", "layer", "stat", "sender", "seq", "config", "digests", "body")


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
        for i, (want, frame) in enumerate(zip(header["digests"], payload, strict=True)):
            if sha256_hex(frame) != want:
                raise ProtocolError(f"sha256 mismatch on payload frame {i}")
        mtype = MsgType(header["type"])
        _check_body(mtype, header["body"])
        return cls(
            type=mtype, session=header["session"], round=header["round"], layer=header["layer"],
            stat=header["stat"], sender=header["sender"], seq=header["seq"], config=header["config"],
            body=header["body"], frames=payload, version=header["v"],
        )


def sha256_hex(data: Frame) -> str:  # a memoryview is hashed as its raw bytes
    return hashlib.sha256(data).hexdigest()


def _as_bytes(part: Any) -> bytes:
    if isinstance(part, bytes):
        return part
    if hasattr(part, "bytes"):  # zmq.Frame
        return part.bytes
    raise ProtocolError(f"unexpected frame type {type(part).__name__}")


_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "v": int, "type": str, "session": str, "round": int, "layer": int, "stat": str, "sender": str,
    "seq": int, "config": str, "digests": list, "body": dict,
}


def _decode_header(raw: bytes, limits: Limits) -> dict[str, Any]:
    try:
        header = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, use_list=True, max_ext_len=0,
            max_bin_len=limits.max_header_bytes, max_str_len=limits.max_header_bytes,
            max_array_len=limits.max_frames + 4096, max_map_len=256,
        )
    except Exception as exc:  # msgpack raises several unrelated types on malformed input
        raise ProtocolError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a map")
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {header.get('v')!r} (want {PROTOCOL_VERSION})")
    if set(header) != set(HEADER_KEYS):
        raise ProtocolError(f"header keys {sorted(header)} != {sorted(HEADER_KEYS)}")
    for key, typ in _HEADER_TYPES.items():
        if not isinstance(header[key], typ) or isinstance(header[key], bool) and typ is int:
            raise ProtocolError(f"header field {key!r} has type {type(header[key]).__name__}")
    if header["type"] not in {t.value for t in MsgType}:
        raise ProtocolError(f"unknown message type {header['type']!r}")
    if not all(isinstance(d, str) and len(d) == 64 for d in header["digests"]):
        raise ProtocolError("header digests must be hex sha256 strings")
    return header


def _check_body(mtype: MsgType, body: dict[str, Any]) -> None:
    schema = BODY_SCHEMA[mtype]
    if set(body) != set(schema):
        raise ProtocolError(f"{mtype.value} body keys {sorted(body)} != {sorted(schema)}")
    for key, typ in schema.items():
        value = body[key]
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
            raise ProtocolError(f"{mtype.value} body field {key!r} has type {type(value).__name__}")


class Sequencer:
    """Per-sender message counter: each process numbers what it sends, starting at 1."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> int:
        return next(self._counter)
