"""Signed statements: the byte layouts that are signed (Ed25519) or bound as AEAD associated data, and the one
check of a signature.

Every layout is domain-separated and binds the session and the configuration digest, so a signature for one
(session, round, layer, party) can never be taken for another:

    contrib:    b"secure-collab/v2/contrib\\0"   + JSON [session, sha256 hex of the public params, round, layer,
                statistic, chunk index, attempt, party, values, sha256(sealed seed)]   (a party, per chunk)
    setup:      b"secure-collab/v2/setup\\0"     + JSON [session, config, sha256(public params),
                sha256(sealed bundles)]                                                 (the solver)
    release:    b"secure-collab/v2/release\\0"   + JSON [session, config, round, layer, attempt, dtype, shape,
                sha256(ΔW ciphertext), sorted included parties]                         (the solver)
    blinded:    b"secure-collab/v2/blinded\\0"   + JSON [session, config, round, party, sha256(batch),
                sha256(sealed count)]                                                   (a party)
    evaluated:  b"secure-collab/v2/evaluated\\0" + JSON [session, config, round, party, sha256(batch),
                sha256(answer)]                                                         (the solver)
    tags:       b"secure-collab/v2/tags\\0"      + JSON [session, config, round, party, sha256(sealed tags)]
    decision:   b"secure-collab/v2/decision\\0"  + JSON [session, config, round, party, sha256(sealed verdicts),
                [[decision id, kind], ...]]                                             (the solver)

and, not signed but bound as associated data: ``release_label`` (the AEAD of an encrypted ΔW), ``seal_ad``
(the sealed tag count, tags and verdicts), ``query_scope`` (the key-derivation label of a party's query channel
with the solver) and ``query_label`` (one query or answer on it: session, config, party, counter, direction).
JSON is compact (``","`` and ``":"``), ASCII-only. These bytes are frozen: tests/vectors hold golden messages that
use them.

Checking a signature needs only public keys, so this module imports no hazmat: the coordinator, which verifies
contributions early, uses it without loading any secret-handling code. Every failed check is the one opaque
``AuthenticationFailed``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

if TYPE_CHECKING:
    from .base import StatContext

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


def _json(fields: Sequence[object]) -> bytes:
    return json.dumps(list(fields), separators=(",", ":"), ensure_ascii=True).encode()


def _statement(kind: str, *fields: object) -> bytes:
    """The one layout of every signed statement: domain ``secure-collab/v2/<kind>``, NUL, compact JSON array."""
    return f"secure-collab/v2/{kind}\0".encode() + _json(fields)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- a party's contribution (protection schemes sign it, the coordinator and the solver check it) -------------
def contribution_statement(ctx: StatContext, public_digest: str, n_values: int, sealed: bytes) -> bytes:
    """What a party signs for one chunk: everything the solver will use of its contribution."""
    return _statement("contrib", ctx.session_id, public_digest, ctx.round, ctx.layer, ctx.statistic, ctx.chunk,
                      ctx.attempt, ctx.party, n_values, sha(sealed))


# ---- the solver's setup and releases (protocol/release.py) --------------------------------------------------
def setup_bytes(session: str, config: str, public: bytes, bundles: bytes) -> bytes:
    return _statement("setup", session, config, sha(public), sha(bundles))


def release_bytes(
    session: str, config: str, round_: int, layer: int, attempt: int, dtype: str, shape: Sequence[int],
    ciphertext_sha256: str, parties: Sequence[str],
) -> bytes:
    return _statement("release", session, config, round_, layer, attempt, dtype, list(shape), ciphertext_sha256,
                      sorted(parties))


def release_label(session: str, config: str, round_: int, layer: int, attempt: int) -> bytes:
    """The AEAD associated data (and key-derivation label) of one release."""
    return _json(["release", session, config, round_, layer, attempt])


# ---- the served release's queries (protocol/query.py) ----------------------------------------------------------
QUERY_DIRECTIONS = ("query", "answer")


def query_scope(session: str, config: str, party: str) -> bytes:
    """What a party's query channel key is bound to (HKDF info after ``sealing.QUERY_INFO``)."""
    return _json(["query-channel", session, config, party])


def query_label(session: str, config: str, party: str, counter: int, direction: str) -> bytes:
    """The AEAD associated data of one query (party -> solver) or its answer (solver -> party): a query cannot be
    read, replayed under another counter, moved to another party or session, or taken for an answer."""
    if direction not in QUERY_DIRECTIONS:
        raise ValueError(f"direction must be one of {QUERY_DIRECTIONS}")
    return _json(["query", session, config, party, counter, direction])


# ---- the keyed-tag exchange (protocol/tags.py) ---------------------------------------------------------------
def seal_ad(session: str, config: str, round_: int, party: str) -> bytes:
    """Associated data of the boxes sealed in the tag exchange (count, tags, verdicts)."""
    return _json([session, config, round_, party])


def blinded_statement(session: str, config: str, round_: int, party: str, batch: bytes, sealed: bytes) -> bytes:
    return _statement("blinded", session, config, round_, party, sha(batch), sha(sealed))


def evaluated_statement(session: str, config: str, round_: int, party: str, batch_sha: str, answer: bytes) -> bytes:
    return _statement("evaluated", session, config, round_, party, batch_sha, sha(answer))


def tags_statement(session: str, config: str, round_: int, party: str, sealed: bytes) -> bytes:
    return _statement("tags", session, config, round_, party, sha(sealed))


def decision_statement(session: str, config: str, round_: int, party: str, sealed: bytes,
                       records: Sequence[Sequence[str]]) -> bytes:
    return _statement("decision", session, config, round_, party, sha(sealed), [list(r) for r in records])
