"""The coordinator: a CurveZMQ ROUTER that admits roster keys only, adds protected chunks into running
sums without reading them, hands aggregates to the solver and relays its signed releases to the parties.

Every inbound message is logged to the ledger as accepted or refused (with the reason, which is also sent
back to the sender in an ERROR message); a refused message never stops the session. A restarted
coordinator resumes from the ledger: released steps are skipped (their releases re-sent to rejoining
parties whose HELLO does not list them) and the interrupted step is collected again under a new attempt
number. What a peer may cost the loop (budgets, refusal rows, welcomes, handshakes) is in ``guard.py``;
sends never block: a peer whose queue is full loses that message, recorded in the ledger.

In a served release (``session.release = "served"``) the solver keeps ΔW and sends notices instead of
releases; after the last step the coordinator relays the parties' encrypted queries and the solver's answers
(SERVING) until every party is done or has spent its budget, or ``serve_timeout_s`` passes, then ends the session.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import mmap
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from coordinator.connections import MAX_CONNECTIONS, Connections
from coordinator.guard import QUERY_WINDOW, ConnectLimiter, PeerGuard
from coordinator.handlers import Handlers, Inbound, QueryHandlers, TagHandlers
from coordinator.memory import Footprint, footprint
from coordinator.outbox import POLL_S, Outbox, Outgoing
from coordinator.stages import ACCEPTS, ROLE_OF, Key, Stage, Step, TagPhase
from coordinator.watching import WaitWatch, waiting_for
from secure_collab.config import STATISTICS, Config
from secure_collab.editing.accounting import session_epsilon
from secure_collab.editing.defences import parse_defence
from secure_collab.keys import CurveKeyPair, load_curve_pair
from secure_collab.ledger import Ledger, PartSink, StoredRelease, drop_pages
from secure_collab.protection import Payload, ProtectionError, PublicScheme
from secure_collab.protection.statements import setup_bytes
from secure_collab.protocol import transport
from secure_collab.protocol.messages import (
    STORED_TEXT,
    AggregateBody,
    Frame,
    Message,
    MsgType,
    ProtocolError,
    Sequencer,
    build,
    clean_text,
    sha256_hex,
)
from secure_collab.protocol.release import check_release, part_bytes, verify
from secure_collab.protocol.statistics import chunk_body, chunk_bounds, window_chunks

ZAP_DOMAIN = "secure-collab"
SETTLE_HEARTBEATS = 3  # the longest END waits for the last releases' acknowledgements (``Coordinator._settle``)
log = logging.getLogger("coordinator")


class Solved(enum.Enum):
    """How a step's hand-off to the solver ended."""

    RELEASED = "released"  # every layer of the step was released (perhaps re-sent after a restart)
    RECOLLECT = "recollect"  # the solver named parties it could not authenticate, or lost its hand-off; nothing opened
    FAILED = "failed"  # refused after opening, timed out or stopped: ``abort_reason`` says why


@dataclass
class Outcome:
    ok: bool
    reason: str
    releases: dict[tuple[int, int], str] = field(default_factory=dict)  # (round, layer) -> sha256 of ΔW
    included: dict[tuple[int, tuple[int, ...]], tuple[str, ...]] = field(default_factory=dict)


class _RosterKeys:
    """ZAP credentials provider: admit a CURVE client only if its public key is in the roster, is not cut
    off, and has not opened more than its share of connections (``network.connects_per_minute``)."""

    def __init__(self, allowed: frozenset[bytes], limiter: ConnectLimiter) -> None:
        self.allowed, self.limiter = allowed, limiter

    def callback(self, domain: str, key: bytes) -> bool:
        return domain == ZAP_DOMAIN and key in self.allowed and self.limiter.admit(key)


REPAIR_SKIPPED = ("session complete: every edit round was released; the decoys' repair round was not, so some decoy "
                  "answers may stay changed")


