"""Overlap and conflict between parties' requests, decided on keyed tags only (pure logic, no keys, no sockets).

A request is reduced to two normalised, length-prefixed byte strings, the OPRF inputs of its two tags:

    sr  = "secure-collab/v2/fact|sr|"  ‖ lp(subject) ‖ lp(relation)
    sro = "secure-collab/v2/fact|sro|" ‖ lp(subject) ‖ lp(relation) ‖ lp(object)

with lp(s) = 4-byte big-endian length ‖ UTF-8 of the normalised string (NFKC, case-folded, whitespace
collapsed). The relation is normalised per format: a relation id where the source has one (CounterFact,
MQuAKE, JSONL's "relation"), else the prompt template itself (zsRE, plain JSONL: the prompt with the subject
removed, i.e. its "{}" template).

``decide`` is the solver's rule over one round's tags from every party, and the tags of facts applied in
earlier rounds. Per (subject, relation) tag:

- one object, several copies: with dedupe on, the fact contributes once in total, and no copy is withdrawn:
  each of the m parties holding it this round keeps it at weight 1/m (``Verdict.holders`` = m, carried in the
  signed decision; the party scales its own rows of G and B). A holder that sends nothing therefore only
  weakens the fact to (m − 1)/m; it cannot remove another party's copy (issue 18). A party that tags the same
  fact twice is one holder: its later copies withdraw (its own repeats only). A fact applied in an earlier round
  is kept too (weights 1/m among this round's holders): its residual on the edited model is near zero if it
  really was applied, and a party's ``known_residual`` check withholds it; a tag alone never proves it was;
- several objects (or one object that differs from the applied one): a conflict. The policy picks the winning
  object: ``priority`` (the object backed by the highest-priority party), ``majority`` (the most parties; an
  applied fact counts as its party's vote; ties by priority) or ``first`` (the object applied in an earlier round
  stands; among objects new this round, the one backed by the highest-priority party). ``first`` never looks at
  the order in which tags reached the solver: every TAGS message passes through the coordinator, which may hold
  one back, so an arrival order would let it pick the winner (red team 3). The session's ``party_priority`` is
  declared in the session file, bound into every message by the configuration digest, and nobody can reorder it
  during the session. The losers withdraw (a declared trust decision: the winner's
  backers are believed to contribute it, which masking cannot check; docs/threat-model.md); the winner's
  highest-priority party keeps its request and adds augmented requests (exempt from dedupe); with dedupe on
  the winner's copies are duplicates, each at weight 1/m over its m backers. With the ``none`` policy nothing
  is resolved.

Every party learns a verdict for each of its requests; the public record of a decision is an id (a hash of
the (subject, relation) tag, bound to the session and round) and its kind, never a tag or a text.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from secure_collab.data.requests import Request

POLICIES = ("none", "priority", "majority", "first")
KEEP, WITHDRAW, AUGMENT = "keep", "withdraw", "augment"


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def relation_key(request: Request) -> str:
    """A relation id where the format has one, else the prompt template (subject removed)."""
    if request.relation:
        return "id:" + normalise(request.relation)
    return "template:" + normalise(request.prompt)


def _lp(text: str) -> bytes:
    data = normalise(text).encode()
    return len(data).to_bytes(4, "big") + data


def fact_inputs(request: Request) -> tuple[bytes, bytes]:
    """The OPRF inputs of the request's (subject, relation) and (subject, relation, object) tags."""
    sr = _lp(request.subject) + _lp(relation_key(request))
    return b"secure-collab/v2/fact|sr|" + sr, b"secure-collab/v2/fact|sro|" + sr + _lp(request.target_new)


@dataclass(frozen=True)
class Applied:
    """A fact applied in an earlier round: its object's tag, the party that kept it, the round."""

    sro: bytes
    party: str
    round: int


@dataclass(frozen=True)
class Verdict:
    index: int  # the request's position in the party's tag list
    action: str  # keep | withdraw | augment (keep, and add augmented requests)
    kind: str = ""  # "" (no collision) | duplicate | conflict
    reason: str = ""  # why, in a few words (never another party's name or object)
    decision: str = ""  # the public decision id (hex) when kind is set
    holders: int = 1  # m: the parties keeping this fact this round; the request counts at weight 1/m

    @property
    def weight(self) -> float:
        return 1.0 / self.holders


@dataclass
class Decisions:
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)  # party -> one per submitted tag pair
    records: list[tuple[str, str]] = field(default_factory=list)  # (decision id, kind): the public part
    applied: dict[bytes, Applied] = field(default_factory=dict)  # sr -> the fact kept this round


def decision_id(label: bytes, sr: bytes) -> str:
    return hashlib.sha256(b"secure-collab/v2/decision|" + label + b"|" + sr).hexdigest()


