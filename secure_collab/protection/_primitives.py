"""Raw primitives (hazmat): AES-CTR keystream, HKDF-SHA256, X25519, Ed25519, ChaCha20-Poly1305, randomness.

Nothing outside ``secure_collab.protection`` should import this module; parties, coordinator and solver
use the recipes in ``shares``/``ckks``/``plain``. ``random_bytes`` is the only caller of ``os.urandom``;
every other function takes its randomness as an argument so that outputs can be pinned by test vectors.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .statements import SIGNATURE_BYTES, AuthenticationFailed
from .statements import verify as ed25519_verify  # signature checks live in statements (no secret needed)

# 1 MiB: large enough to amortise the per-call overhead, small enough to stay in cache.
KEYSTREAM_CHUNK = 1 << 20
_ZEROS = memoryview(bytes(KEYSTREAM_CHUNK))  # sliced without a copy
_AEAD_NONCE = bytes(12)  # every single-use AEAD key (derived from an ephemeral DH) takes this one nonce
NONCE_BYTES = 12


def random_bytes(n: int) -> bytes:
    """The only source of randomness in the protection layer."""
    return os.urandom(n)


class Keystream:
    """AES-CTR keystream for (key, initial 128-bit counter block), written on demand into caller buffers.

    ``fill(out)`` continues the stream where the previous call stopped, so a long mask can be produced
    chunk by chunk into one reused buffer (no allocation proportional to the vector).
    """

    def __init__(self, key: bytes, counter_block: bytes) -> None:
        if len(key) not in (16, 32) or len(counter_block) != 16:
            raise ValueError("AES-CTR needs a 16- or 32-byte key and a 16-byte counter block")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()

    def fill(self, out: memoryview) -> None:
        out = out.cast("B") if out.format != "B" else out
        total = out.nbytes
        off = 0
        while off < total:
            m = min(KEYSTREAM_CHUNK, total - off)
            self._enc.update_into(_ZEROS if m == KEYSTREAM_CHUNK else _ZEROS[:m], out[off : off + m])
            off += m


def aes_ctr_keystream(key: bytes, counter_block: bytes, n: int) -> bytes:
    """The first n keystream bytes (for test vectors; hot paths use ``Keystream.fill``)."""
    out = bytearray(n)
    Keystream(key, counter_block).fill(memoryview(out))
    return bytes(out)


def hkdf_sha256(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256 (extract then expand)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def x25519_public(private: bytes) -> bytes:
    """RFC 7748: the public u-coordinate of a 32-byte private scalar (clamped by the library)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def x25519(private: bytes, peer_public: bytes) -> bytes:
    """RFC 7748 X25519(private, peer). Refuses a low-order peer (all-zero shared secret)."""
    return x25519_with_public(private, peer_public)[1]


def x25519_with_public(private: bytes, peer_public: bytes) -> tuple[bytes, bytes]:
    """(``x25519_public(private)``, ``x25519(private, peer)``) from one loaded key: loading a private key computes
    its public key, so sealing a seed per chunk costs two scalar multiplications, not three."""
    key = X25519PrivateKey.from_private_bytes(private)
    try:
        return key.public_key().public_bytes_raw(), key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # wrong length or a low-order point
        raise AuthenticationFailed() from exc


def aead_seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """ChaCha20-Poly1305 (RFC 8439) under a single-use key."""
    return ChaCha20Poly1305(key).encrypt(_AEAD_NONCE, plaintext, associated_data)


def aead_open(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_AEAD_NONCE, ciphertext, associated_data)
    except InvalidTag as exc:
        raise AuthenticationFailed() from exc


def aead_seal_random(key: bytes, plaintext: bytes, associated_data: bytes, nonce: bytes) -> bytes:
    """ChaCha20-Poly1305 under a key used more than once: ``nonce`` (12 fresh random bytes) is prepended."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("a ChaCha20-Poly1305 nonce has 12 bytes")
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)


def aead_open_random(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise AuthenticationFailed()
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag as exc:
        raise AuthenticationFailed() from exc


def ed25519_sign(private: Ed25519PrivateKey, data: bytes) -> bytes:
    return private.sign(data)


__all__ = ["SIGNATURE_BYTES", "AuthenticationFailed", "ed25519_verify"]  # re-exported: the recipes' one door
