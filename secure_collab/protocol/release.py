"""Signed setup and signed, encrypted releases: what the solver sends that the coordinator relays unread.

The signed bytes (``setup_bytes``, ``release_bytes``) are fixed, domain-separated layouts kept with every other
signed statement in ``secure_collab.protection.statements``, so a signature for one (session, round, layer)
can never be taken for another, and a ΔW cannot be re-shaped without breaking it.

ΔW is raw C-order little-endian float64 bytes, followed by the holders note (``holders_note``; empty in a session
without tags), encrypted for the parties (ChaCha20-Poly1305 under a key
derived from the session's release key, which the solver sealed to each party in the setup; the AEAD's
associated data is ``release_label``). The coordinator sees only the ciphertext and its digest.
``decode_delta`` checks the dtype allow-list and ``prod(shape) * itemsize == len(buffer)`` before building
the array.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secure_collab.protection import statements
from secure_collab.protocol.messages import (
    MAX_DECISION_RECORDS,
    MAX_PARTIES,
    Message,
    MsgType,
    ProtocolError,
    release_of,
    sha256_hex,
)

ALLOWED_DTYPES = {"<f8": np.dtype("<f8")}


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(public: Ed25519PublicKey, signature: bytes, data: bytes, what: str) -> None:
    """Raise ProtocolError (one opaque reason per kind) unless the signature verifies."""
    try:
        statements.verify(public, bytes(signature), data)
    except statements.AuthenticationFailed:
        raise ProtocolError(f"{what}: signature does not verify") from None


PART_HEADROOM = 4096  # bytes of a RELEASE_PART message left for its header (about 400 in practice)
RELEASE_PART_BYTES = 1 << 20  # the most ciphertext bytes per RELEASE_PART, whatever network.max_message_bytes allows


def part_bytes(max_message_bytes: int) -> int:
    """Ciphertext bytes per RELEASE_PART: at most ``RELEASE_PART_BYTES``, and a part and its header fit one message of
    ``network.max_message_bytes``. Small on purpose: every role that handles a message holds it several times over
    (CurveZMQ encrypts and decrypts into fresh buffers, each connection one message at a time), so the coordinator's
    memory for a release is a few parts per party, not a few 64 MiB messages per party (docs/network.md)."""
    return max(1024, min(RELEASE_PART_BYTES, max_message_bytes - PART_HEADROOM))


def max_ciphertext_bytes(d_v: int, d_k: int, tags: bool, max_edits_per_party: int) -> int:
    """The most bytes a release's ciphertext may have: ΔW in float64, the holders note (two bytes per decision
    record, with tags), the AEAD's nonce and tag with room to spare. What a party and the coordinator accept."""
    note = 2 * min(MAX_DECISION_RECORDS, MAX_PARTIES * max_edits_per_party) if tags else 0
    return d_v * d_k * 8 + note + 64


def split_parts(ciphertext: bytes, size: int) -> list[memoryview]:
    """The ciphertext in slices of ``size`` bytes (the last shorter), without copying it."""
    view = memoryview(ciphertext)
    return [view[i:i + size] for i in range(0, len(view), size)]