def decide(tags: Mapping[str, Sequence[tuple[bytes, bytes]]], *, round_: int, label: bytes, dedupe: bool,
           policy: str, priority: Sequence[str], history: Mapping[bytes, Applied] | None = None) -> Decisions:
    """Verdicts for every party's tags of one round. ``priority``: every party, highest first (the session's
    declared ``party_priority``, then roster order); ``label`` binds decision ids to the round. Nothing here
    depends on the order in which the tags arrived."""
    if policy not in POLICIES:
        raise ValueError(f"unknown conflict policy {policy!r}; one of {POLICIES}")
    rank = {p: i for i, p in enumerate(priority)}
    if set(tags) - set(rank):
        raise ValueError(f"parties without a priority: {sorted(set(tags) - set(rank))}")
    history = history or {}
    out = Decisions({p: [Verdict(i, KEEP) for i in range(len(t))] for p, t in tags.items()})
    groups: dict[bytes, list[tuple[str, int, bytes]]] = {}
    for party in sorted(tags, key=rank.__getitem__):
        for i, (sr, sro) in enumerate(tags[party]):
            groups.setdefault(sr, []).append((party, i, sro))

    def set_verdict(party: str, i: int, action: str, kind: str, reason: str, did: str, holders: int = 1) -> None:
        out.verdicts[party][i] = Verdict(i, action, kind, reason, did, holders)

    def share(copies: list[tuple[str, int, bytes]]) -> tuple[int, set[tuple[str, int]]]:
        """m (distinct parties among ``copies``) and the copies that count: each party's first; a party holds a
        fact once however often it tags it, so it cannot dilute another holder's weight by repeating a tag."""
        firsts: dict[str, int] = {}
        for party, i, _ in copies:
            firsts.setdefault(party, i)
        return len(firsts), set(firsts.items())

    for sr, members in groups.items():
        before = history.get(sr)
        objects = {sro for _, _, sro in members} | ({before.sro} if before else set())
        did = decision_id(label, sr)
        if len(objects) == 1:  # the same fact only: a duplicate, if copied
            if not dedupe or (len(members) == 1 and before is None):
                out.applied.setdefault(sr, Applied(members[0][2], members[0][0], round_))
                continue
            out.records.append((did, "duplicate"))
            m, counted = share(members)
            for party, i, _ in members:
                if (party, i) not in counted:
                    set_verdict(party, i, WITHDRAW, "duplicate", "your own repeat: your first copy counts", did)
                elif before is not None:
                    set_verdict(party, i, KEEP, "duplicate", f"applied in an earlier round: kept at weight 1/{m} "
                                "(near-zero residual if it was)", did, m)
                else:
                    set_verdict(party, i, KEEP, "duplicate", f"held by {m} parties: weight 1/{m}", did, m)
            if before is None:
                out.applied[sr] = Applied(members[0][2], members[0][0], round_)  # members are in priority order
            continue
        if policy == "none":  # a conflict nobody resolves: the least squares will land between the objects
            continue
        winner = _winner(members, before, policy, rank)
        out.records.append((did, "conflict"))
        backers = [m for m in members if m[2] == winner]
        keeper = backers[0] if backers and (before is None or before.sro != winner) else None
        m, counted = share(backers) if dedupe else (1, {(p, i) for p, i, _ in backers})
        for party, i, sro in members:
            if sro != winner:
                set_verdict(party, i, WITHDRAW, "conflict", f"lost under policy {policy}", did)
            elif (party, i) not in counted:
                set_verdict(party, i, WITHDRAW, "duplicate", "your own repeat: your first copy counts", did)
            elif keeper is not None and (party, i) == keeper[:2]:
                set_verdict(party, i, AUGMENT, "conflict", f"won under policy {policy}: adds augmented requests",
                            did, m)
            elif not dedupe:
                set_verdict(party, i, KEEP, "conflict", f"on the winning side under policy {policy}", did)
            else:
                set_verdict(party, i, KEEP, "duplicate", f"the winning object, held by {m} parties: weight 1/{m}",
                            did, m)
        if keeper is not None:
            out.applied[sr] = Applied(keeper[2], keeper[0], round_)
    return out


def _winner(members: list[tuple[str, int, bytes]], before: Applied | None, policy: str,
            rank: Mapping[str, int]) -> bytes:
    backers: dict[bytes, set[str]] = {}
    for party, _, sro in members:
        backers.setdefault(sro, set()).add(party)
    if before is not None:
        backers.setdefault(before.sro, set()).add(before.party)

    def best(sro: bytes) -> int:  # the highest priority backing this object
        return min(rank.get(p, len(rank)) for p in backers[sro])

    if policy == "priority":
        return min(backers, key=best)
    if policy == "majority":
        return min(backers, key=lambda s: (-len(backers[s]), best(s)))
    if before is not None:  # first: what was applied in an earlier round stands
        return before.sro
    # new this round: the declared priority, never the arrival order (the coordinator controls that)
    return min(backers, key=best)