class Coordinator(Handlers, TagHandlers, QueryHandlers):
    def __init__(self, config: Config, scheme: PublicScheme, *, ctx: zmq.SyncContext | None = None,
                 keys: CurveKeyPair | None = None, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = config
        self.s = config.session
        self.scheme = scheme
        self.keys = keys or load_curve_pair(config.paths.keys / "coordinator.key_secret")
        self.stop = stop or threading.Event()
        self.clock = clock
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.limits = transport.limits_for(config.network)
        self.seq = Sequencer()
        # each peer's connections; its route (where its messages go) and what its route's HELLO says it holds
        self.conns = Connections()
        self.routes, self.holdings = self.conns.routes, self.conns.holdings
        self.fallen: set[str] = set()  # parties whose route fell back to an earlier connection: welcome it again
        self.end: Message | None = None  # END, once the session ended (a connection the route falls back to gets it)
        self.public: bytes | None = None
        self.bundles = b""
        self.public_sig = b""
        self.verify_keys = config.roster.party_verify_keys()
        self.releases: dict[tuple[int, int], StoredRelease] = {}
        # release frames handed to zmq as views of a release file's map (None: of an old ledger's inline bytes), until
        # libzmq has encrypted them: each map's pages are dropped from this process once a frame of it is
        # (``_drop_sent_pages``); at most ``outbox.IN_FLIGHT`` per party connection (its ``Outbox``)
        self.sending: list[tuple[zmq.MessageTracker, mmap.mmap | None]] = []
        self.outboxes: dict[str, Outbox] = {}  # party -> what its connection still has to get, paced
        self.part_headers: dict[tuple[int, int, str, int], bytes] = {}
        self.incoming: dict[tuple[int, int], PartSink] = {}
        self.active: set[str] = set()
        self.step: Step | None = None
        self.phase: TagPhase | None = None  # the open keyed-tag exchange, if any
        self.stage = Stage.JOINING
        self.abort_reason = ""
        self.outcome = Outcome(False, "")
        self.acked: set[tuple[str, int, int]] = set()  # (party, round, layer) releases acknowledged
        self.queries_used: dict[str, int] = {}  # served release: party -> budget used, as the solver answered
        self.queries_done: set[str] = set()
        self.asked: dict[str, OrderedDict[int, bytes]] = {}
        self.decisions: dict[str, tuple[int, list[bytes]]] = {}
        self.step_pairs = frozenset((r, lay) for r, layers in self.s.steps() for lay in layers)
        self.guard = PeerGuard(config, clock)
        self.handlers: dict[MsgType, Callable[[Inbound], None]] = {
            MsgType.HELLO: self._on_hello, MsgType.CONTRIB: self._on_contrib,
            MsgType.RELEASE: self._on_release, MsgType.RELEASE_PART: self._on_release_part,
            MsgType.VERDICT: self._on_verdict, MsgType.ACK: self._on_ack,
            MsgType.ERROR: self._on_error, MsgType.BLINDED: self._on_blinded, MsgType.TAGS: self._on_tags,
            MsgType.EVALUATED: self._on_evaluated, MsgType.DECISION: self._on_decision,
            MsgType.NOTICE: self._on_release, MsgType.QUERY: self._on_query, MsgType.ANSWER: self._on_answer,
        }

    # ---- life cycle -------------------------------------------------------------------------------
    def run(self) -> Outcome:
        with contextlib.ExitStack() as stack:  # closed in reverse order, whatever fails
            if self._own_ctx:
                stack.callback(self.ctx.term)
            self.ledger = stack.enter_context(Ledger(self.cfg.paths.ledger))
            auth = ThreadAuthenticator(self.ctx)
            auth.start()
            stack.callback(auth.stop)
            auth.configure_curve_callback(ZAP_DOMAIN, _RosterKeys(self.cfg.roster.allowed_keys(),
                                                                  self.guard.connects))
            self.sock = transport.router(self.ctx, self.keys, self.cfg.network, sndhwm=self._sndhwm())
            stack.callback(self._close_socket)
            self.watching = WaitWatch(self.sock, self.cfg.network.wait_log_s, self.clock)
            stack.callback(self.watching.close)
            log.info("listening on %s: session %s, %s, %d parties in the roster (%s), min_parties %d",
                     self.cfg.network.coordinator_bind, self.s.id, self.s.mode, len(self.cfg.roster.parties),
                     ", ".join(sorted(self.cfg.roster.parties)), self.s.min_parties)
            return self._session()
        raise AssertionError("unreachable")

    def _session(self) -> Outcome:
        resume = self.ledger.resume_state(self.s.id)
        attempts: dict[tuple[int, str], int] = {}
        if resume is not None:
            if resume.ended:
                return Outcome(resume.ended == "done", f"session already {resume.ended}")
            self.public, self.bundles = resume.setup_public, resume.setup_bundles
            self.public_sig = resume.setup_signature
            self.releases, attempts = dict(resume.releases), resume.attempts
            for name in resume.cut_off:  # cut off before the restart: still out (no second ledger row)
                if name in self.cfg.roster.parties:
                    self.guard.cut(name)
        if not self._join():
            return self._end(False, self.abort_reason or "not enough parties joined before the deadline")
        tagged: set[int] = set()
        for round_, layers in self.s.steps():
            if all((round_, lay) in self.releases for lay in layers):
                continue
            if self.s.tags and round_ not in tagged and round_ != self.s.repair_round:  # the round opens with its
                # keyed-tag exchange (the decoys' repair round has no requests to tag)
                tagged.add(round_)
                if not self._run_tags(round_):
                    return self._end(False, self.abort_reason)
            attempt = attempts.get((round_, json.dumps(list(layers))), -1) + 1
            if not self._run_step(round_, layers, attempt):
                if round_ == self.s.repair_round:  # every edit round is released and applied: the repair is a
                    # nicety, so one party's refusal must not take the joint edit from the others
                    return self._end(True, f"{REPAIR_SKIPPED} ({self.abort_reason})")
                return self._end(False, self.abort_reason)
        if self.s.served:
            return self._end(True, self._serve())
        self._settle()
        return self._end(True, "session complete")

    def _settle(self) -> None:
        """Before END, for at most ``SETTLE_HEARTBEATS`` heartbeats: until every party that joined (not cut off) has
        acknowledged every release or said in its HELLO that it holds it (``_awaited``). A release gone to a
        connection that closed is sent again to the party's earlier connection (``_welcome_fallen``), and the
        party's acknowledgements take a moment. Without this, END could follow at once and the party end short of a
        release. A party that left or never reads costs the session's end those heartbeats, once."""
        deadline = self.clock() + SETTLE_HEARTBEATS * self.cfg.network.heartbeat_s
        while self.clock() < deadline:
            if not self._awaited():
                return
            if not self._pump(deadline):
                return

    def _awaited(self) -> list[str]:
        """The parties ``_settle`` waits for: every party that joined and is not cut off, with a route or not (one
        whose connection closed is owed what it lacks until its next connection's HELLO is welcomed), that has
        neither acknowledged nor said it holds every release."""
        return sorted(name for name in self.holdings if name in self.cfg.roster.parties
                      and name not in self.guard.cut_off and self._owed(name))

    def _owed(self, name: str) -> bool:
        held = self.holdings.get(name, (False, frozenset()))[1]
        return any((name, r, lay) not in self.acked and (r, lay) not in held for r, lay in self.releases)

    def _serve(self) -> str:
        """A served release, once every step is released: relay queries and answers until every party that can
        still ask has said it is done or spent its budget, or ``serve_timeout_s`` passes. Returns END's reason."""
        if self.step is not None:
            self.step.move(Stage.DONE)
        self.stage = Stage.SERVING
        budget, timeout = self.s.query_budget, self.cfg.network.serve_timeout_s
        self.ledger.stage_event(self.s.id, -1, (), -1, "serving",
                                json.dumps({"query_budget": budget, "deadline": time.time() + timeout}))
        for name in self.cfg.roster.parties:
            self.guard.grant_queries(name, QUERY_WINDOW)
        log.info("every step is released to the served model: relaying queries (budget %d forward passes per party) "
                 "for at most %.0f s", budget, timeout)
        deadline = self.clock() + timeout
        stopped = ""
        while self._querying() and self.clock() < deadline:
            if not self._pump(deadline):
                stopped, self.abort_reason = self.abort_reason, ""
                break
        used = ", ".join(f"{n} {self.queries_used.get(n, 0)}" for n in sorted(self.cfg.roster.parties))
        why = (f"serving stopped: {stopped}" if stopped else "every party is done" if not self._querying()
               else "the serve timeout passed")
        return f"session complete; served (forward passes used of {budget}: {used}); {why}"

    def _querying(self) -> frozenset[str]:
        """The parties that may still ask the served model something."""
        return frozenset(n for n in self.cfg.roster.parties if n not in self.guard.cut_off
                         and n not in self.queries_done and self.queries_used.get(n, 0) < self.s.query_budget)

    def _end(self, ok: bool, reason: str) -> Outcome:
        reason = clean_text(reason, STORED_TEXT)  # may quote the solver; END carries it to every party
        self._summarise()
        for sink in self.incoming.values():  # parts of a release that never came: their temporary file goes
            sink.discard()
        self.incoming.clear()
        for name, dropped in sorted(self.guard.cut_off.items()):
            if dropped.messages:
                self.ledger.message(self.s.id, "in", name, "?", "", dropped.nbytes, "dropped",
                                    f"{dropped.messages} messages dropped unread after the cut-off")
        self.stage = Stage.DONE if ok else Stage.ABORTED
        if self.step is not None and self.step.stage not in (Stage.DONE, Stage.ABORTED):
            self.step.move(self.stage)
        self.ledger.stage_event(self.s.id, -1, (), -1, "done" if ok else "aborted", reason)
        self.end = end = self._msg(MsgType.END, body={"ok": ok, "reason": reason})
        for name in sorted(self.conns.peers()):  # (a party whose route closed: its open connections, if any)
            self._send_end(name, end)
        (log.info if ok else log.error)("session %s %s: %s; told %s", self.s.id, "done" if ok else "ABORTED",
                                        reason, ", ".join(sorted(self.routes)) or "nobody (no peer connected)")
        self.outcome.ok, self.outcome.reason = ok, reason
        self.outcome.releases = {k: r.sha256 for k, r in self.releases.items()}
        return self.outcome

    def _send_end(self, name: str, end: Message) -> None:
        """END to the peer's route (if that connection turns out closed, to the one its route falls back to, after what
        that one lacks), and to its other kept connections not known closed (``Connections.others``: one that has not
        said HELLO yet, a DEALER that reconnected on its own, hears it too). A closed connection's copy fails at once
        (not recorded: the party's END row is the route's); END says only what every party is told."""
        for _ in range(MAX_CONNECTIONS + 1):
            while name in self.fallen and name in self.routes:  # the route fell back: what that connection lacks
                self.fallen.discard(name)  # first (its welcome may find it closed too, and fall back again)
                self._welcome_again(name)
            route = self.routes.get(name)
            if route is None:
                break
            self._send_route(name, route, end)
            if self.routes.get(name) == route and name not in self.fallen:  # sent, or queued behind what it lacks
                break
        self.fallen.discard(name)
        frames = end.to_frames()
        for route in self.conns.others(name):
            try:
                self.sock.send_multipart([route, *frames], flags=zmq.DONTWAIT, copy=False)
            except zmq.ZMQError:
                pass

    def _adopt(self, m: Inbound) -> None:
        """A HELLO of a connection not welcomed before was welcomed: it is the peer's route now (``connections.py``)."""
        if self.conns.adopt(m.name, m.conn) is not None:
            self._drop_outbox(m.name, "a new connection of the party replaced it")

    def _connection_closed(self, name: str, route: bytes, reason: str) -> None:
        """``route`` is closed (a send to it failed: Host unreachable; or another peer uses its id now). What was queued
        for it or asked on it goes nowhere else; a peer's route falls back to its most recently welcomed connection
        still open, which is welcomed again (``_welcome_fallen``)."""
        box = self.outboxes.get(name)
        if box is not None and box.route == route:
            self._drop_outbox(name, reason)
        asked = self.asked.get(name, OrderedDict())
        for counter in [c for c, r in asked.items() if r == route]:
            del asked[counter]  # (its ANSWER goes to the party's route)
        was_route = self.routes.get(name) == route
        back = self.conns.closed(name, route)
        if back is not None:
            self.fallen.add(name)
            log.info("%s's connection closed; its earlier connection is its route again and gets what it lacks", name)
        elif was_route:
            log.info("%s's connection closed; nothing goes to it until it connects again", name)

    def _welcome_fallen(self) -> None:
        """Welcome again each party whose route fell back to an earlier connection (``_connection_closed``): what was
        sent to the closed one is sent there, as to a rejoining party, and END if the session has ended. A party gets
        at most one such welcome per connection of it that was welcomed (and so rate-limited) and then closed."""
        while self.fallen:
            name = self.fallen.pop()
            if self.end is not None and name != "solver":
                self.fallen.add(name)
                self._send_end(name, self.end)  # the fall-back connection's welcome first, then END
            else:
                self._welcome_again(name)

    def _welcome_again(self, name: str) -> None:
        """The peer's route fell back to an earlier connection: send it what it lacks (the solver: the step's sums
        and the tag exchange's messages again)."""
        if name not in self.routes or self.public is None:
            return
        if name == "solver":
            self._solver_back()
        else:
            self._welcome(name)

    # ---- phases -----------------------------------------------------------------------------------
    def _join(self) -> bool:
        deadline = self.clock() + self.cfg.network.join_timeout_s
        parties = set(self.cfg.roster.parties)
        # the join deadline in wall time, for `secure-collab status` (the ledger records no other start), and the
        # session's release defences with the (ε, δ) of its noise (ε null without noise; public arithmetic on the
        # session file), its release policy and its editing backend (MALMEN: the pinned hypernetwork), so the ledger
        # says what the session used (`secure-collab ledger show`)
        defence = parse_defence(self.s.defence)
        dp = session_epsilon(defence, self.cfg)
        self.ledger.stage_event(self.s.id, -1, (), -1, "joining",
                                json.dumps({"deadline": time.time() + self.cfg.network.join_timeout_s,
                                            "defence": defence.spec(),
                                            # decoys:R: each party's N counts 1 + R edits per real one
                                            "edits_counted_per_request": defence.edit_factor,
                                            "epsilon": None if dp is None else dp.session,
                                            "epsilon_per_release": None if dp is None else dp.per_release,
                                            "delta": None if dp is None else dp.delta,
                                            "release": self.s.release,
                                            "query_budget": self.s.query_budget if self.s.served else None,
                                            "backend": self.s.backend,
                                            "hypernet_digest": self.s.hypernet_digest or None}))

        def solver_ready() -> bool:  # after a restart the public params come from the ledger: wait anyway
            return self.public is not None and "solver" in self.routes

        shown = None
        while not (solver_ready() and self.active >= parties - set(self.guard.cut_off)) and self.clock() < deadline:
            now = (len(self.active), solver_ready())
            if now != shown:  # at start and after each join; in between, WaitWatch's line every wait_log_s
                shown = now
                missing = sorted(parties - self.active - set(self.guard.cut_off))
                missing += [] if solver_ready() else ["solver"]
                log.info("waiting for %s (%d of %d parties joined, %d needed; %.0f s left)",
                         ", ".join(missing), len(self.active), len(parties), self.s.min_parties,
                         deadline - self.clock())
            if not self._pump(deadline):
                return False
        if not solver_ready():
            self.abort_reason = "the solver did not connect before the join deadline"
        return solver_ready() and len(self.active) >= self.s.min_parties

    def _run_step(self, round_: int, layers: tuple[int, ...], attempt: int) -> bool:
        while True:
            if not self._drain_solver_queue(self.step):
                return False
            step = Step(round_, layers, attempt, frozenset(self.active))
            self.step, self.stage = step, Stage.COLLECTING
            self._summarise()
            window = self._window(step)
            if window < 1:
                return False
            step.open_window(self.s, window)
            self.ledger.stage_event(self.s.id, round_, layers, attempt, "open",
                                    json.dumps(sorted(self.active)))
            est = self._footprint(step)
            log.info("round %d layer%s %s: collecting statistics from %s (a window of %d of its %d chunks; this "
                     "process holds at most about %d MiB: itself %d, sums %d, messages in %d, release parts out %d)",
                     round_, "s" * (len(layers) > 1), ",".join(map(str, layers)), ", ".join(sorted(self.active)),
                     step.window, len(step.order), est.total >> 20, est.fixed >> 20, est.sums >> 20,
                     est.inbound >> 20, est.release >> 20)
            if not self._collect(step):
                return False
            if step.stale:  # the solver lost the sums handed to it: nothing was opened, collect them again
                self.ledger.stage_event(self.s.id, round_, layers, attempt, "restart",
                                        "the solver rejoined after chunks were handed to it")
                attempt += 1
                step.move(Stage.COLLECTING)
                continue
            complete, partial = step.complete(self.s), step.partial(self.s)
            # a party that stopped mid-stream holds the others at the window's edge: keep those that kept up
            keep = complete or step.kept_up(self.clock(), self._grace(), set(self.guard.cut_off))
            left_out = sorted(step.expected - set(keep))
            if len(keep) < self.s.min_parties:
                self.abort_reason = (f"round {round_} layers {list(layers)}: {len(complete)} complete "
                                     f"contributions < min_parties {self.s.min_parties} (missing {left_out})")
                return False
            self.active = set(keep)  # a party that dropped out is left out from now on
            if partial:
                self.ledger.stage_event(self.s.id, round_, layers, attempt, "restart",
                                        f"partial contributions from {partial}")
            else:
                outcome = self._solve(step, left_out)
                if outcome is not Solved.RECOLLECT:
                    return outcome is Solved.RELEASED
                # the solver named parties it could not authenticate, or rejoined having lost what it was handed;
                # nothing was opened: go on without the parties it named
                self.active -= step.excluded
                self.ledger.stage_event(self.s.id, round_, layers, attempt, "restart",
                                        f"solver excluded {sorted(step.excluded)}" if step.excluded
                                        else "the solver rejoined after chunks were handed to it")
                if len(self.active) < self.s.min_parties:
                    self.abort_reason = (f"round {round_} layers {list(layers)}: {len(self.active)} parties left "
                                         f"after the solver excluded {sorted(step.excluded)} < min_parties "
                                         f"{self.s.min_parties}")
                    return False
            attempt += 1
            step.move(Stage.COLLECTING)

    def _run_tags(self, round_: int) -> bool:
        """The round's keyed-tag exchange: every active party blinds, the solver evaluates, the parties send
        their tags, the solver decides over those who did and each party gets its signed decision. Parties
        that do not finish within ``stage_timeout_s`` are left out of the round. False when it aborts."""
        phase = TagPhase(round_, frozenset(self.active))
        self.step, self.phase, self.stage = None, phase, Stage.TAGGING
        self.ledger.stage_event(self.s.id, round_, (), 0, "tags", json.dumps(sorted(phase.expected)))
        for name in sorted(phase.expected):
            self.guard.grant_tags(name, round_)
            self._send(name, self._msg(MsgType.TAG_OPEN, round_, body={"attempt": 0}))
        deadline = self.clock() + self.cfg.network.stage_timeout_s
        while phase.decide is None and phase.tagged < phase.expected and self.clock() < deadline:
            if not self._pump(deadline):
                return False
        if len(phase.tagged) < self.s.min_parties:
            self.abort_reason = (f"round {round_}: tags from {sorted(phase.tagged)} only, fewer than min_parties "
                                 f"{self.s.min_parties}")
            return False
        phase.decide = tuple(sorted(phase.tagged))
        self._to_solver(phase, self._msg(MsgType.DECIDE, round_, body={"parties": list(phase.decide)}))
        deadline = self.clock() + self.cfg.network.solve_timeout_s
        while phase.decided < set(phase.decide) and self.clock() < deadline:
            if not self._pump(deadline):
                return False
        if len(phase.decided) < self.s.min_parties:
            self.abort_reason = f"round {round_}: the solver decided for {sorted(phase.decided)} only"
            return False
        self.active = set(phase.decided)
        self.phase = None
        return True

    def _window(self, step: Step) -> int:
        """How many chunks' running sums fit ``network.coordinator_memory_bytes`` (the largest chunk's, over the
        step's parties); below one the session ends with the reason."""
        assert self.public is not None, "steps open after the solver's setup is in"
        bound, parties = self.cfg.network.coordinator_memory_bytes, len(step.expected)
        window, largest = window_chunks(self.scheme, self.public, self.s.chunk_values,
                                        (self.s.n_values(st) for st in STATISTICS), parties, bound)
        if window < 1:
            self.abort_reason = (f"network.coordinator_memory_bytes = {bound} holds no chunk's running sum ({largest} "
                                 f"bytes: {self.s.chunk_values} values over {parties} parties in {self.s.mode}); raise "
                                 "it or lower session.chunk_values")
        return window

    def _footprint(self, step: Step) -> Footprint:
        """What this process holds at most while ``step`` is collected (``coordinator/memory.py``)."""
        assert self.public is not None, "steps open after the solver's setup is in"
        largest = max(self.scheme.sum_bytes_bound(self.public, min(self.s.chunk_values, self.s.n_values(st)), 1)
                      for st in STATISTICS)  # one party's chunk, as a CONTRIB carries it
        net = self.cfg.network
        return footprint(self.cfg.network.coordinator_memory_bytes, len(step.expected), transport.router_rcvhwm(net),
                         largest, part_bytes(net.max_message_bytes))

    def _collect(self, step: Step) -> bool:
        """Request the step's statistics from every expected party at once, or one party at a time
        (``network.request_in_turn``: parties sharing a machine's cores then do not slow each other
        down, when the whole step fits the coordinator's window: each chunk's sum needs every party's chunk);
        each wait is bounded by ``stage_timeout_s``. False when the session aborts."""
        timeout = self.cfg.network.stage_timeout_s
        in_turn = self.cfg.network.request_in_turn and step.window >= len(step.order)
        if self.cfg.network.request_in_turn and not in_turn:
            log.info("round %d: the step's %d chunks exceed the coordinator's window of %d "
                     "(network.coordinator_memory_bytes): every party is asked at once, not in turn", step.round,
                     len(step.order), step.window)
        turns = [[n] for n in sorted(step.expected)] if in_turn else [sorted(step.expected)]
        for turn in turns:
            step.requested.update(turn)
            for name in turn:
                self.guard.grant_step(name, step.round, step.layers, step.attempt)
                self._send(name, self._request(step))
                step.granted_to(name, self.clock())
            step.announced = step.granted
            # each larger grant moves the deadline on (``_forward``), up to twice the stage timeout
            step.deadline, step.cap = self.clock() + timeout, self.clock() + 2 * timeout
            while (not set(turn) - set(self.guard.cut_off) <= set(step.complete(self.s))
                   and not step.stale and not step.stalled(set(self.guard.cut_off))
                   and self.clock() < self._wait_until(step)):
                if not self._pump(self._wait_until(step)):
                    return False
            if self._solver_stuck(step):
                return False
        return True

    def _wait_until(self, step: Step) -> float:
        """The collection's deadline: the parties' (``Step.deadline``), or while sums wait for the solver to take them
        (they hold the window, so the parties cannot be behind) ``stage_timeout_s`` after it last took one."""
        if step.unsent:
            return max(step.deadline, step.solver_seen + self.cfg.network.stage_timeout_s)
        return step.deadline

    def _solver_stuck(self, step: Step) -> bool:
        """True, with the abort reason, when sums handed to the solver have waited ``stage_timeout_s`` without libzmq
        taking any: the solver stopped reading. Neither the parties' fault nor a reason to collect them again (the
        sums would only queue behind the ones waiting)."""
        timeout = self.cfg.network.stage_timeout_s
        if step.unsent and self.clock() >= step.solver_seen + timeout:
            self.abort_reason = (f"round {step.round} layers {list(step.layers)}: the solver took none of the "
                                 f"{len(step.unsent)} chunk sums handed to it for {timeout:g} s "
                                 "(network.stage_timeout_s)")
            return True
        return False

    def _drain_solver_queue(self, step: Step | None) -> bool:
        """Before a new attempt, wait until libzmq has taken the sums an earlier attempt handed to the solver (they
        are still in this process), so attempts do not stack windows in its queue. False when the solver is stuck."""
        if step is None or not step.unsent:
            return True
        while step.unsent and self.clock() < step.solver_seen + self.cfg.network.stage_timeout_s:
            if not self._pump(step.solver_seen + self.cfg.network.stage_timeout_s):  # it notes what was taken
                return False
        return not self._solver_stuck(step)

    def _grace(self) -> float:
        """How long a party has to send the chunks of a grant before, at the stage timeout, missing them leaves it
        out (and how far a new grant moves the deadline)."""
        return self.cfg.network.stage_timeout_s / 2

    def _forward(self, step: Step, key: Key) -> None:
        """Every party of the step is in ``key``'s sum: hand it to the solver now, drop it, and grant the parties
        the chunks the freed room holds (a REQUEST with the new ``upto``, once half a window is free)."""
        step.included = tuple(sorted(step.expected))
        step.handed_off(key, self._hand_off(step, key), self.clock())
        self._regrant(step)

    def _regrant(self, step: Step) -> None:
        """Grant the parties the chunks the window's freed room holds: a REQUEST with the new ``upto``, once half a
        window is free (or the last chunk is granted)."""
        if step.granted > step.announced and (step.granted - step.announced >= max(1, step.window // 2)
                                              or step.granted == len(step.order)):
            step.announced = step.granted
            for name in sorted(step.requested - set(self.guard.cut_off)):
                self._send(name, self._request(step))
                step.granted_to(name, self.clock())
            step.extend(self.clock(), self._grace())

    def _solve(self, step: Step, left_out: list[str]) -> Solved:
        """Hand the aggregate off and wait for the solver's releases or verdict."""
        step.included = tuple(sorted(step.expected & self.active))
        assert not step.handed or set(step.included) == step.expected, "a streamed step lost a party: collect again"
        step.move(Stage.SOLVING)
        self.stage = Stage.SOLVING
        self.outcome.included[(step.round, step.layers)] = step.included
        detail = json.dumps({"included": list(step.included), "left_out": left_out, "window_chunks": step.window,
                             "memory_bound": self.cfg.network.coordinator_memory_bytes,
                             "peak_held_bytes": step.peak_held_bytes})
        log.info("round %d layers %s: handing the sum over %s to the solver%s", step.round,
                 ",".join(map(str, step.layers)), ", ".join(step.included),
                 f" (left out: {', '.join(left_out)})" if left_out else "")
        self.ledger.stage_event(self.s.id, step.round, step.layers, step.attempt, "handoff", detail)
        for key in sorted(step.all_keys(self.s) - step.handed):  # streamed already, unless a party was left out
            step.handed_off(key, self._hand_off(step, key), self.clock())
        deadline = self.clock() + self.cfg.network.solve_timeout_s
        while (len(step.released) < len(step.layers) and not step.excluded and not step.refused and not step.stale
               and self.clock() < deadline):
            if not self._pump(deadline):
                return Solved.FAILED
        if len(step.released) == len(step.layers):  # released (perhaps re-sent after a restart)
            self.ledger.stage_event(self.s.id, step.round, step.layers, step.attempt, "released")
            return Solved.RELEASED
        if step.stale:
            return Solved.RECOLLECT
        if step.refused:
            self.abort_reason = step.refused
            return Solved.FAILED
        if step.excluded:
            return Solved.RECOLLECT
        # released is keyed by the step's layers, so fewer than all of them: the solve timed out
        self.abort_reason = f"solver released nothing for round {step.round} layers {list(step.layers)}"
        return Solved.FAILED

    def _aggregate(self, step: Step, key: tuple[int, str, int]) -> Payload:
        """The running sum of one chunk, as handed to the solver."""
        acc = step.accs[key]
        assert set(acc.parties) == set(step.included), "a partial party reached a hand-off"
        return acc.aggregate()

    def _hand_off(self, step: Step, key: tuple[int, str, int]) -> list[zmq.MessageTracker]:
        """Send the solver ``key``'s sum; returns the trackers of its frames (done once libzmq has taken them)."""
        layer, stat, chunk = key
        agg = self._aggregate(step, key)
        n_values = self.s.n_values(stat)
        body: AggregateBody = {**chunk_body(step.attempt, chunk, chunk_bounds(n_values, self.s.chunk_values),
                                            agg.header),
                               "parties": list(agg.header["parties"]), "n_values": n_values}
        msg = self._msg(MsgType.AGGREGATE, step.round, layer, stat, body, agg.frames)
        route = self.routes.get("solver")
        trackers: list[zmq.MessageTracker] = []
        if route is None:
            self._send("solver", msg)  # recorded unsent; the solver's rejoin makes the step be collected again
        else:
            trackers = self._send_frames("solver", route, msg.to_frames(), msg.type.value, self._where(msg), track=True)
        self.ledger.handoff(self.s.id, step.round, layer, stat, chunk, step.attempt, step.included,
                            sha256_hex(msg.to_frames()[0]), agg.nbytes)
        return trackers

    # ---- receiving ----------------------------------------------------------------------------------
    def _pump(self, deadline: float) -> bool:
        """Handle at most one message, waiting until the deadline or a heartbeat; False when aborting."""
        if self.stop.is_set():
            self.abort_reason = "the coordinator was stopped by its operator"
            return False
        self.watching.tick(waiting_for(self.s, self.stage, self.step, self.phase, set(self.cfg.roster.parties),
                                       self.active, set(self.guard.cut_off),
                                       self.public is not None and "solver" in self.routes,
                                       self._querying() if self.stage is Stage.SERVING else frozenset()), deadline)
        if self.sock.poll(int(max(0.0, min(deadline - self.clock(), self._wait_s())) * 1000), zmq.POLLIN):
            self._receive()
        self._drop_sent_pages()
        self._welcome_fallen()
        step = self.step
        if step is not None and step.unsent and step.taken(self.clock()) and step.stage is Stage.COLLECTING:
            self._regrant(step)
        return not self.abort_reason

    def _wait_s(self) -> float:
        """How long the loop may wait for a message: a heartbeat, or while release frames are with libzmq about as long
        as it last took one (``POLL_S`` while they are being taken, backing off to the heartbeat while none is: a peer
        that does not read keeps no busy loop)."""
        heartbeat = self.cfg.network.heartbeat_s
        if self.step is not None and self.step.unsent:  # sums with libzmq for the solver: look again soon, backing
            # off while it takes none (as for the parties' release parts)
            return min(heartbeat, max(POLL_S, self.clock() - self.step.solver_seen))
        if not self.outboxes:
            return heartbeat
        since = max(box.since for box in self.outboxes.values())
        return min(heartbeat, max(POLL_S, self.clock() - since))

    def _sndhwm(self) -> int:
        """Messages the ROUTER queues per peer: ``network.hwm``, for every connection. A release goes to a party a few
        parts at a time (``coordinator/outbox.py``), so no raised limit is needed for the parts, and the solver's queue,
        whose AGGREGATEs are chunk sums held in this process until libzmq sends them, stays within ``network.hwm``."""
        return self.cfg.network.hwm

    def _drop_sent_pages(self) -> None:
        """Drop from this process the pages of each release file whose frames libzmq has taken (encrypted into its own
        buffer; ``MADV_DONTNEED`` on a read-only file map: a later read pages them in again from the file, unchanged).
        Pages a process touched through a map count in its resident memory until they are dropped: without this, serving
        a 470 MB release would leave it all resident. Then each party connection gets its next messages, as many as
        libzmq has taken; one that took nothing for ``stage_timeout_s`` gets nothing more (its queue is dropped)."""
        now = self.clock()
        if self.sending:
            pending, done = [], {}
            for tracker, whole in self.sending:
                if not tracker.done:
                    pending.append((tracker, whole))
                elif whole is not None:
                    done[id(whole)] = whole
            self.sending = pending
            for whole in done.values():
                drop_pages(whole)
        stall = self.cfg.network.stage_timeout_s
        for name, box in list(self.outboxes.items()):
            box.taken(now)
            if box.flight and now - box.since > stall:
                self._drop_outbox(name, f"the peer's queue is full: it took none of its {len(box.flight)} release "
                                        f"parts with libzmq for {stall:g} s (network.stage_timeout_s)")
            else:
                self._feed(name, box)

    def _queue(self, name: str, messages: Iterable[Outgoing]) -> None:
        """Messages for a party's current connection, sent in order as libzmq takes the earlier ones (``_feed``). A new
        connection of the party replaces the old one's queue."""
        route = self.routes.get(name)
        if route is None:
            return
        box = self.outboxes.get(name)
        if box is None or box.route != route:
            if box is not None:
                self._drop_outbox(name, "a new connection of the party replaced it")
            box = self.outboxes[name] = Outbox(route, self.clock())
        box.add(messages)
        self._feed(name, box)

    def _feed(self, name: str, box: Outbox) -> None:
        """Hand libzmq a connection's next messages while it has fewer than ``IN_FLIGHT`` frames not yet taken."""
        while self.outboxes.get(name) is box and (out := box.next()) is not None:
            if not box.flight:  # a pause ends: time the next take from now
                box.since = self.clock()
            before = len(self.sending)
            self._send_frames(name, box.route, *out)  # a full queue or a gone peer drops the box (``_send_frames``)
            box.flight.extend(self.sending[before:])
            box.sent()
        if self.outboxes.get(name) is box and box.empty:
            del self.outboxes[name]

    def _drop_outbox(self, name: str, reason: str) -> None:
        """Stop sending a connection its queue: what it still had to get is recorded unsent (one row), its frames with
        libzmq are no longer tracked (at most ``IN_FLIGHT``, views of the release files)."""
        box = self.outboxes.pop(name, None)
        if box is None:
            return
        tracked = {id(tracker) for tracker, _ in box.flight}
        self.sending = [entry for entry in self.sending if id(entry[0]) not in tracked]
        if box.queued:
            self.ledger.message(self.s.id, "out", name, MsgType.RELEASE_PART.value, "", 0, "unsent",
                                f"the rest of its queue dropped: {reason}")
            log.warning("stopped sending %s its queued messages: %s", name, reason)

    def _drain_sending(self, deadline: float | None = None) -> None:
        """At the end, until ``deadline`` (``linger_ms`` from now by default), feed the parties' connections what they
        still have to get, dropping pages as libzmq takes them, so the last release reaches every party that reads and
        the socket's close pages in at most ``IN_FLIGHT`` parts per connection."""
        if deadline is None:
            deadline = self.clock() + self.cfg.network.linger_ms / 1000
        while (self.outboxes or self.sending) and self.clock() < deadline:
            time.sleep(max(0.0, min(deadline - self.clock(), self._wait_s() if self.outboxes else POLL_S)))
            self._drop_sent_pages()
            self._welcome_fallen()

    def _close_socket(self) -> None:
        """At exit, one deadline of ``linger_ms`` for both the parties' queues (``_drain_sending``) and the socket's
        close, so a peer that does not read delays the exit by at most ``linger_ms`` (docs/threat-model.md, Exit)."""
        deadline = self.clock() + self.cfg.network.linger_ms / 1000
        try:  # whatever fails here, the socket closes (else the context's term would wait on it for ever)
            self._welcome_fallen()  # a route that fell back at the very end: what its connection lacks, and END
            self._drain_sending(deadline)
            for name in sorted(self.outboxes):  # a peer that did not take all it was owed: the ledger says so
                self._drop_outbox(name, f"the session ended before it took them (network.linger_ms = "
                                        f"{self.cfg.network.linger_ms})")
        finally:
            self.sock.close(linger=int(max(0.0, deadline - self.clock()) * 1000))

    def _receive(self) -> None:
        frames = transport.recv_raw(self.sock)
        route, parts = frames[0].bytes, frames[1:]
        if not parts:
            return
        user = parts[0].get("User-Id")  # a str property (zmq types Frame.get as int | str)
        name = self.cfg.roster.name_for(user.encode()) if isinstance(user, str) and user else None
        nbytes = sum(len(p) for p in parts)
        if name is None:  # unreachable while ZAP is on; never answer an unauthenticated peer
            self.ledger.message(self.s.id, "in", "unauthenticated", "?", "", nbytes, "refused", "no roster key")
            return
        if not self.guard.admit(name, nbytes):  # before any copy, hash or parse
            if name not in self.guard.cut_off:  # it just overdrew: else it was cut off before
                self._cut_off(name, nbytes)
            return
        raw = [p.bytes for p in parts]
        digest = sha256_hex(raw[0])
        try:
            msg = Message.from_frames(raw, self.limits)
        except ProtocolError as exc:
            self._refuse(name, route, None, str(exc), digest, nbytes)
            return
        except Exception as exc:  # a parser bug must not end the session for everyone
            log.exception("coordinator: internal error parsing a message from %s", name)
            self._refuse(name, route, None, f"internal error ({type(exc).__name__})", digest, nbytes)
            return
        if (owner := self.conns.owner(route)) not in (None, name):  # a route of a closed connection, taken again
            self._connection_closed(owner, route, "its connection closed (another peer has its id now)")
        conn = self.conns.see(name, route)
        if conn is None:  # read after libzmq said this connection closed: nothing to answer, and it moves nothing
            self._refuse(name, route, msg, "its connection has closed", digest, nbytes, answer=False)
            return
        self.watching.seen(name, parts[0])
        if msg.seq <= conn.last_seq:  # one connection delivers in order: this was replayed
            self._refuse(name, route, msg, f"sequence number {msg.seq} is not above {conn.last_seq} "
                         "(replayed or reordered)", digest, nbytes)
            return
        conn.last_seq = msg.seq
        inbound = Inbound(msg, name, route, raw, nbytes, digest, conn)
        try:
            self._check(inbound)
            self.handlers[msg.type](inbound)
        except (ProtocolError, ProtectionError) as exc:
            self._refuse(name, route, msg, str(exc), digest, nbytes)
        except Exception as exc:  # a bug must not end the session for everyone: refuse, record, go on
            log.exception("coordinator: internal error on a %s from %s", msg.type.value, name)
            step = self.step
            if msg.type is MsgType.CONTRIB and step is not None and step.accepted.get(name):
                step.poisoned.add(name)  # its chunks may be half-added: collect the step again without it
            self._refuse(name, route, msg, f"internal error ({type(exc).__name__})", digest, nbytes)

    def _cut_off(self, name: str, nbytes: int) -> None:
        """A party overdrew its budget: record it once, stop talking to it, leave it out of the step."""
        reason = self.guard.cut(name)
        self.guard.cut_off[name].messages, self.guard.cut_off[name].nbytes = 1, nbytes
        self.ledger.message(self.s.id, "in", name, "?", "", nbytes, "cut off", reason)
        self.conns.forget(name)
        self._drop_outbox(name, "it was cut off")
        self.active.discard(name)
        step = self.step
        if step is not None and step.stage is Stage.COLLECTING and step.accepted.get(name):
            step.poisoned.add(name)  # its chunks are in the running sums: collect the step again without it

    def _summarise(self) -> None:
        """One row per peer for the refusals of the closing window that were not recorded one by one."""
        for name, missed in self.guard.new_step():
            self.ledger.message(self.s.id, "in", name, "?", "", missed.nbytes, "refused",
                                f"{missed.messages} more refused messages or error reports, not recorded or "
                                f"answered one by one (over network.max_refusal_rows = "
                                f"{self.cfg.network.max_refusal_rows})")

    def _check(self, m: Inbound) -> None:
        """Validation common to all types, run before any handler (and so before any crypto)."""
        msg = m.msg
        if msg.session != self.s.id:
            raise ProtocolError(f"wrong session {msg.session!r}")
        if msg.config != self.cfg.digest:
            raise ProtocolError("configuration digest mismatch")
        if msg.sender and msg.sender != m.name:
            raise ProtocolError(f"sender claims {msg.sender!r} but authenticated as {m.name!r}")
        role = ROLE_OF.get(msg.type)
        is_solver = m.name == "solver"
        if role is None or (role == "party" and is_solver) or (role == "solver" and not is_solver):
            raise ProtocolError(f"{msg.type.value} is not accepted from {m.name}")
        stage = (self.step.stage if self.step is not None
                 and self.stage not in (Stage.JOINING, Stage.TAGGING, Stage.SERVING) else self.stage)
        if msg.type not in ACCEPTS[stage]:
            raise ProtocolError(f"late or unexpected {msg.type.value} in stage {stage.value}")

    def _refuse(self, name: str, route: bytes, msg: Message | None, reason: str, digest: str,
                nbytes: int, answer: bool = True) -> None:
        if not self.guard.record_refusal(name, nbytes):
            return  # over the per-step row limit: counted for one summary row, not answered
        reason = clean_text(reason, STORED_TEXT)
        kw = self._where(msg)
        self.ledger.message(self.s.id, "in", name, msg.type.value if msg else "?", digest, nbytes,
                            "refused", reason, **kw)
        log.warning("refused %s from %s: %s", msg.type.value if msg else "a message", name, reason[:200])
        if answer:
            error = self._msg(MsgType.ERROR, body={"refused_seq": msg.seq if msg else -1, "reason": reason})
            self._send_route(name, route, error)

    @staticmethod
    def _where(msg: Message | None) -> dict[str, Any]:
        if msg is None:
            return {}
        body = msg.body
        return {"round_": msg.round, "layer": msg.layer, "stat": msg.stat or None,
                "chunk": body.get("chunk"), "attempt": body.get("attempt")}

    def _accept(self, m: Inbound, reason: str = "") -> None:
        self.ledger.message(self.s.id, "in", m.name, m.msg.type.value, m.digest, m.nbytes, "accepted",
                            reason, **self._where(m.msg))

    # ---- sending ------------------------------------------------------------------------------------
    def _msg(self, mtype: MsgType, round_: int = -1, layer: int = -1, stat: str = "",
             body: Mapping[str, Any] | None = None, frames: tuple[Frame, ...] = ()) -> Message:
        return build(mtype, session=self.s.id, sender="coordinator", seq=self.seq.next(), config=self.cfg.digest,
                     round_=round_, layer=layer, stat=stat, body=body, frames=frames)

    def _request(self, step: Step) -> Message:
        body: dict[str, Any] = {"layers": list(step.layers), "attempt": step.attempt}
        if step.order:  # the party may send the step's chunks numbered below this, in order
            body["upto"] = step.granted
        return self._msg(MsgType.REQUEST, step.round, body=body)

    def _send(self, name: str, msg: Message) -> None:
        route = self.routes.get(name)
        if route is not None:
            self._send_route(name, route, msg)
        else:
            self.ledger.message(self.s.id, "out", name, msg.type.value, sha256_hex(msg.to_frames()[0]),
                                msg.nbytes, "unsent", "peer not connected", **self._where(msg))

    def _send_route(self, name: str, route: bytes, msg: Message) -> None:
        self._post(name, route, msg.to_frames(), msg.type.value, self._where(msg))

    def _post(self, name: str, route: bytes, frames: Sequence[Frame], mtype: str, where: dict[str, Any]) -> None:
        """Send now, or behind the release parts still queued for this connection (a party gets its messages in the
        order they were made: a REQUEST or END never overtakes a release)."""
        box = self.outboxes.get(name)
        if box is not None and box.route == route and box.queued:
            box.add([(frames, mtype, where)])
        else:
            self._send_frames(name, route, frames, mtype, where)

    def _send_frames(self, name: str, route: bytes, frames: Sequence[Frame], mtype: str,
                     where: dict[str, Any], track: bool = False) -> list[zmq.MessageTracker]:
        """Send one message without waiting. ``track``: every frame goes zero-copy with a tracker, returned (done once
        libzmq has taken the frame; none when the send failed)."""
        outcome, reason = "sent", ""
        trackers: list[zmq.MessageTracker] = []
        try:  # never wait: a peer that does not read must not stall the loop for the others
            # a view of a stored release's shared map goes zero-copy whatever its size (pyzmq copies a frame below
            # its copy threshold even with copy=False): a queue holds references to the one map, not copies. Such a
            # view (or one of an old ledger's inline release) is tracked: its pages are dropped once libzmq has taken
            # it, and the connection's next part is queued then (``_feed``)
            out: list[Any] = []
            for f in frames:
                if isinstance(f, memoryview) and isinstance(f.obj, mmap.mmap | bytes):
                    frame = zmq.Frame(f, copy=False, track=True)
                    self.sending.append((frame.tracker, f.obj if isinstance(f.obj, mmap.mmap) else None))
                    out.append(frame)
                elif track:
                    frame = zmq.Frame(f, copy=False, track=True)
                    trackers.append(frame.tracker)
                    out.append(frame)
                else:
                    out.append(f)
            self.sock.send_multipart([route, *out], flags=zmq.DONTWAIT, copy=False)
        except zmq.Again:  # its queue is full (network.hwm messages): drop this one and record it
            outcome, reason = "unsent", "dropped: the peer's queue is full (it is not reading)"
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY)
            outcome, reason = "unsent", exc.strerror or type(exc).__name__
            if exc.errno == zmq.EHOSTUNREACH:
                self._connection_closed(name, route, reason)
        if outcome != "sent" and name == "solver" and mtype == MsgType.AGGREGATE.value and self.step is not None:
            self.step.stale = True  # a chunk's sum the solver never got (and dropped here): collect the step again
        self.ledger.message(self.s.id, "out", name, mtype, sha256_hex(frames[0]),
                            sum(len(f) for f in frames), outcome, reason, **where)
        if outcome != "sent" and name != "solver":
            box = self.outboxes.get(name)
            if box is not None and box.route == route:  # the rest of its queue would fail the same way
                self._drop_outbox(name, reason)
        return trackers if outcome == "sent" else []

    def _verify_setup(self, public: bytes, bundles: bytes, signature: bytes) -> None:
        verify(self.cfg.roster.signing_public(), signature,
               setup_bytes(self.s.id, self.cfg.digest, public, bundles), "solver setup")

    def _verify_release(self, msg: Message, assembled: str | None = None) -> None:
        check_release(msg, self.cfg.roster.signing_public(), self.s.id, self.cfg.digest, self.cfg.roster.parties,
                      served=self.s.served, assembled=assembled,
                      inline_limit=part_bytes(self.cfg.network.max_message_bytes))


def run_coordinator(config: Config, scheme: PublicScheme, *, stop: threading.Event | None = None,
                    ctx: zmq.SyncContext | None = None) -> Outcome:
    """Run one session to completion (or abort) and return its outcome."""
    return Coordinator(config, scheme, ctx=ctx, stop=stop).run()
