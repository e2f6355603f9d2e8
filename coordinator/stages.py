"""The coordinator's per-step state machine: stages, allowed transitions, and the running sums.

A step is one aggregation: (round, layers) with one layer (sequential) or all layers (oneshot), and an
attempt number that grows when a step is re-collected (a party left a partial contribution, the solver
rejoined after chunks were handed to it, or the coordinator restarted). Contributions bound to any other
attempt are refused as stale.

Streaming: a party sends the step's chunks in one order (``Step.order``: layers, then G, B, N, then chunks).
The coordinator holds the running sums of at most ``Step.window`` chunks (``network.coordinator_memory_bytes``
over one chunk's sum, ``PublicScheme.sum_bytes_bound``): a party may send the chunks numbered below
``Step.granted``, the first chunk whose sum is not yet with the solver plus the window, and a chunk beyond it
is refused before any crypto. Each chunk's sum goes to the solver as soon as every party of the step is in
it, and is then dropped; it counts in the window until libzmq has taken it from its queue to the solver (tracked),
so a solver that reads slower than the parties send holds the parties back, not memory here. The step's party set
is fixed when it opens, so a party that stops mid-stream makes the step be collected again without it (a new
attempt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from secure_collab.config import STATISTICS, SessionConfig
from secure_collab.protection import Accumulator, PublicScheme, StatContext
from secure_collab.protocol.messages import Message, MsgType, ProtocolError, chunk_of
from secure_collab.protocol.statistics import chunk_bounds, parse_chunk_body


class Stage(StrEnum):
    JOINING = "joining"
    TAGGING = "tagging"  # a round's keyed-tag exchange (dedupe / conflicts), before its first step
    COLLECTING = "collecting"
    SOLVING = "solving"
    SERVING = "serving"  # a served release: every step released, the solver answers the parties' queries
    DONE = "done"
    ABORTED = "aborted"


TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.JOINING: frozenset({Stage.COLLECTING, Stage.ABORTED}),
    Stage.TAGGING: frozenset({Stage.COLLECTING, Stage.ABORTED}),
    Stage.COLLECTING: frozenset({Stage.COLLECTING, Stage.SOLVING, Stage.ABORTED}),
    Stage.SOLVING: frozenset({Stage.COLLECTING, Stage.DONE, Stage.ABORTED}),
    Stage.SERVING: frozenset({Stage.DONE, Stage.ABORTED}),
    Stage.DONE: frozenset(),
    Stage.ABORTED: frozenset(),
}

# Which inbound message types each stage accepts, and from which role.
# An ERROR from a peer (what it refused, and why) is always taken, for the ledger.
ACCEPTS: dict[Stage, frozenset[MsgType]] = {
    Stage.JOINING: frozenset({MsgType.HELLO, MsgType.ACK, MsgType.ERROR}),
    Stage.TAGGING: frozenset({MsgType.HELLO, MsgType.BLINDED, MsgType.TAGS, MsgType.EVALUATED, MsgType.DECISION,
                              MsgType.ACK, MsgType.ERROR}),
    Stage.COLLECTING: frozenset({MsgType.HELLO, MsgType.CONTRIB, MsgType.ACK, MsgType.ERROR}),
    Stage.SOLVING: frozenset({MsgType.HELLO, MsgType.RELEASE_PART, MsgType.RELEASE, MsgType.NOTICE, MsgType.VERDICT,
                              MsgType.ACK, MsgType.ERROR}),
    Stage.SERVING: frozenset({MsgType.HELLO, MsgType.QUERY, MsgType.ANSWER, MsgType.ACK, MsgType.ERROR}),
    Stage.DONE: frozenset({MsgType.HELLO, MsgType.ACK, MsgType.ERROR}),
    Stage.ABORTED: frozenset({MsgType.HELLO, MsgType.ERROR}),
}
ROLE_OF: dict[MsgType, str] = {
    MsgType.HELLO: "any", MsgType.CONTRIB: "party", MsgType.ACK: "party",
    MsgType.RELEASE: "solver", MsgType.RELEASE_PART: "solver", MsgType.VERDICT: "solver", MsgType.ERROR: "any",
    MsgType.BLINDED: "party", MsgType.TAGS: "party", MsgType.EVALUATED: "solver", MsgType.DECISION: "solver",
    MsgType.NOTICE: "solver", MsgType.QUERY: "party", MsgType.ANSWER: "solver",
}

Key = tuple[int, str, int]  # (layer, statistic, chunk)


@dataclass
class Step:
    round: int
    layers: tuple[int, ...]
    attempt: int
    expected: frozenset[str]
    stage: Stage = Stage.COLLECTING
    requested: set[str] = field(default_factory=set)
    accs: dict[Key, Accumulator] = field(default_factory=dict)
    accepted: dict[str, set[Key]] = field(default_factory=dict)
    included: tuple[str, ...] = ()
    poisoned: set[str] = field(default_factory=set)  # parties whose payload broke an accumulator
    broken: set[Key] = field(default_factory=set)  # chunks whose running sum such a payload may have half-updated
    released: dict[int, str] = field(default_factory=dict)  # layer -> sha256 of its released ΔW ciphertext
    excluded: set[str] = field(default_factory=set)  # parties the solver could not authenticate (not opened)
    refused: str = ""  # the solver's reason when it refused the step
    # streaming (module docstring): the order parties send in, each chunk's place in it, the window of sums held
    order: tuple[Key, ...] = ()
    position: dict[Key, int] = field(default_factory=dict)
    window: int = 0  # chunks whose running sums may be held at once
    granted: int = 0  # parties may send the chunks numbered below this
    announced: int = 0  # the grant last sent to the parties in a REQUEST
    low: int = 0  # the first chunk, in order, whose sum libzmq has not taken for the solver (not handed, or unsent)
    handed: set[Key] = field(default_factory=set)  # chunks whose sums went to the solver (and were dropped here)
    # handed sums libzmq has not taken yet (its queue to the solver holds them, this process's memory): they stay in the
    # window until it has, so a solver slower than the parties back-pressures them instead of growing that queue
    unsent: dict[Key, tuple[Any, int]] = field(default_factory=dict)  # key -> (zmq trackers of its frames, its bytes)
    solver_seen: float = 0.0  # when libzmq last took a sum for the solver, or a sum went unsent while none was
    held_bytes: int = 0  # bytes of the running sums held now, and at most so far
    peak_held_bytes: int = 0
    stale: bool = False  # the solver rejoined after sums were handed to it: collect the step again
    # the stage timeout (module docstring): when each party was granted what, and the wait's moving deadline
    grants: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # party -> (when, upto) per REQUEST
    deadline: float = 0.0
    cap: float = 0.0  # no grant moves the deadline past this
    late: set[str] = field(default_factory=set)  # parties that sent a chunk more than the grace after its grant

    def open_window(self, cfg: SessionConfig, window: int) -> None:
        """Number the step's chunks in the order a party sends them and grant the first ``window``."""
        self.order = tuple((lay, st, i) for lay in self.layers for st in STATISTICS for i in range(cfg.n_chunks(st)))
        self.position = {key: n for n, key in enumerate(self.order)}
        self.window = max(1, min(window, len(self.order)))
        self.granted = self.window

    def handed_off(self, key: Key, trackers: Sequence[Any] = (), now: float = 0.0) -> None:
        """``key``'s sum went to the solver: drop it here; it leaves the window once libzmq has taken every frame of it
        (``trackers``, zmq.MessageTracker: none, or all done, means taken)."""
        acc = self.accs.pop(key, None)
        nbytes = acc.held_bytes if acc is not None else 0
        self.handed.add(key)
        if any(not t.done for t in trackers):
            if not self.unsent:
                self.solver_seen = now  # the solver's wait starts now
            self.unsent[key] = (tuple(trackers), nbytes)
        else:
            self.held_bytes -= nbytes
        self._advance()

    def taken(self, now: float = 0.0) -> bool:
        """Forget the handed sums libzmq has taken since; True when the window moved (a larger grant may be due)."""
        done = [key for key, (trackers, _) in self.unsent.items() if all(t.done for t in trackers)]
        if done:
            self.solver_seen = now
        for key in done:
            self.held_bytes -= self.unsent.pop(key)[1]
        before = self.granted
        self._advance()
        return self.granted > before

    def _advance(self) -> None:
        while self.low < len(self.order) and self.order[self.low] in self.handed and self.order[self.low] not in \
                self.unsent:
            self.low += 1
        self.granted = max(self.granted, min(len(self.order), self.low + self.window))

    def move(self, to: Stage) -> None:
        if to not in TRANSITIONS[self.stage]:
            raise AssertionError(f"illegal stage transition {self.stage} -> {to}")
        self.stage = to

    def all_keys(self, cfg: SessionConfig) -> set[Key]:
        return {(lay, st, i) for lay in self.layers for st in STATISTICS for i in range(cfg.n_chunks(st))}

    def complete(self, cfg: SessionConfig) -> list[str]:
        want = self.all_keys(cfg)
        return sorted(p for p in self.expected - self.poisoned if self.accepted.get(p, set()) == want)

    def granted_to(self, party: str, now: float) -> None:
        """A REQUEST with the current grant went to ``party`` at ``now``."""
        self.grants.setdefault(party, []).append((now, self.granted))

    def extend(self, now: float, grace: float) -> None:
        """A larger grant was announced: give the parties ``grace`` to send it, up to the cap."""
        self.deadline = min(self.cap, max(self.deadline, now + grace))

    def _sent_granted(self, party: str, upto: int) -> bool:
        return set(self.order[:upto]) <= self.accepted.get(party, set())

    def kept_up(self, now: float, grace: float, cut_off: set[str]) -> list[str]:
        """At the stage timeout, the parties (not poisoned, not cut off) that sent every chunk granted to them at
        least ``grace`` ago: only a party missing chunks of an earlier grant stalled the window. A party merely
        behind the newest grant is kept, so one that withholds its lowest chunk until just before the deadline
        and then sends it with the chunk it frees (protected in advance) cannot be the only one "kept up"."""
        def due(party: str) -> int:
            return max((upto for when, upto in self.grants.get(party, ()) if when <= now - grace), default=0)

        live = self.expected - self.poisoned - cut_off
        kept = {p for p in live if self._sent_granted(p, due(p))}
        if kept == live and kept - self.late:
            # nobody owes an old grant (a party held its chunks until just before each moved deadline, up to the
            # cap): leave out the parties that held a chunk past the grace, or the step would be collected again
            # with the same parties, and the same stall, without end
            kept -= self.late
        return sorted(kept)

    def arrived(self, party: str, key: Key, now: float, grace: float) -> None:
        """``party``'s chunk ``key`` was accepted at ``now``: note the party when it held it past the grace."""
        n = self.position.get(key)
        granted = min((when for when, upto in self.grants.get(party, ()) if n is not None and upto > n), default=now)
        if now - granted > grace:
            self.late.add(party)

    def stalled(self, cut_off: set[str]) -> bool:
        """Every live party (not poisoned, not cut off) sent every chunk granted, and a party that is not live
        holds the window: waiting on to the timeout changes nothing."""
        live = self.expected - self.poisoned - cut_off
        return bool(self.order) and live != self.expected and all(self._sent_granted(p, self.granted) for p in live)

    def partial(self, cfg: SessionConfig) -> list[str]:
        """Parties whose chunks are in the running sums but who did not complete: the sums are unusable."""
        done = set(self.complete(cfg))
        touched = {p for p, keys in self.accepted.items() if keys} | self.poisoned
        return sorted(touched - done)

    def context(self, cfg: SessionConfig, key: Key, party: str = "") -> StatContext:
        layer, stat, chunk = key
        return StatContext(cfg.id, self.round, layer, stat, party, chunk, self.attempt)

    def accumulator(
        self, key: Key, scheme: PublicScheme, public: bytes, cfg: SessionConfig
    ) -> Accumulator:
        if key not in self.accs:
            layer, stat, chunk = key
            _, count = chunk_bounds(cfg.n_values(stat), cfg.chunk_values)[chunk]
            self.accs[key] = scheme.accumulator(public, count, self.context(cfg, key))
        return self.accs[key]


