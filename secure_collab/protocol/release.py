"""Signed setup and signed, encrypted releases: what the solver sends that the coordinator relays unread.

The signed bytes are a fixed, domain-separated layout, so a signature for one (session, round, layer)
can never be taken for another, and a ΔW cannot be re-shaped without breaking it:

    setup:    b"secure-collab/v2/setup\\0" + JSON [session, config_digest, sha256(public params),
              sha256(sealed bundles)]
    release:  b"secure-collab/v2/release\\0" + JSON [session, config_digest, round, layer, attempt,
              dtype, shape, sha256(ΔW ciphertext), sorted included parties]

ΔW is raw C-order little-endian float64 bytes, encrypted for the parties (ChaCha20-Poly1305 under a key
derived from the session's release key, which the solver sealed to each party in the setup; the AEAD's
associated data is ``release_label``). The coordinator sees only the ciphertext and its digest.
``decode_delta`` checks the dtype allow-list and ``prod(shape) * itemsize == len(buffer)`` before building
the array.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secure_collab.protection import statements
from secure_collab.protocol.messages import ProtocolError

ALLOWED_DTYPES = {"<f8": np.dtype("<f8")}


def release_bytes(
    session: str, config: str, round_: int, layer: int, attempt: int, dtype: str, shape: list[int],
    ciphertext_sha256: str, parties: list[str],
) -> bytes:
    fields = [session, config, round_, layer, attempt, dtype, list(shape), ciphertext_sha256, sorted(parties)]
    return b"secure-collab/v2/release\0" + json.dumps(fields, separators=(",", ":")).encode()


def release_label(session: str, config: str, round_: int, layer: int, attempt: int) -> bytes:
    """The AEAD associated data (and key-derivation label) of one release."""
    return json.dumps(["release", session, config, round_, layer, attempt], separators=(",", ":")).encode()


def setup_bytes(session: str, config: str, public: bytes, bundles: bytes) -> bytes:
    fields = [session, config, hashlib.sha256(public).hexdigest(), hashlib.sha256(bundles).hexdigest()]
    return b"secure-collab/v2/setup\0" + json.dumps(fields, separators=(",", ":")).encode()


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(public: Ed25519PublicKey, signature: bytes, data: bytes, what: str) -> None:
    """Raise ProtocolError (one opaque reason per kind) unless the signature verifies."""
    try:
        statements.verify(public, bytes(signature), data)
    except statements.AuthenticationFailed:
        raise ProtocolError(f"{what}: signature does not verify") from None


def encode_delta(delta: np.ndarray) -> tuple[bytes, str, list[int]]:
    arr = np.ascontiguousarray(delta, dtype="<f8")
    if arr.ndim != 2:
        raise ValueError(f"ΔW must be 2-D, got shape {arr.shape}")
    return arr.tobytes(), "<f8", [int(s) for s in arr.shape]


def decode_delta(buf: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(f"dtype {dtype!r} not allowed")
    if len(shape) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s < 2**31 for s in shape):
        raise ProtocolError(f"bad ΔW shape {shape!r}")
    dt = ALLOWED_DTYPES[dtype]
    if math.prod(shape) * dt.itemsize != len(buf):
        raise ProtocolError(f"ΔW buffer has {len(buf)} bytes, shape {shape} needs {math.prod(shape) * 8}")
    arr = np.frombuffer(buf, dtype=dt).reshape(shape).copy()
    if not np.isfinite(arr).all():
        raise ProtocolError("ΔW has non-finite entries")
    return arr
