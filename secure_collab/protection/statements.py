"""Signed statements: Ed25519 over domain-separated byte layouts, and the one check of a signature.

Checking a signature needs only public keys, so this module imports no hazmat: the coordinator, which verifies
contributions early, uses it without loading any secret-handling code. Every failed check is the one opaque
``AuthenticationFailed``.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_BYTES = 64


class AuthenticationFailed(Exception):
    """The one opaque failure of every open, decrypt or signature check: it says nothing about why."""


def verify(public: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    """RFC 8032 verification; any failure (length, encoding, forgery) is the one opaque error."""
    try:
        if len(signature) != SIGNATURE_BYTES:
            raise InvalidSignature()
        public.verify(bytes(signature), data)
    except InvalidSignature as exc:
        raise AuthenticationFailed() from exc
