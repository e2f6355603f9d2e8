"""Recipes that seal bytes to a key: seeds to the solver, session bundles to parties, releases, state at rest.

    sealed  = E || ChaCha20-Poly1305(k, nonce=0, plaintext, ad),  E = X25519(e, 9) for a fresh ephemeral e,
              k = HKDF-SHA256(X25519(e, R), salt=E || R, info=purpose || ad), R the recipient's public key

Every purpose has its own HKDF ``info`` prefix (domain separation), and the associated data binds what the
plaintext is for (session, round, layer, statistic, chunk, attempt, party; or the party a bundle is for).

A served release's queries travel on a channel between one party and the solver (``channel_key``): both derive
the same key from their long-term X25519 keys in the pinned roster (static-static X25519, HKDF-SHA256 salted with
the party's then the solver's public key, info ``QUERY_INFO`` + ``statements.query_scope``), and every query and
answer is ChaCha20-Poly1305 under it with a fresh random nonce and ``statements.query_label`` as associated data.
No third key is involved, so the coordinator (and every other party) can neither read nor forge either direction.
Each derived key seals exactly one plaintext, so the all-zero nonce is safe. Keys that seal several
messages (a session's release key, the solver's state key) take a fresh random nonce each time.
Randomness comes in as arguments (``ephemeral``, ``nonce``) so test vectors can pin the bytes; roles draw it
with ``fresh_bytes`` (and check signatures with ``statements.verify``), so that no role imports the hazmat module
(import-linter contract in pyproject.toml).
"""

from __future__ import annotations

from . import _primitives as hazmat
from .base import ProtectionError
from .public import SEALED_OVERHEAD  # ephemeral public key + Poly1305 tag: one home, the public layout

__all__ = ["SEALED_OVERHEAD"]

SEED_INFO = b"secure-collab/v2/seal-seed|"
BUNDLE_INFO = b"secure-collab/v2/seal-bundle|"
RELEASE_INFO = b"secure-collab/v2/release|"
STATE_INFO = b"secure-collab/v2/solver-state|"
QUERY_INFO = b"secure-collab/v2/query-channel|"
_AUTH_FAILED = "authentication failed"  # the one message for every failed open, whatever the cause
NONCE_BYTES = hazmat.NONCE_BYTES


def fresh_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG: ephemeral keys, nonces and padding a role hands a recipe."""
    return hazmat.random_bytes(n)


def seal_to(recipient_public: bytes, plaintext: bytes, purpose: bytes, ad: bytes, ephemeral: bytes) -> bytes:
    """Seal ``plaintext`` to an X25519 public key; ``ephemeral`` is a fresh 32-byte X25519 private key."""
    try:
        eph_public, shared = hazmat.x25519_with_public(ephemeral, recipient_public)
    except hazmat.AuthenticationFailed as exc:
        raise ProtectionError("the recipient's public key is not a valid X25519 key") from exc
    key = hazmat.hkdf_sha256(shared, eph_public + recipient_public, purpose + ad, 32)
    return eph_public + hazmat.aead_seal(key, plaintext, ad)


def open_sealed(sealed: bytes, recipient_private: bytes, purpose: bytes, ad: bytes, size: int) -> bytes:
    """Open what ``seal_to`` made; any failure (length, low-order point, tag, other ad) raises
    ``hazmat.AuthenticationFailed``, which says nothing about why."""
    if len(sealed) != SEALED_OVERHEAD + size:
        raise hazmat.AuthenticationFailed()
    eph_public = bytes(sealed[:32])
    recipient_public, shared = hazmat.x25519_with_public(recipient_private, eph_public)
    key = hazmat.hkdf_sha256(shared, eph_public + recipient_public, purpose + ad, 32)
    return hazmat.aead_open(key, bytes(sealed[32:]), ad)


def encrypt_release(release_key: bytes, label: bytes, data: bytes, nonce: bytes) -> bytes:
    """ΔW bytes for the parties only: ChaCha20-Poly1305 under HKDF(release_key, label), label as ad."""
    key = hazmat.hkdf_sha256(release_key, None, RELEASE_INFO + label, 32)
    return hazmat.aead_seal_random(key, data, label, nonce)


def decrypt_release(release_key: bytes, label: bytes, sealed: bytes) -> bytes:
    key = hazmat.hkdf_sha256(release_key, None, RELEASE_INFO + label, 32)
    try:
        return hazmat.aead_open_random(key, sealed, label)
    except hazmat.AuthenticationFailed:
        raise ProtectionError(f"release: {_AUTH_FAILED}") from None


def channel_key(own_private: bytes, party_public: bytes, solver_public: bytes, scope: bytes) -> bytes:
    """The query channel key of one party and the solver, computed by either side from its own X25519 secret and the
    other's public key (both public keys from the pinned roster); ``scope`` binds session, config and party."""
    own_public = hazmat.x25519_public(own_private)
    if own_public not in (party_public, solver_public):
        raise ProtectionError("channel key: the secret key is neither the party's nor the solver's")
    peer = solver_public if own_public == party_public else party_public
    try:
        shared = hazmat.x25519(own_private, peer)
    except hazmat.AuthenticationFailed:
        raise ProtectionError("channel key: the peer's public key is not a valid X25519 key") from None
    return hazmat.hkdf_sha256(shared, party_public + solver_public, QUERY_INFO + scope, 32)


def encrypt_channel(key: bytes, label: bytes, data: bytes, nonce: bytes) -> bytes:
    """One query or answer: nonce (12 fresh random bytes) || ChaCha20-Poly1305(key, data, ad=label)."""
    return hazmat.aead_seal_random(key, data, label, nonce)


def decrypt_channel(key: bytes, label: bytes, sealed: bytes) -> bytes:
    try:
        return hazmat.aead_open_random(key, sealed, label)
    except hazmat.AuthenticationFailed:
        raise ProtectionError(f"query channel: {_AUTH_FAILED}") from None


def state_key(long_term_secret: bytes, scope: bytes) -> bytes:
    """The key a role's state files are sealed under: derived from its long-term secret, bound to ``scope``."""
    return hazmat.hkdf_sha256(long_term_secret, None, STATE_INFO + scope, 32)


def seal_state(key: bytes, record: bytes, data: bytes, nonce: bytes) -> bytes:
    """One state record, bound to its name (a file cannot be swapped for another)."""
    return hazmat.aead_seal_random(key, data, record, nonce)


def open_state(key: bytes, record: bytes, sealed: bytes) -> bytes:
    try:
        return hazmat.aead_open_random(key, sealed, record)
    except hazmat.AuthenticationFailed:
        raise ProtectionError(f"state record {record.decode(errors='replace')!r}: {_AUTH_FAILED} "
                              "(another key, another session, or altered)") from None