def check_release(msg: Message, solver_key: Ed25519PublicKey, session: str, config: str,
                  roster: Collection[str], *, served: bool = False, assembled: str | None = None,
                  inline_limit: int | None = None) -> bytes:
    """The one check of a RELEASE, run by the coordinator before it records and relays it and by a party before it
    decrypts: two frames [ΔW ciphertext, signature], the included parties distinct roster names (the schema has
    bounded the shape to two positive integers), the ciphertext's sha256 as the body says, and the solver's
    signature over ``release_bytes``. Returns the ciphertext; ProtocolError otherwise. (Whether the (round, layer)
    is expected is the caller's.)

    In a served session (``served``) the solver keeps ΔW and sends a NOTICE instead: one frame [signature] over the
    same statement, whose sha256 is of the ciphertext the solver keeps; returns b"". A RELEASE in a served session,
    or a NOTICE in another, is refused: the release policy is in the configuration digest every statement binds.

    A RELEASE whose body says ``parts`` carries an empty ciphertext frame: the ciphertext came before in that many
    RELEASE_PARTs, which the caller assembled; ``assembled`` is their sha256 (None: none were received), which must be
    the signed one. Returns b"" then (the caller holds the ciphertext). ``inline_limit`` (the coordinator's
    ``part_bytes``): a RELEASE without parts whose ciphertext is longer is refused, before its signature is checked; the
    solver sends any ciphertext over one part in parts, so what the coordinator keeps and relays is in parts too."""
    want = MsgType.NOTICE if served else MsgType.RELEASE
    if msg.type is not want:
        raise ProtocolError(f"a {msg.type.value} in a session whose release is {'served' if served else 'weights'}")
    if len(msg.frames) != (1 if served else 2):
        raise ProtocolError("notice carries [signature]" if served else "release carries [ΔW ciphertext, signature]")
    b = release_of(msg)  # the schema has bounded it: names, a shape of two positive integers
    parties, shape = b["parties"], b["shape"]
    if not all(p in roster for p in parties) or len(set(parties)) != len(parties):
        raise ProtocolError("release body: parties must be distinct roster names")
    ciphertext, signature = (b"", bytes(msg.frames[0])) if served else (bytes(f) for f in msg.frames)
    if "parts" in b:
        if served or ciphertext or assembled != b["sha256"]:
            raise ProtocolError("release: its parts are missing, or do not match the signed sha256")
    elif inline_limit is not None and len(ciphertext) > inline_limit:
        raise ProtocolError(f"release: a ciphertext of {len(ciphertext)} bytes travels in parts of at most "
                            f"{inline_limit}, not inline")
    elif not served and sha256_hex(ciphertext) != b["sha256"]:
        raise ProtocolError("release: ciphertext bytes do not match their sha256")
    verify(solver_key, signature, statements.release_bytes(session, config, msg.round, msg.layer, b["attempt"],
                                                           b["dtype"], shape, b["sha256"], parties), "release")
    return ciphertext


def encode_delta(delta: np.ndarray) -> tuple[bytes, str, list[int]]:
    arr = np.ascontiguousarray(delta, dtype="<f8")
    if arr.ndim != 2:
        raise ValueError(f"ΔW must be 2-D, got shape {arr.shape}")
    return arr.tobytes(), "<f8", [int(s) for s in arr.shape]


def holders_note(missing: Sequence[int]) -> bytes:
    """The note after ΔW in a release of a round with tag decisions: for each of the round's public decision
    records, in their signed order, how many of the parties keeping that fact at weight 1/m were *not* in the
    step's party set (u16 big-endian; 0 when all were, the honest case, so a complete step says nothing about
    any m). Its length, two bytes per record, is fixed by the public records, so the ciphertext's size tells the
    coordinator nothing new. A holder that reads j > 0 for its own duplicate learns, signed by the solver, that
    the fact counts (m − j)/m of one copy in this release."""
    return b"".join(int(j).to_bytes(2, "big") for j in missing)


def split_release(buf: bytes, dtype: str, shape: list[int]) -> tuple[np.ndarray, list[int]]:  # ΔW, missing
    """ΔW and the holders note after it (see ``holders_note``); ProtocolError if either is malformed."""
    size = _delta_size(dtype, shape)
    if len(buf) < size or (len(buf) - size) % 2:
        raise ProtocolError(f"release plaintext of {len(buf)} bytes: ΔW of shape {shape} needs {size}, then a note "
                            "of two bytes per decision record")
    note = buf[size:]
    return decode_delta(buf[:size], dtype, shape), [int.from_bytes(note[i:i + 2], "big")
                                                    for i in range(0, len(note), 2)]


def _delta_size(dtype: str, shape: list[int]) -> int:
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(f"dtype {dtype!r} not allowed")
    if len(shape) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s < 2**31 for s in shape):
        raise ProtocolError(f"bad ΔW shape {shape!r}")
    return math.prod(shape) * ALLOWED_DTYPES[dtype].itemsize


def decode_delta(buf: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    size = _delta_size(dtype, shape)
    dt = ALLOWED_DTYPES[dtype]
    if size != len(buf):
        raise ProtocolError(f"ΔW buffer has {len(buf)} bytes, shape {shape} needs {math.prod(shape) * 8}")
    arr = np.frombuffer(buf, dtype=dt).reshape(shape).copy()
    if not np.isfinite(arr).all():
        raise ProtocolError("ΔW has non-finite entries")
    return arr
