"""A party's side of the keyed-tag exchange (secure_collab/protocol/tags.py).

The editing engine gives the OPRF inputs of its requests for a round (``Tagger.tag_inputs``: after it withheld
those the model already knows and merged its own repeats) and is told the solver's verdicts (``Tagger.decided``).
This module blinds, checks the solver's signature on the evaluation and on the decision, finalises the tags and
seals them to the solver. What it sends is stored per round, so a coordinator that asks again (after a restart)
gets the same bytes. A decision that is not signed by the solver for this party and round, or whose collision
ids are not among its signed public records, is refused: the coordinator cannot make a party withdraw an edit or
change the weight 1/m it gives a duplicate (m is inside the sealed, signed box, and at most the roster's size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from secure_collab.protection import oprf, sealing, statements
from secure_collab.protection.base import ProtectionError
from secure_collab.protocol import tags as wire
from secure_collab.protocol.messages import Message, ProtocolError
from secure_collab.protocol.release import verify

Verdicts = list[tuple[int, str, str, str, int]]  # (index, action, kind, decision id, holders m: weight 1/m)


class Tagger(Protocol):
    def tag_inputs(self, round_: int) -> list[tuple[bytes, bytes]]:
        """The OPRF inputs ((subject, relation), (subject, relation, object)) of the round's requests."""
        ...

    def decided(self, round_: int, verdicts: Verdicts) -> None:
        """The solver's verdict for each request of ``tag_inputs(round)``, by position."""
        ...


@dataclass
class _Round:
    inputs: list[bytes]
    blinds: list[bytes]
    blinded: tuple[bytes, bytes, bytes]  # batch, sealed count, signature
    tags: tuple[bytes, bytes] | None = None  # sealed tags, signature
    values: list[bytes] = field(default_factory=list)  # this party's own tags (it may keep them; nobody else sees)
    verdicts: Verdicts | None = None
    records: list[str] = field(default_factory=list)  # the round's public decision ids, in their signed order


