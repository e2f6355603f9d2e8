"""Keyed tags by an oblivious PRF held by the solver: RFC 9497 OPRF (base mode, ristretto255-SHA512).

    Blind(x, r)        = r · H(x)                  party; H = HashToGroup (RFC 9380 expand_message_xmd + one-way map)
    BlindEvaluate(k, B) = k · B                    solver; it never sees x or H(x)
    Finalize(x, r, Z)  = SHA-512(len(x) ‖ x ‖ len(N) ‖ N ‖ "Finalize"),  N = r⁻¹ · Z = k · H(x)

The group arithmetic is libsodium's ristretto255 (through ``rbcl``, which bundles libsodium); this module
only strings the calls together as the RFC does, and is checked against its test vectors (tests/vectors/).
A tag is the first ``TAG_BYTES`` of the output. The key is a fresh scalar per session (the solver's setup), so
the tags of one fact differ between sessions; the party learns its own tags and nothing else, the
coordinator relays blinded and evaluated elements, which are uniformly random group elements to it.

Batches are padded to a fixed number of slots so their size says nothing about a party's number of requests:
a party fills the unused slots with random elements, the solver evaluates only the first ``count`` (which the
party seals to it) and fills the rest of its answer with random elements, so a party gets at most as many
evaluations as it declared. Randomness comes in as arguments in the ``*_from_parts`` functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import rbcl

from . import _primitives as hazmat
from .base import ProtectionError

CONTEXT = b"OPRFV1-\x00-ristretto255-SHA512"
ELEMENT_BYTES = 32
SCALAR_BYTES = 32
TAG_BYTES = 32
_IDENTITY = bytes(32)


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 §5.3.1 with SHA-512 (b = 64, s = 128 bytes)."""
    ell = -(-length // 64)
    if ell > 255 or length > 65535 or len(dst) > 255:
        raise ValueError("expand_message_xmd: requested length or DST too long")
    dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha512(bytes(128) + msg + length.to_bytes(2, "big") + b"\x00" + dst_prime).digest()
    out, prev = b"", b""
    for i in range(1, ell + 1):
        xored = b0 if i == 1 else bytes(x ^ y for x, y in zip(b0, prev, strict=True))
        prev = hashlib.sha512(xored + bytes([i]) + dst_prime).digest()
        out += prev
    return out[:length]


def hash_to_group(x: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_from_hash(expand_message_xmd(x, b"HashToGroup-" + CONTEXT, 64))


def scalar_from_bytes(uniform64: bytes) -> bytes:
    """A scalar from 64 uniform bytes (reduced mod the group order); zero is refused."""
    if len(uniform64) != 64:
        raise ValueError("a scalar is drawn from 64 uniform bytes")
    s = rbcl.crypto_core_ristretto255_scalar_reduce(uniform64)
    if s == bytes(SCALAR_BYTES):
        raise ValueError("zero scalar")
    return s


def new_key() -> bytes:
    """A fresh OPRF key (the solver's, one per session)."""
    return scalar_from_bytes(hazmat.random_bytes(64))


def _check_element(e: bytes) -> bytes:
    if len(e) != ELEMENT_BYTES or e == _IDENTITY or not rbcl.crypto_core_ristretto255_is_valid_point(e):
        raise ProtectionError("not a valid ristretto255 element")
    return e


def blind(x: bytes, r: bytes) -> bytes:
    """RFC 9497 Blind with the scalar ``r`` given."""
    element = hash_to_group(x)
    if element == _IDENTITY:
        raise ProtectionError("input hashes to the identity")
    return rbcl.crypto_scalarmult_ristretto255(r, element)


def blind_evaluate(key: bytes, blinded: bytes) -> bytes:
    return rbcl.crypto_scalarmult_ristretto255(key, _check_element(blinded))


def finalize(x: bytes, r: bytes, evaluated: bytes) -> bytes:
    """RFC 9497 Finalize: the 64-byte OPRF output."""
    n = rbcl.crypto_scalarmult_ristretto255(rbcl.crypto_core_ristretto255_scalar_invert(r), _check_element(evaluated))
    return hashlib.sha512(len(x).to_bytes(2, "big") + x + len(n).to_bytes(2, "big") + n + b"Finalize").digest()


# ---- batches of fixed size ------------------------------------------------------------------------------
def blind_batch_from_parts(inputs: Sequence[bytes], slots: int, blinds: Sequence[bytes],
                           pads: Sequence[bytes]) -> bytes:
    """``slots`` elements: the blinded inputs, then ``slots - len(inputs)`` elements from ``pads`` (64 uniform
    bytes each, mapped into the group)."""
    if len(inputs) > slots or len(blinds) != len(inputs) or len(pads) != slots - len(inputs):
        raise ValueError(f"{len(inputs)} inputs do not fit {slots} slots")
    return b"".join([blind(x, r) for x, r in zip(inputs, blinds, strict=True)]
                    + [rbcl.crypto_core_ristretto255_from_hash(p) for p in pads])


def blind_batch(inputs: Sequence[bytes], slots: int) -> tuple[bytes, list[bytes]]:
    """(the padded blinded batch, the blinds to keep for ``finalize_batch``)."""
    blinds = [scalar_from_bytes(hazmat.random_bytes(64)) for _ in inputs]
    pads = [hazmat.random_bytes(64) for _ in range(slots - len(inputs))]
    return blind_batch_from_parts(inputs, slots, blinds, pads), blinds


def split(batch: bytes, slots: int) -> list[bytes]:
    if len(batch) != slots * ELEMENT_BYTES:
        raise ProtectionError(f"a batch holds {slots} elements of {ELEMENT_BYTES} bytes, got {len(batch)} bytes")
    return [batch[i:i + ELEMENT_BYTES] for i in range(0, len(batch), ELEMENT_BYTES)]


def evaluate_batch_from_parts(key: bytes, batch: bytes, slots: int, count: int, pads: Sequence[bytes]) -> bytes:
    """The solver's answer: the first ``count`` elements evaluated, the rest replaced by random elements."""
    if not 0 <= count <= slots or len(pads) != slots - count:
        raise ProtectionError(f"declared count {count} does not fit {slots} slots")
    elements = split(batch, slots)
    return b"".join([blind_evaluate(key, e) for e in elements[:count]]
                    + [rbcl.crypto_core_ristretto255_from_hash(p) for p in pads])


def evaluate_batch(key: bytes, batch: bytes, slots: int, count: int) -> bytes:
    return evaluate_batch_from_parts(key, batch, slots, count, [hazmat.random_bytes(64) for _ in range(slots - count)])


def finalize_batch(inputs: Sequence[bytes], blinds: Sequence[bytes], evaluated: bytes, slots: int) -> list[bytes]:
    """The party's tags (``TAG_BYTES`` each) for its inputs, from the solver's answer."""
    elements = split(evaluated, slots)
    return [finalize(x, r, z)[:TAG_BYTES] for x, r, z in zip(inputs, blinds, elements, strict=False)]
