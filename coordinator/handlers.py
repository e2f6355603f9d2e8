"""The coordinator's message handlers, one per inbound type; each runs after ``Coordinator._check``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from coordinator.stages import Stage, validate_contrib
from secure_collab.ledger import StoredRelease
from secure_collab.protection import Payload, ProtectionError
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
    guard: Any
    holdings: dict[str, tuple[bool, frozenset[tuple[int, int]]]]
    acked: set[tuple[str, int, int]]

    def _on_hello(self: Any, m: Inbound) -> None:
        """First HELLO on a connection joins (or rejoins after a restart); later ones are heartbeats.
        Welcomes are rate-limited per party (``guard.may_welcome``): a refused HELLO is simply sent again
        by the party's next heartbeat."""
        if m.name == "solver":
            self._solver_hello(m)
        elif m.msg.body["role"] != "party" or m.msg.frames:
            raise ProtocolError("a party HELLO carries role 'party' and no payload")
        elif m.name not in self.welcomed:
            if not self.guard.may_welcome(m.name):
                raise ProtocolError("too many re-joins: welcome deferred to a later HELLO")
            body = m.msg.body
            self.holdings[m.name] = (body.get("setup", False),
                                     frozenset((r, lay) for r, lay in body.get("applied", [])))
            self.welcomed.add(m.name)
            self._accept(m, "joined")
            log.info("party %s joined", m.name)
            if self.stage is Stage.JOINING:
                self.active.add(m.name)
            if self.public is not None:
                self._welcome(m.name)

    def _solver_hello(self: Any, m: Inbound) -> None:
        body = m.msg.body
        if body["role"] != "solver" or not body["public"] or len(m.msg.frames) != 3:
            raise ProtocolError("a solver HELLO carries role 'solver' and [public params, bundles, signature]")
        public, bundles, signature = (bytes(f) for f in m.msg.frames)
        if self.public is not None:
            if public != self.public or bundles != self.bundles:
                raise ProtocolError("solver setup differs from this session's")
            if "solver" not in self.welcomed:
                self.welcomed.add("solver")
                self._accept(m, "solver rejoined")
                step = self.step
                if step is not None and step.stage is Stage.SOLVING and len(step.released) < len(step.layers):
                    for key in sorted(step.accs):  # what it may have missed while it was away
                        self._hand_off(step, key)
            return
        self._verify_setup(public, bundles, signature)
        self.public, self.bundles, self.public_sig = public, bundles, signature
        self.welcomed.add("solver")
        roster = self.cfg.roster
        curves = {"solver": roster.solver.curve, **{n: i.curve for n, i in roster.parties.items()}}
        self.ledger.open_session(self.s.id, self.cfg.digest, self.s.mode, public, bundles, signature, curves)
        self._accept(m, "solver public parameters")
        log.info("solver joined; its public parameters are signed")
        for name in sorted(self.welcomed - {"solver"}):
            self._welcome(name)

    def _welcome(self: Any, name: str) -> None:
        """Send what the party's HELLO said it lacks: the setup, the releases so far that it has not applied,
        and an open request."""
        has_setup, applied = self.holdings.get(name, (False, frozenset()))
        if not has_setup:
            setup = self._msg(MsgType.SETUP, body={"mode": self.s.mode, "layers": list(self.s.layers),
                                                   "rounds": self.s.rounds, "variant": self.s.variant},
                              frames=(self.public, self.bundles, self.public_sig))
            self._send(name, setup)
        missing = [key for key in sorted(self.releases) if key not in applied]
        self.guard.grant_acks(name, len(missing))
        for key in missing:
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
        self.scheme.check_signature(Payload(header=dict(m.msg.body["payload"]), frames=m.msg.frames),
                                    step.context(self.s, key, m.name), self.verify_keys[m.name], self.public)
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
        """A signed, encrypted ΔW: verified, recorded (ciphertext only) and forwarded to every party.

        Its attempt and party list may be an earlier attempt's: after a coordinator restart the solver
        sends what it released before instead of opening the step again."""
        msg, step = m.msg, self.step
        if msg.round != step.round or msg.layer not in step.layers or msg.layer in step.released:
            raise ProtocolError(f"unexpected release for round {msg.round} layer {msg.layer}")
        if len(msg.frames) != 2:
            raise ProtocolError("release carries [ΔW ciphertext, signature]")
        self._verify_release(msg, *msg.frames)
        parties = tuple(sorted(msg.body["parties"]))
        rel = StoredRelease(msg.round, msg.layer, msg.body["attempt"], msg.body["sha256"], parties, m.raw)
        known = self.releases.get((msg.round, msg.layer))
        if known is not None and known.sha256 != rel.sha256:
            raise ProtocolError(f"a second, different release of round {msg.round} layer {msg.layer}")
        if known is None:
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

    def _on_verdict(self: Any, m: Inbound) -> None:
        """The solver refused the step's aggregate: exclude the parties it could not authenticate and collect
        again (nothing was opened), or end the step (it was opened and failed a check)."""
        msg, step, body = m.msg, self.step, m.msg.body
        if msg.round != step.round or body["attempt"] != step.attempt or tuple(body["layers"]) != step.layers:
            raise ProtocolError(f"verdict for round {msg.round} attempt {body['attempt']} is not about this step")
        self._accept(m, body["reason"])
        unknown = set(body["exclude"]) - set(step.included)
        if body["opened"] or not body["exclude"] or unknown:
            step.refused = f"solver refused round {step.round} layers {list(step.layers)}: {body['reason']}"
        else:
            step.excluded = set(body["exclude"])

    def _on_ack(self: Any, m: Inbound) -> None:
        """One row per (party, round, layer): an ACK is an answer to a release, and a release is sent once."""
        body, key = m.msg.body, (m.name, m.msg.round, m.msg.layer)
        if (m.msg.round, m.msg.layer) not in self.releases:  # else any pair gives a row (and a false refusal)
            raise ProtocolError(f"round {m.msg.round} layer {m.msg.layer} has no release to acknowledge")
        if key in self.acked:
            raise ProtocolError(f"round {m.msg.round} layer {m.msg.layer} was acknowledged already")
        self.acked.add(key)
        self._accept(m, "applied" if body["ok"] else f"party refused release: {body['reason']}")

    def _on_error(self: Any, m: Inbound) -> None:
        reason = m.msg.body["reason"]
        if m.name == "solver":
            self._accept(m, reason)
            if self.stage is Stage.SOLVING:
                self.abort_reason = f"solver refused: {reason}"
        elif self.guard.record_refusal(m.name, m.nbytes):  # a party's error reports share its row window
            self._accept(m, reason)