@dataclass
class PartyTags:
    session: Any  # SessionConfig
    config_digest: str
    name: str
    identity: Any  # the party's Identity (signing, sealing)
    solver_key: Any  # the solver's Ed25519 public key (from the pinned roster)
    tagger: Tagger
    parties: int = 1024  # the roster's size: no fact has more holders
    rounds: dict[int, _Round] = field(default_factory=dict)

    def decided(self, round_: int) -> bool:
        r = self.rounds.get(round_)
        return r is not None and r.verdicts is not None

    def blinded(self, round_: int, public: bytes, scheme: Any) -> tuple[bytes, bytes, bytes]:
        """The round's BLINDED frames (made once; the same bytes when asked again)."""
        if round_ in self.rounds:
            return self.rounds[round_].blinded
        s = self.session
        if not 0 <= round_ < s.rounds:
            raise ProtocolError(f"tag exchange for round {round_}, which is not a round of this session")
        pairs = self.tagger.tag_inputs(round_)
        if len(pairs) > s.max_edits_per_party:
            raise ValueError(f"{len(pairs)} requests exceed session.max_edits_per_party={s.max_edits_per_party}")
        inputs = [x for pair in pairs for x in pair]
        batch, blinds = oprf.blind_batch(inputs, s.tag_slots)
        sealed = sealing.seal_to(scheme.solver_seal_key(public), len(inputs).to_bytes(4, "big"), wire.COUNT_INFO,
                                 self._ad(round_), sealing.fresh_bytes(32))
        signature = self.identity.signing.sign(statements.blinded_statement(s.id, self.config_digest, round_, self.name,
                                                                      batch, sealed))
        self.rounds[round_] = _Round(inputs, blinds, (batch, sealed, signature))
        return self.rounds[round_].blinded

    def on_evaluated(self, msg: Message, public: bytes, scheme: Any) -> tuple[bytes, bytes]:
        """Check the solver's answer to our batch; the TAGS frames (the same bytes when asked again)."""
        r = self.rounds.get(msg.round)
        if r is None or msg.body["party"] != self.name or len(msg.frames) != 2:
            raise ProtocolError(f"an evaluation for round {msg.round} that is not an answer to this party")
        if r.tags is not None:
            return r.tags
        answer, signature = (bytes(f) for f in msg.frames)
        s = self.session
        statement = statements.evaluated_statement(s.id, self.config_digest, msg.round, self.name,
                                                   statements.sha(r.blinded[0]), answer)
        verify(self.solver_key, signature, statement, "evaluation")
        try:
            tags = oprf.finalize_batch(r.inputs, r.blinds, answer, s.tag_slots)
        except ProtectionError as exc:
            raise ProtocolError(f"evaluation: {exc}") from None
        r.values = tags
        pairs = list(zip(tags[0::2], tags[1::2], strict=True))
        plain = wire.encode_tags(pairs, s.tag_slots, sealing.fresh_bytes(wire.tags_plain_size(s.tag_slots)))
        sealed = sealing.seal_to(scheme.solver_seal_key(public), plain, wire.TAGS_INFO, self._ad(msg.round),
                                 sealing.fresh_bytes(32))
        sig = self.identity.signing.sign(statements.tags_statement(s.id, self.config_digest, msg.round, self.name,
                                                                   sealed))
        r.tags = (sealed, sig)
        return r.tags

    def on_decision(self, msg: Message) -> Verdicts | None:
        """The verdicts, checked (None if this round was already decided); ProtocolError when it is not genuine."""
        r = self.rounds.get(msg.round)
        if r is None or r.tags is None or msg.body["party"] != self.name or len(msg.frames) != 2:
            raise ProtocolError(f"decision: not addressed to this party's tags of round {msg.round}")
        if r.verdicts is not None:
            return None
        sealed, signature = (bytes(f) for f in msg.frames)
        s, records = self.session, msg.body["records"]
        verify(self.solver_key, signature, statements.decision_statement(s.id, self.config_digest, msg.round, self.name,
                                                                   sealed, records), "decision")
        try:
            plain = sealing.open_sealed(sealed, self.identity.sealing.private_bytes_raw(), wire.DECISION_INFO,
                                        self._ad(msg.round), wire.verdicts_plain_size(s.max_edits_per_party))
        except statements.AuthenticationFailed:
            raise ProtocolError("decision: authentication failed") from None
        verdicts = wire.decode_verdicts(plain, s.max_edits_per_party)
        public = {rec[0] for rec in records}
        if sorted(v[0] for v in verdicts) != list(range(len(r.inputs) // 2)):
            raise ProtocolError("decision: one verdict per request is required")
        if any(m > self.parties for *_, m in verdicts):
            raise ProtocolError("decision: a duplicate with more holders than the roster has parties")
        if any(kind and did not in public for _, _, kind, did, _ in verdicts):
            raise ProtocolError("decision: a collision id is missing from the signed public records")
        r.verdicts = sorted(verdicts)
        r.records = [rec[0] for rec in records]
        return r.verdicts

    def weakened(self, round_: int, missing: list[int]) -> list[tuple[int, int, int]]:
        """(request index, k, m) for each of this party's requests kept at 1/m whose release (``missing``: the
        solver's signed holders note, holders per record not in the step) had only k < m of its holders in the
        step: the fact counts k/m of one copy. ProtocolError if the note does not fit the round's records."""
        r = self.rounds.get(round_)
        if r is None or r.verdicts is None:  # not in this round's tag exchange: no request of ours in it
            return []
        if len(missing) != len(r.records):
            raise ProtocolError(f"release: a holders note of {len(missing)} entries for {len(r.records)} decisions")
        at = {did: i for i, did in enumerate(r.records)}
        ours = [(index, missing[at[did]], m) for index, action, kind, did, m in r.verdicts
                if action != "withdraw" and m > 1 and did in at]
        if any(j >= m for _, j, m in ours):
            raise ProtocolError("release: the holders note leaves out every holder of a fact this party holds")
        return [(index, m - j, m) for index, j, m in ours if j > 0]

    def _ad(self, round_: int) -> bytes:
        return statements.seal_ad(self.session.id, self.config_digest, round_, self.name)
