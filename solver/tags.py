"""The solver's side of the keyed-tag exchange (protocol/tags.py): OPRF evaluations, collision decisions.

The OPRF key is the session's, made in the solver's setup and sealed at rest with it. Per round and party the
solver evaluates one padded batch, at most the count the party sealed to it (a batch sent again with the same
bytes gets the stored answer; different bytes are refused), takes at most that many tags back, and decides
over the tags of the parties the coordinator lists (``secure_collab.overlap.decide``), together with the facts
applied in earlier rounds. Everything is written to the sealed store before it is sent (``tags-r{R}``, and
``facts`` for what later rounds compare against), so a restarted solver answers the same way and never
evaluates or decides twice. Each decision goes to its party sealed to its long-term key and signed; its public
part (decision ids and kinds) is the same for every party of the round. At aggregation ``expected_edits``
gives the edit count the listed parties must have contributed: the requests they tagged, less those withdrawn,
plus the augmented ones, so a party cannot obtain more tags than the requests it contributes. A duplicate is
never withdrawn (each of its m holders keeps it at weight 1/m, ``overlap.decide``), so no party can take
another's edit out of the sums by tagging it; the count still counts requests, whatever their weight.
Each holder's 1/m assumes the other m − 1 copies reach the sum; the solver records who the holders are and, in
every release, says (``missing_holders``, signed and encrypted with ΔW) how many of them were not in the step, so
a coordinator that leaves a decided co-holder out cannot weaken the others' copy unnoticed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from secure_collab.config import Config
from secure_collab.overlap import AUGMENT, WITHDRAW, Applied, decide
from secure_collab.protection import oprf, sealing, statements
from secure_collab.protocol import tags as wire
from secure_collab.protocol.messages import Message, MsgType, ProtocolError, check_tag_body
from solver.state import SolverState

log = logging.getLogger(__name__)


class TagDesk:
    def __init__(self, config: Config, state: SolverState, signing: Any, seal_private: bytes, key: bytes,
                 send: Callable[[MsgType, int, dict, tuple[bytes, ...]], None]) -> None:
        self.cfg, self.s, self.state, self.signing = config, config.session, state, signing
        self.seal_private, self.key, self.send = seal_private, key, send
        self.parties = frozenset(config.roster.parties)
        self.priority = list(self.s.party_priority) + [p for p in config.roster.parties
                                                       if p not in self.s.party_priority]

    # ---- the round's record --------------------------------------------------------------------------
    def _round(self, round_: int) -> dict[str, Any]:
        if not 0 <= round_ < self.s.rounds:
            raise ProtocolError(f"round {round_} is not a round of this session")
        stored = self.state.load(f"tags-r{round_}")
        return stored[0] if stored else {"evaluated": {}, "submitted": {}, "sealed": {}, "decided": None}

    def _save(self, round_: int, rec: dict[str, Any]) -> None:
        self.state.save(f"tags-r{round_}", rec)

    def _ad(self, round_: int, party: str) -> bytes:
        return statements.seal_ad(self.s.id, self.cfg.digest, round_, party)

    # ---- handlers ------------------------------------------------------------------------------------
    def on_blinded(self, msg: Message) -> None:
        check_tag_body(msg, self.s.tag_slots, self.parties)
        party, slots = msg.body["party"], self.s.tag_slots
        if not party or len(msg.frames) != 3:
            raise ProtocolError("blinded tags carry [batch, sealed count, signature] and the party's name")
        batch, sealed, signature = (bytes(f) for f in msg.frames)
        rec = self._round(msg.round)
        done = rec["evaluated"].get(party)
        if done is not None:  # at most one evaluation per party and round; the same bytes get the same answer
            if done["batch"] != statements.sha(batch):
                raise ProtocolError(f"round {msg.round}: party {party}'s tags were already evaluated; refused")
            self._send_evaluated(msg.round, party, done)
            return
        try:
            statements.verify(self.cfg.roster.parties[party].verify_key(), signature,
                              statements.blinded_statement(self.s.id, self.cfg.digest, msg.round, party, batch, sealed))
            count = int.from_bytes(sealing.open_sealed(sealed, self.seal_private, wire.COUNT_INFO,
                                                       self._ad(msg.round, party), 4), "big")
        except statements.AuthenticationFailed:
            raise ProtocolError(f"round {msg.round}: party {party}'s blinded tags do not authenticate") from None
        if count % 2 or count > slots:
            raise ProtocolError(f"round {msg.round}: party {party} declared {count} elements for {slots} slots")
        answer = oprf.evaluate_batch(self.key, batch, slots, count)  # ProtectionError on a bad element
        sig = self.signing.sign(statements.evaluated_statement(self.s.id, self.cfg.digest, msg.round, party,
                                                         statements.sha(batch), answer))
        done = {"count": count, "batch": statements.sha(batch), "answer": answer.hex(), "signature": sig.hex()}
        rec["evaluated"][party] = done
        self._save(msg.round, rec)  # before it leaves: never a second evaluation
        self._send_evaluated(msg.round, party, done)

    def _send_evaluated(self, round_: int, party: str, done: dict[str, Any]) -> None:
        self.send(MsgType.EVALUATED, round_, {"party": party, "slots": self.s.tag_slots},
                  (bytes.fromhex(done["answer"]), bytes.fromhex(done["signature"])))

    def on_tags(self, msg: Message) -> None:
        check_tag_body(msg, self.s.tag_slots, self.parties)
        party = msg.body["party"]
        if not party or len(msg.frames) != 2:
            raise ProtocolError("tags carry [sealed tags, signature] and the party's name")
        sealed, signature = (bytes(f) for f in msg.frames)
        rec = self._round(msg.round)
        if party not in rec["evaluated"]:
            raise ProtocolError(f"round {msg.round}: tags from {party}, whose batch was never evaluated")
        if party in rec["submitted"]:  # sent again (the coordinator lost track of us): the same bytes are fine
            if rec["sealed"].get(party) != statements.sha(sealed):
                raise ProtocolError(f"round {msg.round}: {party}'s tags were already taken")
            return
        if rec["decided"] is not None:
            raise ProtocolError(f"round {msg.round} is decided: {party}'s tags come too late")
        try:
            statements.verify(self.cfg.roster.parties[party].verify_key(), signature,
                                  statements.tags_statement(self.s.id, self.cfg.digest, msg.round, party, sealed))
            plain = sealing.open_sealed(sealed, self.seal_private, wire.TAGS_INFO, self._ad(msg.round, party),
                                        wire.tags_plain_size(self.s.tag_slots))
        except statements.AuthenticationFailed:
            raise ProtocolError(f"round {msg.round}: party {party}'s tags do not authenticate") from None
        pairs = wire.decode_tags(plain, self.s.tag_slots)
        if 2 * len(pairs) > rec["evaluated"][party]["count"]:
            raise ProtocolError(f"round {msg.round}: {party} sent {len(pairs)} tag pairs for "
                                f"{rec['evaluated'][party]['count']} evaluated elements")
        rec["submitted"][party] = [[sr.hex(), sro.hex()] for sr, sro in pairs]
        rec["sealed"][party] = statements.sha(sealed)
        self._save(msg.round, rec)

    def on_decide(self, msg: Message) -> None:
        check_tag_body(msg, self.s.tag_slots, self.parties)
        parties = sorted(msg.body["parties"])
        rec = self._round(msg.round)
        if rec["decided"] is not None:
            if rec["decided"]["parties"] != parties:
                raise ProtocolError(f"round {msg.round} was decided over {rec['decided']['parties']}; refused")
            self._send_decisions(msg.round, rec["decided"])  # the same decisions again (coordinator restart)
            return
        missing = [p for p in parties if p not in rec["submitted"]]
        if missing or not parties:
            raise ProtocolError(f"round {msg.round}: no tags from {missing or 'anybody'}")
        facts = self._facts()
        history = {bytes.fromhex(sr): Applied(bytes.fromhex(f[0]), f[1], f[2]) for sr, f in facts.items()
                   if f[2] < msg.round}
        got = decide({p: [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in rec["submitted"][p]] for p in parties},
                     round_=msg.round, label=self._ad(msg.round, ""), dedupe=self.s.dedupe,
                     policy=self.s.conflict_policy, priority=self.priority, history=history)
        records = [[did, kind] for did, kind in got.records]
        # per record, the parties keeping a copy at weight 1/m (m > 1): at release, how many were in the step
        holders = [sorted(p for p in parties if any(v.decision == did and v.action != WITHDRAW and v.holders > 1
                                                    for v in got.verdicts[p])) for did, _ in got.records]
        decided: dict[str, Any] = {"parties": parties, "records": records, "holders": holders, "messages": {},
                                   "counts": {}}
        for p in parties:
            verdicts = [(v.index, v.action, v.kind, v.decision, v.holders) for v in got.verdicts[p]]
            plain = wire.encode_verdicts(verdicts, self.s.max_edits_per_party,
                                         sealing.fresh_bytes(wire.verdicts_plain_size(self.s.max_edits_per_party)))
            sealed = sealing.seal_to(self.cfg.roster.parties[p].sealing, plain, wire.DECISION_INFO,
                                     self._ad(msg.round, p), sealing.fresh_bytes(32))
            sig = self.signing.sign(statements.decision_statement(self.s.id, self.cfg.digest, msg.round, p, sealed,
                                                                  records))
            decided["messages"][p] = {"sealed": sealed.hex(), "signature": sig.hex()}
            decided["counts"][p] = {"tagged": len(verdicts),
                                    "withdrawn": sum(v.action == WITHDRAW for v in got.verdicts[p]),
                                    "won": sum(v.action == AUGMENT for v in got.verdicts[p])}
        for sr, a in got.applied.items():  # what later rounds compare against (the history above skips them)
            facts[sr.hex()] = [a.sro.hex(), a.party, a.round]
        self.state.save("facts", {"facts": facts})
        rec["decided"] = decided
        self._save(msg.round, rec)  # decided before anything is sent: never decided twice
        log.info("solver: round %d decided over %s: %d decisions", msg.round, ", ".join(parties), len(records))
        self._send_decisions(msg.round, decided)

    def _facts(self) -> dict[str, list]:
        stored = self.state.load("facts")
        return dict(stored[0]["facts"]) if stored else {}

    def _send_decisions(self, round_: int, decided: dict[str, Any]) -> None:
        for p, m in sorted(decided["messages"].items()):
            self.send(MsgType.DECISION, round_, {"party": p, "records": decided["records"]},
                      (bytes.fromhex(m["sealed"]), bytes.fromhex(m["signature"])))

    # ---- at aggregation ------------------------------------------------------------------------------
    def missing_holders(self, round_: int, parties: tuple[str, ...]) -> list[int]:
        """For each of the round's public records, in order, how many of the parties keeping that fact at 1/m are
        not among ``parties`` (the step's): j > 0 means the fact counts (m − j)/m of one copy in this release."""
        decided = self._round(round_)["decided"]
        if decided is None:
            return []
        step = set(parties)
        return [len(set(hs) - step) for hs in decided["holders"]]

    def expected_edits(self, round_: int, parties: tuple[str, ...]) -> int:
        """Σ over ``parties`` of (tagged − withdrawn + augment × won); ValueError if one has no decision."""
        rec = self._round(round_)
        decided = rec["decided"]
        missing = [p for p in parties if decided is None or p not in decided["counts"]]
        if missing:
            raise ValueError(f"parties {missing} have no decision for round {round_}")
        return self.decided_edits(round_, parties)

    def decided_edits(self, round_: int, parties: tuple[str, ...]) -> int:
        """Σ over those of ``parties`` the round has a decision for of (tagged − withdrawn + augment × won): the
        real edits they may count (the decoys' repair round bounds its count by R times the earlier rounds')."""
        decided = self._round(round_)["decided"]
        if decided is None:
            return 0
        return sum(c["tagged"] - c["withdrawn"] + self.s.augment * c["won"]
                   for p, c in decided["counts"].items() if p in parties)
