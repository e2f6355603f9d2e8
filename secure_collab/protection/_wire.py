"""Wire format of protection payloads, public session parameters and setup bundles, and their validators.

Payload header (JSON-safe dict), identical keys in every mode:

    v          2 (format version)
    mode       "ckks" | "shares" | "plain"
    kind       "party" | "aggregate"
    session, round, layer, statistic, chunk_index, attempt   the StatContext (party payloads also ``party``)
    parties    list of party ids (aggregate only; in order of addition)
    n_values   number of data values
    tag_values number of integrity-tag limbs appended to the data (``integrity.tag_values``)
    chunk      values per data frame (``frame_values`` in the code; the last frame may be shorter); frames cover
               n_values + tag_values
    public     sha256 hex of the session's public parameters (binds a payload to one session/context)

Frames: ceil((n_values + tag_values) / frame_values) data frames, then per party its sealed seed and its
Ed25519 signature (a party payload has one pair; an aggregate one per listed party, in list order).

Public parameters: b"SCPP" + 4-byte big-endian length + canonical JSON + an opaque body (the CKKS
public context in ``ckks`` mode, empty otherwise). Setup bundles: b"SCBN" + canonical JSON
{party: hex(sealed bundle)}.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Buffer, Payload, ProtectionError, StatContext

VERSION = 2
_PUBLIC_MAGIC = b"SCPP"
_BUNDLES_MAGIC = b"SCBN"
_MAX_BUNDLES_BYTES = 1 << 20
_DTYPES = {"uint64": np.dtype("<u8"), "float64": np.dtype("<f8")}  # the allow-list
_HEADER_KEYS = {"v", "mode", "kind", "session", "round", "layer", "statistic", "chunk_index", "attempt",
                "n_values", "tag_values", "chunk", "public"}


TAGS = 2  # independent integrity tags per chunk (protection/integrity.py): forgery probability ≤ q^-TAGS ≈ 2^-122


def n_limbs(limb_bits: int) -> int:
    """Limbs of ``limb_bits`` bits that carry one 61-bit tag (sums of P parties' limbs stay exact)."""
    return math.ceil(61 / limb_bits)


def tag_values(limb_bits: int) -> int:
    """How many integer values the tags of one chunk append to it."""
    return TAGS * n_limbs(limb_bits)


@dataclass(frozen=True)
class Public:
    meta: dict[str, Any]
    body: bytes
    digest: str


def encode_public(meta: dict[str, Any], body: bytes = b"") -> bytes:
    text = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return _PUBLIC_MAGIC + struct.pack(">I", len(text)) + text + body


def decode_public(blob: bytes, mode: str) -> Public:
    if not isinstance(blob, bytes | bytearray) or blob[:4] != _PUBLIC_MAGIC or len(blob) < 8:
        raise ProtectionError("public parameters: not a secure-collab public blob")
    (size,) = struct.unpack(">I", blob[4:8])
    if 8 + size > len(blob):
        raise ProtectionError("public parameters: truncated")
    try:
        meta = json.loads(bytes(blob[8 : 8 + size]))
    except ValueError as exc:
        raise ProtectionError("public parameters: header is not JSON") from exc
    if not isinstance(meta, dict) or meta.get("mode") != mode or meta.get("v") != VERSION:
        raise ProtectionError(f"public parameters are for mode {meta.get('mode')!r}, not {mode!r}")
    return Public(meta, bytes(blob[8 + size :]), hashlib.sha256(blob).hexdigest())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_bundles(bundles: dict[str, bytes]) -> bytes:
    return _BUNDLES_MAGIC + json.dumps({k: v.hex() for k, v in bundles.items()}, sort_keys=True,
                                       separators=(",", ":")).encode()


def decode_bundles(blob: bytes) -> dict[str, bytes]:
    """Parse setup bundles, bounded before decoding; any malformation is a ProtectionError."""
    if not isinstance(blob, bytes | bytearray) or blob[:4] != _BUNDLES_MAGIC or len(blob) > _MAX_BUNDLES_BYTES:
        raise ProtectionError("setup bundles: not a secure-collab bundle blob")
    try:
        doc = json.loads(bytes(blob[4:]))
        out = {str(k): bytes.fromhex(v) for k, v in doc.items()} if isinstance(doc, dict) else None
    except (ValueError, TypeError, AttributeError):
        out = None
    if out is None:
        raise ProtectionError("setup bundles: malformed")
    return out


def n_frames(n_values: int, frame_values: int) -> int:
    """Data frames of ``n_values`` values at ``frame_values`` per frame."""
    return math.ceil(n_values / frame_values)


def party_header(mode: str, ctx: StatContext, n_values: int, frame_values: int, public: Public) -> dict[str, Any]:
    return {
        "v": VERSION, "mode": mode, "kind": "party", "session": ctx.session_id, "round": ctx.round,
        "layer": ctx.layer, "statistic": ctx.statistic, "chunk_index": ctx.chunk, "attempt": ctx.attempt,
        "party": ctx.party, "n_values": n_values, "tag_values": tag_values(public.meta["limb_bits"]),
        "chunk": frame_values, "public": public.digest,
    }


def aggregate_header(mode: str, ctx: StatContext, n_values: int, frame_values: int, public: Public,
                     parties: tuple[str, ...]) -> dict[str, Any]:
    header = party_header(mode, ctx, n_values, frame_values, public)
    del header["party"]
    header["kind"] = "aggregate"
    header["parties"] = list(parties)
    return header


def check_payload(payload: Payload, *, mode: str, kind: str, ctx: StatContext, n_values: int, frame_values: int,
                  public: Public, extra_frames: int, tag_values: int) -> None:
    """Check the header against what the receiver expects, and the frame count, before any buffer."""
    if not isinstance(payload, Payload) or not isinstance(payload.header, dict):
        raise ProtectionError("not a Payload with a dict header")
    h = payload.header
    want = _HEADER_KEYS | ({"party"} if kind == "party" else {"parties"})
    if set(h) != want:
        raise ProtectionError(f"payload header keys {sorted(h)} differ from {sorted(want)}")
    if h["v"] != VERSION:
        raise ProtectionError(f"payload format version {h['v']!r}, expected {VERSION}")
    if h["mode"] != mode or h["kind"] != kind:
        raise ProtectionError(f"payload is a {h['mode']!r} {h['kind']!r} payload, expected {mode!r} {kind!r}")
    for key, expect in (("session", ctx.session_id), ("round", ctx.round), ("layer", ctx.layer),
                        ("statistic", ctx.statistic), ("chunk_index", ctx.chunk), ("attempt", ctx.attempt)):
        if h[key] != expect or type(h[key]) is not type(expect):
            raise ProtectionError(f"payload is for {key} {h[key]!r}, expected {expect!r}")
    if h["public"] != public.digest:
        raise ProtectionError("payload was made under other public parameters (another session or context)")
    if h["n_values"] != n_values or h["chunk"] != frame_values or h["tag_values"] != tag_values:
        raise ProtectionError(
            f"payload has n_values={h['n_values']!r}, chunk={h['chunk']!r}, tag_values={h['tag_values']!r}; "
            f"expected {n_values}, {frame_values}, {tag_values}"
        )
    if kind == "party" and (not isinstance(h["party"], str) or not h["party"]):
        raise ProtectionError("party payload without a party id")
    if kind == "aggregate":
        parties = h["parties"]
        if not isinstance(parties, list) or not all(isinstance(p, str) and p for p in parties):
            raise ProtectionError("aggregate header: parties must be a list of non-empty ids")
        if len(set(parties)) != len(parties):
            raise ProtectionError("aggregate header: a party is listed twice")
    expected = n_frames(n_values + tag_values, frame_values) + extra_frames
    if not isinstance(payload.frames, tuple) or len(payload.frames) != expected:
        got = len(payload.frames) if isinstance(payload.frames, tuple) else "?"
        raise ProtectionError(f"payload has {got} frames, expected {expected} (truncated or padded?)")


def admit_party(payload: Payload, party: str | None, added: list[str], max_parties: int) -> str:
    """Coordinator side, after ``check_payload``: who contributes, and may they (once each, at most
    max_parties in all: the overflow proof and the CKKS parameters assume no more)."""
    who: str = payload.header["party"]
    if party is not None and who != party:
        raise ProtectionError(f"payload claims party {who!r} but came from {party!r}")
    if who in added:
        raise ProtectionError(f"party {who!r} already contributed to this statistic")
    if len(added) >= max_parties:
        raise ProtectionError(f"already {len(added)} contributions: max_parties={max_parties} reached")
    return who


def check_aggregate_header(aggregate: Payload, ctx: StatContext, min_parties: int,
                           max_parties: int) -> tuple[int, tuple[str, ...]]:
    """Solver side, first step: the vector length and the party list, and the min_parties rule."""
    if ctx.party:
        raise ProtectionError("open() takes the aggregate's context (no party)")
    header = aggregate.header if isinstance(aggregate, Payload) else None
    n = header.get("n_values") if isinstance(header, dict) else None
    parties = header.get("parties") if isinstance(header, dict) else None
    if type(n) is not int or n <= 0 or not isinstance(parties, list):
        raise ProtectionError("aggregate header lacks n_values or parties")
    if len(parties) < min_parties:
        raise ProtectionError(f"aggregate holds {len(parties)} parties; at least min_parties={min_parties} "
                              "are needed before anything is opened")
    if len(parties) > max_parties:
        raise ProtectionError(f"aggregate holds {len(parties)} parties, more than max_parties={max_parties}")
    return n, tuple(parties)


def check_array_frames(frames: tuple[Buffer, ...], dtype: str, n_values: int, frame_values: int) -> None:
    """Every data frame must hold exactly its values in the allowed dtype."""
    if dtype not in _DTYPES:
        raise ProtectionError(f"dtype {dtype!r} is not allowed")
    itemsize = _DTYPES[dtype].itemsize
    for i in range(n_frames(n_values, frame_values)):
        count = min(frame_values, n_values - i * frame_values)
        size = nbytes(frames[i])
        if size != count * itemsize:
            raise ProtectionError(
                f"frame {i}: {size} bytes, expected {count} {dtype} values = {count * itemsize} bytes"
            )


def frame_array(frame: Buffer, dtype: str) -> np.ndarray:
    """Zero-copy, read-only view of a frame already checked by ``check_array_frames``."""
    return np.frombuffer(frame, dtype=_DTYPES[dtype])


def split_frames(array: np.ndarray, frame_values: int) -> tuple[memoryview, ...]:
    """Zero-copy frames of ``frame_values`` values each over a contiguous array."""
    view = np.ascontiguousarray(array).data.cast("B")
    step = frame_values * array.itemsize
    return tuple(view[i : i + step] for i in range(0, view.nbytes, step))


def nbytes(frame: Buffer) -> int:
    try:
        return memoryview(frame).nbytes
    except TypeError as exc:
        raise ProtectionError(f"frame of type {type(frame).__name__} is not bytes-like") from exc
