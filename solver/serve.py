"""The solver's side of a served release (``session.release = "served"``, protocol/query.py): the parties' queries.

Each party's queries arrive on its channel with the solver (``sealing.channel_key`` from the two long-term X25519
keys of the pinned roster), forwarded unread by the coordinator. Per query, in this order:

1. authenticated: decrypted under the named party's key with ``statements.query_label(…, counter, "query")`` as
   associated data, so a query the coordinator forged, altered, moved to another party or re-numbered fails here
   (refusal ``authentication``, an ANSWER with no frame, nothing charged);
2. its counter must be above the party's last (refusal ``replay``: replayed or reordered, nothing charged); the
   counter is then taken, so it is never answered twice;
3. checked (``protocol.query.check_query``, then the model's token bounds), refused ``malformed``, ``closed`` (the
   party said it was done), ``not-ready`` (a step is not released yet) or ``budget`` (its cost does not fit what is
   left of ``session.query_budget``), each with the detail inside the encrypted answer;
4. charged, recorded (sealed, on disk, before the answer is computed), answered by the served model and sent back
   encrypted with ``direction = "answer"``.

The counters, the budget used and who said done are one sealed record (``queries``) in the solver's state, so a
restarted solver neither answers a query twice nor forgets what a party has spent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from secure_collab.config import Config
from secure_collab.protection import ProtectionError, sealing, statements
from secure_collab.protocol import query as wire
from secure_collab.protocol.messages import Message, MsgType, ProtocolError
from solver.state import SolverState

log = logging.getLogger(__name__)


class ServedModel(Protocol):
    """The edited model the solver's host serves (``solver.solve.SessionSolve`` in a served session)."""

    def apply(self, layer: int, delta: np.ndarray) -> None:
        """Add one released ΔW (d_v, d_k) float64 to the down-projection of ``layer``."""
        ...

    def check(self, query: dict[str, Any]) -> None:
        """Raise ProtocolError when a checked query breaks a bound that needs the tokenizer."""
        ...

    def answer(self, query: dict[str, Any]) -> dict[str, Any]:
        """{"logprobs": [...], "tokens": [...]} for a logprobs query, {"text": ...} for a generate query."""
        ...


class QueryDesk:
    def __init__(self, config: Config, state: SolverState, seal_private: bytes, model: ServedModel,
                 ready: Callable[[], bool], send: Callable[[MsgType, dict[str, Any], tuple[bytes, ...]], None]) -> None:
        self.cfg, self.s, self.state, self.model, self.ready, self.send = (config, config.session, state, model,
                                                                          ready, send)
        solver_public = config.roster.solver.sealing
        self.keys = {name: sealing.channel_key(seal_private, ident.sealing, solver_public,
                                               statements.query_scope(self.s.id, config.digest, name))
                     for name, ident in config.roster.parties.items()}
        stored = state.load("queries")
        self.parties: dict[str, dict[str, Any]] = {name: {"counter": 0, "used": 0, "done": False}
                                                   for name in self.keys}
        if stored is not None:
            self.parties.update({n: rec for n, rec in stored[0]["parties"].items() if n in self.keys})
        self.answered = 0

    def _label(self, party: str, counter: int, direction: str) -> bytes:
        return statements.query_label(self.s.id, self.cfg.digest, party, counter, direction)

    def on_query(self, msg: Message) -> None:
        party, counter = msg.body["party"], msg.body["counter"]
        if party not in self.keys:
            raise ProtocolError(f"a query for {party!r}, who is not a roster party")
        rec = self.parties[party]
        frame = bytes(msg.frames[0]) if len(msg.frames) == 1 else b""
        try:
            if len(frame) != wire.QUERY_FRAME_BYTES:
                raise ProtectionError("query frame of the wrong size")
            plain = sealing.decrypt_channel(self.keys[party], self._label(party, counter, "query"), frame)
        except ProtectionError:
            log.warning("solver: a query for %s (counter %d) does not authenticate: refused", party, counter)
            self._note(party, counter, "authentication")
            return
        if counter <= rec["counter"]:
            log.warning("solver: query %d of %s is not above its last (%d): replayed or reordered, refused", counter,
                        party, rec["counter"])
            self._note(party, counter, "replay")
            return
        rec["counter"] = counter
        kind, cost, refusal, reason = "", 0, "", ""
        try:
            query = wire.decode_query(plain)
            kind, cost = query["kind"], wire.query_cost(query)
            if rec["done"]:
                refusal, reason = "closed", "this party said it was done: no more queries are answered"
            elif kind != "done" and not self.ready():
                refusal, reason = "not-ready", "the served model is not complete yet: a step is still to be released"
            elif kind != "done":
                self.model.check(query)
                if rec["used"] + cost > self.s.query_budget:
                    refusal, reason = "budget", (f"costs {cost}, and {self.s.query_budget - rec['used']} of the "
                                                 f"budget of {self.s.query_budget} forward passes are left")
        except ProtocolError as exc:
            refusal, reason = "malformed", str(exc)
        if refusal:
            cost = 0
        else:
            rec["used"] += cost
            rec["done"] = rec["done"] or kind == "done"
        self._save()  # the counter (and the charge) on disk before anything is computed or sent
        answer: dict[str, Any] = {}
        if not refusal and kind != "done":
            try:
                answer = self.model.answer(query)
            except Exception:  # the model must not take the solver down with it; the party is not charged
                log.exception("solver: query %d of %s could not be answered", counter, party)
                rec["used"] -= cost
                self._save()
                refusal, reason, cost, answer = "malformed", "the served model could not answer this query", 0, {}
        self.answered += not refusal
        if refusal:
            log.info("solver: refused query %d of %s (%s): %s", counter, party, refusal, reason[:200])
        plain_answer = wire.encode_answer({"ok": not refusal, "reason": reason[:wire.MAX_REASON], "kind": kind,
                                           "cost": cost, "used": rec["used"], "budget": self.s.query_budget,
                                           **answer})
        sealed = sealing.encrypt_channel(self.keys[party], self._label(party, counter, "answer"), plain_answer,
                                         sealing.fresh_bytes(sealing.NONCE_BYTES))
        self.send(MsgType.ANSWER, self._body(party, counter, kind, cost, not refusal, refusal), (sealed,))

    def _note(self, party: str, counter: int, refusal: str) -> None:
        """A refusal the solver cannot (or must not) answer on the channel: no frame, nothing charged."""
        self.send(MsgType.ANSWER, self._body(party, counter, "", 0, False, refusal), ())

    def _body(self, party: str, counter: int, kind: str, cost: int, accepted: bool, refusal: str) -> dict[str, Any]:
        return {"party": party, "counter": counter, "kind": kind, "cost": cost, "accepted": accepted,
                "used": self.parties[party]["used"], "refusal": refusal}

    def _save(self) -> None:
        self.state.save("queries", {"parties": self.parties})
