"""The coordinator's message handlers, one per inbound type; each runs after ``Coordinator._check``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from coordinator.stages import Stage, validate_contrib
from secure_collab.ledger import StoredRelease
from secure_collab.protection.base import Payload, ProtectionError
from secure_collab.protocol.messages import Message, MsgType, ProtocolError

log = logging.getLogger("coordinator")


@dataclass(frozen=True)
class Inbound:
    msg: Message
    name: str  # authenticated roster name ("solver" or a party)
    route: bytes
    raw: list[bytes]  # header + payload frames exactly as received
    nbytes: int
    digest: str  # sha256 of the header frame, which commits to every payload frame


class Handlers:
    """Mixin of ``Coordinator``: state lives there."""

    cfg: Any
    s: Any
    ledger: Any
    step: Any
    stage: Stage
    welcomed: set[str]
    public: bytes | None

    def _on_hello(self: Any, m: Inbound) -> None:
        """First HELLO on a connection joins (or rejoins after a restart); later ones are heartbeats."""
        if m.name == "solver":
            self._solver_hello(m)
        elif m.msg.body["role"] != "party" or m.msg.frames:
            raise ProtocolError("a party HELLO carries role 'party' and no payload")
        elif m.name not in self.welcomed:
            self.welcomed.add(m.name)
            self._accept(m, "joined")
            log.info("party %s joined", m.name)
            if self.stage is Stage.JOINING:
                self.active.add(m.name)
            if self.public is not None:
                self._welcome(m.name)

    def _solver_hello(self: Any, m: Inbound) -> None:
        body = m.msg.body
        if body["role"] != "solver" or not body["public"] or len(m.msg.frames) != 2:
            raise ProtocolError("a solver HELLO carries role 'solver' and [public params, signature]")
        public, signature = m.msg.frames
        if self.public is not None:
            if public != self.public:
                raise ProtocolError("solver public parameters differ from this session's")
            if "solver" not in self.welcomed:
                self.welcomed.add("solver")
                self._accept(m, "solver rejoined")
            return
        self._verify_setup(public, signature)
        self.public, self.public_sig = public, signature
        self.welcomed.add("solver")
        roster = self.cfg.roster
        curves = {"solver": roster.solver.curve, **{n: i.curve for n, i in roster.parties.items()}}
        self.ledger.open_session(self.s.id, self.cfg.digest, self.s.mode, public, signature, curves)
        self._accept(m, "solver public parameters")
        log.info("solver joined; its public parameters are signed")
        for name in sorted(self.welcomed - {"solver"}):
            self._welcome(name)

    def _welcome(self: Any, name: str) -> None:
        """Send setup, every release so far (parties ignore ones they applied), and an open request."""
        setup = self._msg(MsgType.SETUP, body={"mode": self.s.mode, "layers": list(self.s.layers),
                                               "rounds": self.s.rounds, "variant": self.s.variant},
                          frames=(self.public, self.public_sig))
        self._send(name, setup)
        for key in sorted(self.releases):
            rel = self.releases[key]
            self._send_frames(name, self.routes[name], rel.frames, "release",
                              {"round_": rel.round, "layer": rel.layer, "attempt": rel.attempt})
        step = self.step
        if step is not None and step.stage is Stage.COLLECTING and name in step.requested:
            self._send(name, self._request(step))

    def _on_contrib(self: Any, m: Inbound) -> None:
        step = self.step
        key = validate_contrib(m.msg, m.name, step, self.s)
        claimed = m.msg.body["payload"].get("party")
        if claimed is not None and claimed != m.name:  # an accumulator may count parties by this field
            raise ProtocolError(f"payload claims party {claimed!r} but authenticated as {m.name!r}")
        acc = step.accumulator(key, self.scheme, self.public, self.s)
        try:
            acc.add(Payload(header=dict(m.msg.body["payload"]), frames=m.msg.frames), party=m.name)
        except ProtectionError:
            raise  # the contract: validated before anything was added; refused, the sum is intact
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            # Outside the contract: the running sum may be half-updated. Refuse, and make this party
            # count as partial so the step is collected again without it.
            step.poisoned.add(m.name)
            raise ProtocolError(f"payload rejected by the accumulator ({type(exc).__name__})") from None
        step.accepted.setdefault(m.name, set()).add(key)
        self._accept(m)
        if m.name in step.complete(self.s):
            log.info("round %d: statistics of %s complete", step.round, m.name)

    def _on_release(self: Any, m: Inbound) -> None:
        msg, step = m.msg, self.step
        if msg.round != step.round or msg.layer not in step.layers or msg.layer in step.released:
            raise ProtocolError(f"unexpected release for round {msg.round} layer {msg.layer}")
        if msg.body["attempt"] != step.attempt:
            raise ProtocolError(f"stale release attempt {msg.body['attempt']} (current {step.attempt})")
        if sorted(msg.body["parties"]) != sorted(step.included):
            raise ProtocolError("release names other parties than the hand-off")
        if len(msg.frames) != 2:
            raise ProtocolError("release carries [ΔW, signature]")
        self._verify_release(msg, *msg.frames)
        rel = StoredRelease(msg.round, msg.layer, step.attempt, msg.body["sha256"], step.included, m.raw)
        self.ledger.release(self.s.id, rel)
        self.releases[(msg.round, msg.layer)] = rel
        step.released[msg.layer] = m.raw
        self._accept(m)
        log.info("round %d layer %d: ΔW released (sha256 %s…), relayed to the parties", msg.round, msg.layer,
                 msg.body["sha256"][:16])
        for name in sorted(self.routes):
            if name != "solver":
                self._send_frames(name, self.routes[name], m.raw, "release",
                                  {"round_": msg.round, "layer": msg.layer, "attempt": step.attempt})

    def _on_ack(self: Any, m: Inbound) -> None:
        body = m.msg.body
        self._accept(m, "applied" if body["ok"] else f"party refused release: {body['reason']}")

    def _on_error(self: Any, m: Inbound) -> None:
        reason = m.msg.body["reason"]
        self._accept(m, reason)
        if m.name == "solver" and self.stage is Stage.SOLVING:
            self.abort_reason = f"solver refused: {reason}"
