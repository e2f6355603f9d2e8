"""The keyed-tag exchange that opens a round when dedupe or conflict resolution is on: what is signed and sealed.

    party  -> coordinator -> solver   BLINDED  [padded blinded batch, count sealed to the solver, party signature]
    solver -> coordinator -> party    EVALUATED [padded answer, solver signature]
    party  -> coordinator -> solver   TAGS     [tags sealed to the solver (fixed size), party signature]
    coordinator -> solver             DECIDE   {"parties": the parties whose tags it forwarded}
    solver -> coordinator -> party    DECISION [verdicts sealed to the party (fixed size), solver signature];
                                               body "records": the public (decision id, kind) list of the round

A verdict is (request index, action, kind, holders m, decision id): the request counts at weight 1/m, with
1 <= m <= MAX_PARTIES, and m > 1 only for a kept (or augmenting) collision; anything else is refused on decoding.

Every signed statement (its layout is in ``secure_collab.protection.statements``) is domain-separated and binds
session, configuration digest, round and party, so the coordinator can neither forge nor move a message between
parties or rounds; everything it can read is a blinded group element, a digest, a signature, a fixed-size sealed
box or a decision id. Sizes are fixed by ``SessionConfig.tag_slots`` (two slots per request, padded to
``2 * max_edits_per_party``), so they say nothing about a party's number of requests.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from secure_collab.protocol.messages import MAX_PARTIES, ProtocolError

TAG_BYTES = 32
ELEMENT_BYTES = 32
ACTIONS = ("keep", "withdraw", "augment")
KINDS = ("", "duplicate", "conflict")
_VERDICT = struct.Struct(">HBBH32s")  # index, action, kind, holders (weight 1/holders), decision id
COUNT_INFO = b"secure-collab/v2/seal-tag-count|"
TAGS_INFO = b"secure-collab/v2/seal-tags|"
DECISION_INFO = b"secure-collab/v2/seal-decision|"


# ---- fixed-size plaintexts ------------------------------------------------------------------------------
def tags_plain_size(slots: int) -> int:
    return 4 + slots * TAG_BYTES


def encode_tags(pairs: Sequence[tuple[bytes, bytes]], slots: int, padding: bytes) -> bytes:
    """count ‖ sr_0 ‖ sro_0 ‖ ... padded to ``tags_plain_size(slots)`` with ``padding`` (random bytes)."""
    body = b"".join(sr + sro for sr, sro in pairs)
    if 2 * len(pairs) > slots or any(len(sr) != TAG_BYTES or len(sro) != TAG_BYTES for sr, sro in pairs):
        raise ValueError("tags do not fit the slots")
    out = len(pairs).to_bytes(4, "big") + body
    return out + padding[:tags_plain_size(slots) - len(out)]


def decode_tags(plain: bytes, slots: int) -> list[tuple[bytes, bytes]]:
    if len(plain) != tags_plain_size(slots):
        raise ProtocolError("sealed tags have the wrong size")
    n = int.from_bytes(plain[:4], "big")
    if 2 * n > slots:
        raise ProtocolError(f"{n} tag pairs do not fit {slots} slots")
    body = plain[4:4 + 2 * n * TAG_BYTES]
    return [(body[i:i + TAG_BYTES], body[i + TAG_BYTES:i + 2 * TAG_BYTES]) for i in range(0, len(body), 2 * TAG_BYTES)]


def verdicts_plain_size(max_requests: int) -> int:
    return 4 + max_requests * _VERDICT.size


def encode_verdicts(verdicts: Sequence[tuple[int, str, str, str, int]], max_requests: int, padding: bytes) -> bytes:
    """[(index, action, kind, decision id hex, holders)] as a fixed-size plaintext (random ``padding`` after the
    end)."""
    if len(verdicts) > max_requests:
        raise ValueError("more verdicts than requests")
    for _, a, k, _, m in verdicts:
        _check_holders(a, k, m, ValueError)
    rows = b"".join(_VERDICT.pack(i, ACTIONS.index(a), KINDS.index(k), m, bytes.fromhex(d) if d else bytes(32))
                    for i, a, k, d, m in verdicts)
    out = len(verdicts).to_bytes(4, "big") + rows
    return out + padding[:verdicts_plain_size(max_requests) - len(out)]


def decode_verdicts(plain: bytes, max_requests: int) -> list[tuple[int, str, str, str, int]]:
    if len(plain) != verdicts_plain_size(max_requests):
        raise ProtocolError("sealed decision has the wrong size")
    n = int.from_bytes(plain[:4], "big")
    if n > max_requests:
        raise ProtocolError("decision lists more verdicts than requests")
    out = []
    for j in range(n):
        i, a, k, m, d = _VERDICT.unpack_from(plain, 4 + j * _VERDICT.size)
        if a >= len(ACTIONS) or k >= len(KINDS):
            raise ProtocolError("decision holds an unknown action or kind")
        _check_holders(ACTIONS[a], KINDS[k], m, ProtocolError)
        out.append((i, ACTIONS[a], KINDS[k], d.hex() if KINDS[k] else "", m))
    return out


def _check_holders(action: str, kind: str, holders: int, error: type[Exception]) -> None:
    """A weight 1/m is 1 unless the request is a collision that stays: 1 <= m <= MAX_PARTIES."""
    if not 1 <= holders <= MAX_PARTIES or (holders > 1 and (not kind or action == "withdraw")):
        raise error(f"decision: a verdict with {holders} holders for a {action or '-'} {kind or 'lone'} request")
