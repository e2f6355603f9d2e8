"""The coordinator's message handlers, one per inbound type; each runs after ``Coordinator._check``."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coordinator.connections import Connection, Connections
from coordinator.guard import PeerGuard
from coordinator.outbox import Outgoing
from coordinator.stages import Key, Stage, Step, TagPhase, validate_contrib
from secure_collab.config import Config, SessionConfig
from secure_collab.ledger import Ledger, PartSink, StoredRelease, read_parts
from secure_collab.protection import Payload, ProtectionError, PublicScheme, statements
from secure_collab.protection.public import SEALED_OVERHEAD
from secure_collab.protocol import tags as wire
from secure_collab.protocol.messages import (
    Frame,
    Message,
    MsgType,
    ProtocolError,
    answer_of,
    check_tag_body,
    header_of,
    part_of,
    release_of,
)
from secure_collab.protocol.query import ANSWER_FRAME_BYTES, QUERY_FRAME_BYTES, UNANSWERED
from secure_collab.protocol.release import max_ciphertext_bytes, part_bytes

log = logging.getLogger("coordinator")
ASKED_KEPT = 64  # unanswered queries whose connection is kept per party (``QueryHandlers.asked``)
PART_HEADERS_KEPT = 64  # release parts' headers kept for the other parties (each hashes a part of up to 1 MiB)


@dataclass(frozen=True)
class Inbound:
    msg: Message
    name: str  # authenticated roster name ("solver" or a party)
    route: bytes
    raw: list[bytes]  # header + payload frames exactly as received
    nbytes: int
    digest: str  # sha256 of the header frame, which commits to every payload frame
    conn: Connection = field(default_factory=lambda: Connection(b""))  # the connection it was read on


class CoordinatorState(ABC):
    """What a handler may touch: the coordinator's state and the few ways it records, sends and hands off.
    ``Coordinator`` implements it (its __init__ sets the state); mypy checks every handler against it. (An
    ABC, not a Protocol: mypy would take a handler's assignment to a Protocol member for a new attribute.)"""

    cfg: Config
    s: SessionConfig
    clock: Callable[[], float]
    scheme: PublicScheme
    ledger: Ledger
    guard: PeerGuard
    verify_keys: dict[str, Ed25519PublicKey]  # each party's long-term signing key, from the pinned roster
    stage: Stage
    step: Step | None  # the step being collected or solved; None while joining or tagging
    phase: TagPhase | None  # the open keyed-tag exchange, if any
    public: bytes | None  # the solver's signed setup: public parameters, sealed bundles, signature
    bundles: bytes
    public_sig: bytes
    conns: Connections  # each peer's connections (``connections.py``)
    routes: dict[str, bytes]  # peer name -> its ROUTER identity on its route (a welcomed connection)
    active: set[str]
    holdings: dict[str, tuple[bool, frozenset[tuple[int, int]]]]  # what each party's route said it holds
    releases: dict[tuple[int, int], StoredRelease]
    part_headers: dict[tuple[int, int, str, int], bytes]  # the last few release parts' headers, oldest first
    incoming: dict[tuple[int, int], PartSink]  # a release's ciphertext arriving in parts, on disk
    acked: set[tuple[str, int, int]]
    step_pairs: frozenset[tuple[int, int]]  # the session's (round, layer) pairs
    decisions: dict[str, tuple[int, list[bytes]]]  # party -> its last relayed DECISION (round, frames as received)
    end: Message | None  # END, once the session ended
    abort_reason: str

    @abstractmethod
    def _accept(self, m: Inbound, reason: str = "") -> None: ...
    @abstractmethod
    def _adopt(self, m: Inbound) -> None: ...
    @abstractmethod
    def _msg(self, mtype: MsgType, round_: int = -1, layer: int = -1, stat: str = "",
             body: Mapping[str, Any] | None = None, frames: tuple[Frame, ...] = ()) -> Message: ...
    @abstractmethod
    def _send(self, name: str, msg: Message) -> None: ...
    @abstractmethod
    def _send_frames(self, name: str, route: bytes, frames: Sequence[Frame], mtype: str,
                     where: dict[str, Any], track: bool = False) -> list[Any]: ...
    @abstractmethod
    def _post(self, name: str, route: bytes, frames: Sequence[Frame], mtype: str, where: dict[str, Any]) -> None: ...
    @abstractmethod
    def _queue(self, name: str, messages: Iterable[Outgoing]) -> None: ...
    @abstractmethod
    def _request(self, step: Step) -> Message: ...
    @abstractmethod
    def _grace(self) -> float: ...
    @abstractmethod
    def _hand_off(self, step: Step, key: Key) -> list[Any]: ...
    @abstractmethod
    def _forward(self, step: Step, key: Key) -> None: ...
    @abstractmethod
    def _verify_setup(self, public: bytes, bundles: bytes, signature: bytes) -> None: ...
    @abstractmethod
    def _verify_release(self, msg: Message, assembled: str | None = None) -> None: ...

    def _relay(self, party: str, m: Inbound) -> None:
        """Forward a solver's message to a party as received (its header and frames unchanged)."""
        route = self.routes.get(party)
        if route is not None:
            self._post(party, route, m.raw, m.msg.type.value, {"round_": m.msg.round})


def _open_step(c: CoordinatorState) -> Step:
    """The open step of a CONTRIB, RELEASE or VERDICT: ``ACCEPTS`` admits them only while one is open."""
    assert c.step is not None, "a step message passed the stage check with no step open"
    return c.step


class Handlers(CoordinatorState):
    """Handlers of ``Coordinator`` for joining, contributions, releases and errors: state lives there."""

    def _on_hello(self, m: Inbound) -> None:
        """First HELLO on a connection joins (or rejoins after a restart) and makes it the party's route; later ones
        are heartbeats, which say what the party holds now. Welcomes are rate-limited per party
        (``guard.may_welcome``): a refused HELLO is simply sent again by the party's next heartbeat."""
        if m.name == "solver":
            self._solver_hello(m)
            return
        if m.msg.body["role"] != "party" or m.msg.frames:
            raise ProtocolError("a party HELLO carries role 'party' and no payload")
        body = m.msg.body
        # only the session's own steps are kept (a HELLO may list 16,384 pairs, and each connection keeps its own)
        holdings = (bool(body.get("setup", False)),
                    frozenset(p for r, lay in body.get("applied", []) if (p := (r, lay)) in self.step_pairs))
        if m.conn.welcomed:
            self.conns.heard(m.name, m.conn, holdings)
        else:
            if not self.guard.may_welcome(m.name):
                raise ProtocolError("too many re-joins: welcome deferred to a later HELLO")
            m.conn.holdings = holdings
            self._adopt(m)
            self._accept(m, "joined")
            log.info("party %s joined", m.name)
            if self.stage is Stage.JOINING:
                self.active.add(m.name)
            if self.public is not None:
                self._welcome(m.name)

    def _solver_hello(self, m: Inbound) -> None:
        body = m.msg.body
        if body["role"] != "solver" or not body["public"] or len(m.msg.frames) != 3:
            raise ProtocolError("a solver HELLO carries role 'solver' and [public params, bundles, signature]")
        public, bundles, signature = (bytes(f) for f in m.msg.frames)
        if self.public is not None:
            if public != self.public or bundles != self.bundles:
                raise ProtocolError("solver setup differs from this session's")
            if not m.conn.welcomed:
                self._adopt(m)
                self._accept(m, "solver rejoined")
                self._solver_back()
            return
        self._verify_setup(public, bundles, signature)
        self.public, self.bundles, self.public_sig = public, bundles, signature
        self._adopt(m)
        roster = self.cfg.roster
        curves = {"solver": roster.solver.curve, **{n: i.curve for n, i in roster.parties.items()}}
        self.ledger.open_session(self.s.id, self.cfg.digest, self.s.mode, public, bundles, signature, curves)
        self._accept(m, "solver public parameters")
        log.info("solver joined; its public parameters are signed")
        for name in sorted(n for n in self.routes if n != "solver"):
            self._welcome(name)

    def _solver_back(self) -> None:
        """The solver's route is a connection other than the one the step's sums and the tag exchange's messages went
        to (it rejoined, or its route fell back from a closed one): those are collected or sent again."""
        if self.end is not None:  # the session has ended: nothing more to ask of it
            return
        step = self.step
        if step is not None and step.handed and len(step.released) < len(step.layers):
            # the sums handed to it are gone with its old connection, and dropped here: collect the step
            # again under a new attempt (nothing was opened, or it refuses to open again)
            step.stale = True
        forwarded = self.phase.forwarded if self.phase is not None else []
        for msg in forwarded:  # the solver answers each the same way
            self._send("solver", msg)

    def _welcome(self, name: str) -> None:
        """Send what the party's HELLO said it lacks: the setup, the releases so far that it has not applied, its
        round's DECISION if one was relayed (a party contributes to a tagged round only with it; it ignores a second
        copy), and an open request."""
        assert self.public is not None, "a party is welcomed once the solver's setup is in"
        has_setup, applied = self.holdings.get(name, (False, frozenset()))
        if not has_setup:
            setup = self._msg(MsgType.SETUP, body={"mode": self.s.mode, "layers": list(self.s.layers),
                                                   "rounds": self.s.protocol_rounds, "variant": self.s.variant},
                              frames=(self.public, self.bundles, self.public_sig))
            self._send(name, setup)
        missing = [key for key in sorted(self.releases) if key not in applied]
        self.guard.grant_acks(name, len(missing))
        for key in missing:
            self._send_release([name], self.releases[key])
        step = self.step
        decided = self.decisions.get(name)
        round_ = step.round if step is not None else self.phase.round if self.phase is not None else None
        route = self.routes.get(name)
        if decided is not None and decided[0] == round_ and route is not None:
            self._post(name, route, decided[1], MsgType.DECISION.value, {"round_": round_})
        if self.end is not None:  # the session has ended: nothing more to ask of it
            return
        if step is not None and step.stage is Stage.COLLECTING and name in step.requested:
            self._send(name, self._request(step))
        phase = self.phase
        if phase is not None and name in phase.expected and name not in phase.decided:  # rejoined during tagging
            self._send(name, self._msg(MsgType.TAG_OPEN, phase.round, body={"attempt": 0}))

    def _on_contrib(self, m: Inbound) -> None:
        step = _open_step(self)
        assert self.public is not None, "steps open after the solver's setup is in"
        key = validate_contrib(m.msg, m.name, step, self.s)
        claimed = m.msg.body["payload"].get("party")
        if claimed is not None and claimed != m.name:  # an accumulator may count parties by this field
            raise ProtocolError(f"payload claims party {claimed!r} but authenticated as {m.name!r}")
        self.scheme.check_signature(Payload(header=dict(m.msg.body["payload"]), frames=m.msg.frames),
                                    step.context(self.s, key, m.name), self.verify_keys[m.name], self.public)
        before = step.accs[key].held_bytes if key in step.accs else 0
        acc = step.accumulator(key, self.scheme, self.public, self.s)
        try:
            acc.add(Payload(header=dict(m.msg.body["payload"]), frames=m.msg.frames), party=m.name)
        except ProtectionError:
            raise  # the contract: validated before anything was added; refused, the sum is intact
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            # Outside the contract: the running sum may be half-updated. Refuse, and make this party
            # count as partial so the step is collected again without it.
            step.poisoned.add(m.name)
            step.broken.add(key)  # never handed to the solver
            raise ProtocolError(f"payload rejected by the accumulator ({type(exc).__name__})") from None
        finally:  # the window's accounting: what the running sums hold now (a new sum is held even if refused)
            step.held_bytes += acc.held_bytes - before
            step.peak_held_bytes = max(step.peak_held_bytes, step.held_bytes)
        step.accepted.setdefault(m.name, set()).add(key)
        step.arrived(m.name, key, self.clock(), self._grace())
        self._accept(m)
        if m.name in step.complete(self.s):
            log.info("round %d: statistics of %s complete", step.round, m.name)
        if set(acc.parties) == step.expected and key not in step.broken:  # every party is in this chunk's sum
            self._forward(step, key)

    def _on_release(self, m: Inbound) -> None:
        """A signed, encrypted ΔW: verified, recorded (ciphertext only) and forwarded to every party. In a served
        session a NOTICE instead (the signature alone: the solver keeps ΔW), handled the same way.

        Its attempt and party list may be an earlier attempt's: after a coordinator restart the solver
        sends what it released before instead of opening the step again."""
        msg, step = m.msg, _open_step(self)
        if msg.round != step.round or msg.layer not in step.layers or msg.layer in step.released:
            raise ProtocolError(f"unexpected release for round {msg.round} layer {msg.layer}")
        body = release_of(msg)
        sink = self.incoming.pop((msg.round, msg.layer), None) if "parts" in body else None
        try:
            self._verify_release(msg, sink.digest() if sink is not None else None)
            parties = tuple(sorted(body["parties"]))
            known = self.releases.get((msg.round, msg.layer))
            if known is not None and known.sha256 != body["sha256"]:
                raise ProtocolError(f"a second, different release of round {msg.round} layer {msg.layer}")
            if known is None:  # kept on disk (the ledger's release files), not in memory: re-sent from there
                self.releases[(msg.round, msg.layer)] = self.ledger.release(
                    self.s.id, msg.round, msg.layer, body["attempt"], body["sha256"], parties, m.raw, sink)
                sink = None
        finally:
            if sink is not None:
                sink.discard()
        step.released[msg.layer] = body["sha256"]  # the ΔW itself is on disk only
        self._accept(m)
        log.info("round %d layer %d: %s (sha256 %s…), relayed to the parties", msg.round, msg.layer,
                 "ΔW released to the served model" if self.s.served else "ΔW released", body["sha256"][:16])
        self._send_release(sorted(n for n in self.routes if n != "solver"), self.releases[(msg.round, msg.layer)],
                           msg.type.value)

    def _on_release_part(self, m: Inbound) -> None:
        """A slice of a release's ciphertext that does not fit one message: appended to a file as it comes (never held
        in memory), hashed; the RELEASE that follows must sign the whole's sha256. Parts come in order on the solver's
        one connection; part 0 starts over."""
        msg, step, body = m.msg, _open_step(self), part_of(m.msg)
        if self.s.served or msg.round != step.round or msg.layer not in step.layers or msg.layer in step.released:
            raise ProtocolError(f"unexpected release part for round {msg.round} layer {msg.layer}")
        size = part_bytes(self.cfg.network.max_message_bytes)
        limit = max_ciphertext_bytes(self.s.d_v, self.s.d_k, self.s.tags, self.s.max_edits_per_party)
        frame = m.msg.frames[0] if len(m.msg.frames) == 1 else b""
        if not frame or len(frame) > size or body["parts"] > -(-limit // 1024):
            raise ProtocolError(f"a release part carries 1 to {size} bytes, of at most {limit} in all")
        key = (msg.round, msg.layer)
        sink = self.incoming.get(key)
        if body["part"] == 0:
            if sink is not None:
                sink.discard()
            for other in list(self.incoming):  # one release arrives at a time: keep one file
                self.incoming.pop(other).discard()
            sink = self.incoming[key] = self.ledger.part_sink(self.s.id, msg.round, msg.layer, body["sha256"],
                                                              body["parts"], body["attempt"])
        elif (sink is None or body["part"] != sink.received
              or (sink.sha256, sink.parts, sink.attempt) != (body["sha256"], body["parts"], body["attempt"])):
            raise ProtocolError(f"release part {body['part']} of round {msg.round} layer {msg.layer} is out of order")
        if sink.nbytes + len(frame) > limit:
            self.incoming.pop(key).discard()
            raise ProtocolError(f"release parts exceed {limit} bytes")
        sink.add(frame)
        self._accept(m)

    def _send_release(self, names: Sequence[str], rel: StoredRelease, mtype: str = "release") -> None:
        """A stored release to each named party, paced (``coordinator/outbox.py``): its ciphertext's parts, then the
        signed RELEASE. Every frame is a view of the release file's one shared map, sent zero-copy, so re-sending to a
        party that reconnects and never reads queues views, not a copy per welcome."""
        for name in names:
            if name in self.routes:
                self._queue(name, self._release_messages(rel, mtype))

    def _release_messages(self, rel: StoredRelease, mtype: str) -> Iterator[Outgoing]:
        """A stored release as one connection gets it, built as it goes: its ciphertext in RELEASE_PARTs of at most
        ``part_bytes``, then the RELEASE. A release that came inline with a ciphertext over a part (kept by a ledger
        written before the solver's RELEASEs were bounded by a part) goes in parts too, its RELEASE then built here with
        ``parts`` and an empty ciphertext frame: the solver's signature covers the ciphertext's sha256, not the
        message it came in, so a party checks it the same way."""
        where = {"round_": rel.round, "layer": rel.layer, "attempt": rel.attempt}
        size = part_bytes(self.cfg.network.max_message_bytes)
        frames: list[Frame] = list(rel.shared_frames())
        inline = mtype == MsgType.RELEASE.value and rel.ciphertext is None and len(frames) == 3
        if rel.ciphertext is None and not (inline and len(frames[1]) > size):
            yield frames, mtype, where
            return
        if rel.ciphertext is not None:  # views of the file's one shared map
            count, parts = -(-rel.ciphertext.stat().st_size // size), read_parts(rel.ciphertext, size)
            release = frames
        else:
            whole = memoryview(frames[1])
            count, parts = -(-len(whole) // size), (whole[i:i + size] for i in range(0, len(whole), size))
            release = self._msg(MsgType.RELEASE, rel.round, rel.layer, frames=(b"", frames[2]),
                                body={**header_of(frames[0])["body"], "parts": count}).to_frames()
        for i, part in enumerate(parts):
            yield [self._part_header(rel, i, count, part), part], MsgType.RELEASE_PART.value, where
        yield release, mtype, where

    def _part_header(self, rel: StoredRelease, i: int, count: int, part: memoryview) -> bytes:
        """The header of a release's part ``i`` (it hashes the part): made once for the parties that take the release
        at about the same pace, the last few kept."""
        key = (rel.round, rel.layer, rel.sha256, i)
        header = self.part_headers.get(key)
        if header is None:
            msg = self._msg(MsgType.RELEASE_PART, rel.round, rel.layer, frames=(part,), body={
                "attempt": rel.attempt, "part": i, "parts": count, "sha256": rel.sha256})
            header = self.part_headers[key] = bytes(msg.to_frames()[0])
            while len(self.part_headers) > PART_HEADERS_KEPT:
                del self.part_headers[next(iter(self.part_headers))]
        return header

    def _on_verdict(self, m: Inbound) -> None:
        """The solver refused the step's aggregate: exclude the parties it could not authenticate and collect
        again (nothing was opened), or end the step (it was opened and failed a check)."""
        msg, step, body = m.msg, _open_step(self), m.msg.body
        if msg.round != step.round or body["attempt"] != step.attempt or tuple(body["layers"]) != step.layers:
            raise ProtocolError(f"verdict for round {msg.round} attempt {body['attempt']} is not about this step")
        self._accept(m, body["reason"])
        unknown = set(body["exclude"]) - set(step.included)
        if body["opened"] or not body["exclude"] or unknown:
            step.refused = f"solver refused round {step.round} layers {list(step.layers)}: {body['reason']}"
        else:
            step.excluded = set(body["exclude"])

    def _on_ack(self, m: Inbound) -> None:
        """One row per (party, round, layer): an ACK is an answer to a release, and a release is sent once."""
        body, key = m.msg.body, (m.name, m.msg.round, m.msg.layer)
        if (m.msg.round, m.msg.layer) not in self.releases:  # else any pair gives a row (and a false refusal)
            raise ProtocolError(f"round {m.msg.round} layer {m.msg.layer} has no release to acknowledge")
        if key in self.acked:
            raise ProtocolError(f"round {m.msg.round} layer {m.msg.layer} was acknowledged already")
        self.acked.add(key)
        self._accept(m, "applied" if body["ok"] else f"party refused release: {body['reason']}")

    def _on_error(self, m: Inbound) -> None:
        reason = m.msg.body["reason"]
        if m.name == "solver":
            self._accept(m, reason)
            step = self.step
            if self.stage is Stage.SOLVING or (self.stage is Stage.COLLECTING and step is not None and step.handed):
                self.abort_reason = f"solver refused: {reason}"  # a streamed chunk's sum, or the hand-off
        elif self.guard.record_refusal(m.name, m.nbytes):  # a party's error reports share its row window
            self._accept(m, reason)


class QueryHandlers(CoordinatorState):
    """Handlers of ``Coordinator`` for a served release's queries: it relays each fixed-size encrypted query to the
    solver and each answer back, and records how the solver took it (party, counter, kind, cost, outcome, budget
    used): it reads neither (the channel's key is the party's and the solver's alone, protection/sealing.py)."""

    queries_used: dict[str, int]  # party -> budget used, as the solver's last answer said
    queries_done: set[str]  # parties that said they ask nothing more
    # party -> counter -> the connection its query came on (a party asks on a connection of its own, which sends no
    # HELLO and so is not its route: parties/queries.py), at most ASKED_KEPT per party, the oldest dropped
    asked: dict[str, OrderedDict[int, bytes]]

    def _on_query(self, m: Inbound) -> None:
        frames = m.msg.frames
        if m.msg.body["party"] or len(frames) != 1 or len(frames[0]) != QUERY_FRAME_BYTES:
            raise ProtocolError(f"a query carries one encrypted frame of {QUERY_FRAME_BYTES} bytes and no party name")
        asked = self.asked.setdefault(m.name, OrderedDict())
        asked[m.msg.body["counter"]] = m.route
        asked.move_to_end(m.msg.body["counter"])
        while len(asked) > ASKED_KEPT:
            asked.popitem(last=False)
        self._accept(m)
        self._send("solver", self._msg(MsgType.QUERY, body={"party": m.name, "counter": m.msg.body["counter"]},
                                       frames=(bytes(frames[0]),)))

    def _on_answer(self, m: Inbound) -> None:
        body = answer_of(m.msg)
        party = body["party"]
        if party not in self.cfg.roster.parties or body["accepted"] != (body["refusal"] == ""):
            raise ProtocolError(f"an answer for {party!r} must name a roster party, and a refusal exactly when "
                                "it is not accepted")
        if len(m.msg.frames) != (0 if body["refusal"] in UNANSWERED else 1) or any(
                len(f) != ANSWER_FRAME_BYTES for f in m.msg.frames):
            raise ProtocolError(f"an answer carries one encrypted frame of {ANSWER_FRAME_BYTES} bytes, or none when "
                                "the query could not be authenticated")
        self._accept(m, body["refusal"])
        self.ledger.query(self.s.id, party, body["counter"], body["kind"], body["cost"], body["accepted"],
                          body["refusal"], body["used"])
        self.queries_used[party] = body["used"]
        if body["accepted"] and body["kind"] == "done":
            self.queries_done.add(party)
        self.guard.grant_queries(party, 1)  # the answer frees a place in the party's window
        asked = self.asked.get(party, OrderedDict()).pop(body["counter"], None)
        if asked is not None and not self.conns.is_closed(party, asked):  # to the connection that asked
            self._post(party, asked, m.raw, m.msg.type.value, {"round_": m.msg.round})
        route = self.routes.get(party)
        if (asked is None or self.conns.is_closed(party, asked)) and route is not None and route != asked:
            self._post(party, route, m.raw, m.msg.type.value, {"round_": m.msg.round})  # else (or closed) its route


class TagHandlers(CoordinatorState):
    """Handlers of ``Coordinator`` for a round's keyed-tag exchange: it relays, checks shapes and signatures it can
    check, and keeps the round's public decision records in the ledger. It reads nothing: blinded elements,
    sealed boxes and signatures only."""

    def _tag_check(self, m: Inbound, frames: int) -> TagPhase:
        phase = self.phase
        if phase is None or m.msg.round != phase.round:
            raise ProtocolError(f"no tag exchange open for round {m.msg.round}")
        check_tag_body(m.msg, self.s.tag_slots, set(self.cfg.roster.parties))
        if len(m.msg.frames) != frames:
            raise ProtocolError(f"{m.msg.type.value} carries {frames} frames")
        return phase

    def _on_blinded(self, m: Inbound) -> None:
        phase = self._tag_check(m, 3)
        batch, sealed, signature = (bytes(f) for f in m.msg.frames)
        if m.msg.body["party"] or m.name not in phase.expected:
            raise ProtocolError(f"blinded tags from {m.name}, who is not in round {phase.round}'s exchange")
        if len(batch) != self.s.tag_slots * wire.ELEMENT_BYTES or len(sealed) != SEALED_OVERHEAD + 4:
            raise ProtocolError("blinded tags have the wrong size")
        self._verify_party(m.name, signature, statements.blinded_statement(self.s.id, self.cfg.digest, phase.round,
                                                                     m.name, batch, sealed))
        self._accept(m)
        phase.blinded.add(m.name)
        self._to_solver(phase, self._msg(MsgType.BLINDED, phase.round, body={"party": m.name,
                                                                            "slots": self.s.tag_slots},
                                         frames=(batch, sealed, signature)))

    def _on_tags(self, m: Inbound) -> None:
        phase = self._tag_check(m, 2)
        sealed, signature = (bytes(f) for f in m.msg.frames)
        if m.msg.body["party"] or m.name not in phase.blinded:
            raise ProtocolError(f"tags from {m.name} before its blinded batch")
        if len(sealed) != SEALED_OVERHEAD + wire.tags_plain_size(self.s.tag_slots):
            raise ProtocolError("sealed tags have the wrong size")
        self._verify_party(m.name, signature, statements.tags_statement(self.s.id, self.cfg.digest, phase.round, m.name,
                                                                  sealed))
        self._accept(m)
        phase.tagged.add(m.name)
        self._to_solver(phase, self._msg(MsgType.TAGS, phase.round, body={"party": m.name,
                                                                         "slots": self.s.tag_slots},
                                         frames=(sealed, signature)))

    def _to_solver(self, phase: TagPhase, msg: Message) -> None:
        phase.forwarded.append(msg)
        self._send("solver", msg)

    def _on_evaluated(self, m: Inbound) -> None:
        phase = self._tag_check(m, 2)
        party = m.msg.body["party"]
        if party not in phase.blinded:
            raise ProtocolError(f"an evaluation for {party!r}, who sent no blinded tags")
        self._accept(m)
        self._relay(party, m)

    def _on_decision(self, m: Inbound) -> None:
        phase = self._tag_check(m, 2)
        party = m.msg.body["party"]
        if phase.decide is None or party not in phase.decide:
            raise ProtocolError(f"a decision for {party!r}, who is not among the parties to decide over")
        self._accept(m)
        if not phase.logged:  # the public part, by decision id only: the same list for every party
            for did, kind in m.msg.body["records"]:
                self.ledger.decision(self.s.id, phase.round, did, kind)
            phase.logged = True
        phase.decided.add(party)
        self.decisions[party] = (phase.round, m.raw)  # sent again if the party is welcomed again this round
        self._relay(party, m)

    def _verify_party(self, party: str, signature: bytes, statement: bytes) -> None:
        try:
            self.verify_keys[party].verify(signature, statement)
        except InvalidSignature:
            raise ProtocolError(f"{party}: signature does not verify") from None