@dataclass
class TagPhase:
    """A round's keyed-tag exchange as the coordinator sees it: who sent what, and the decision's party list."""

    round: int
    expected: frozenset[str]
    blinded: set[str] = field(default_factory=set)
    tagged: set[str] = field(default_factory=set)
    decided: set[str] = field(default_factory=set)
    decide: tuple[str, ...] | None = None  # the parties the solver was asked to decide over
    logged: bool = False  # the round's public decision records are in the ledger
    forwarded: list[Message] = field(default_factory=list)  # to the solver, in order: sent again if it rejoins


def validate_contrib(msg: Message, party: str, step: Step, cfg: SessionConfig) -> Key:
    """Every check on a CONTRIB that needs no crypto; returns its (layer, stat, chunk) key."""
    body = chunk_of(msg)
    if msg.round != step.round:
        raise ProtocolError(f"round {msg.round} is not open (open: round {step.round})")
    if msg.layer not in step.layers:
        raise ProtocolError(f"layer {msg.layer} is not open (open: {list(step.layers)})")
    if body["attempt"] != step.attempt:
        raise ProtocolError(f"stale attempt {body['attempt']} (current: {step.attempt})")
    if party not in step.expected:
        raise ProtocolError(f"party {party} is not part of this step")
    if party in step.poisoned:  # its payload broke a running sum: nothing more of it goes in this attempt
        raise ProtocolError(f"party {party}'s contribution was rejected in this attempt; wait for the next REQUEST")
    if msg.stat not in STATISTICS:
        raise ProtocolError(f"unknown statistic {msg.stat!r}")
    key = (msg.layer, msg.stat, parse_chunk_body(body, cfg.n_values(msg.stat), cfg.chunk_values))
    if key in step.accepted.get(party, set()):
        raise ProtocolError(f"duplicate: layer {msg.layer} {msg.stat} chunk {body['chunk']} already accepted")
    if step.order and step.position[key] >= step.granted:
        raise ProtocolError(f"layer {msg.layer} {msg.stat} chunk {body['chunk']} is beyond the coordinator's window: "
                            f"send the step's chunks in order, below chunk {step.granted} of {len(step.order)} "
                            "until a later REQUEST grants more (network.coordinator_memory_bytes)")
    return key
