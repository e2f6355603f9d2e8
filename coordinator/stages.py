"""The coordinator's per-step state machine: stages, allowed transitions, and the running sums.

A step is one aggregation: (round, layers) with one layer (sequential) or all layers (oneshot), and an
attempt number that grows when a step is re-collected (a party left a partial contribution, or the
coordinator restarted). Contributions bound to any other attempt are refused as stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

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
    Stage.SOLVING: frozenset({MsgType.HELLO, MsgType.RELEASE, MsgType.NOTICE, MsgType.VERDICT, MsgType.ACK,
                              MsgType.ERROR}),
    Stage.SERVING: frozenset({MsgType.HELLO, MsgType.QUERY, MsgType.ANSWER, MsgType.ACK, MsgType.ERROR}),
    Stage.DONE: frozenset({MsgType.HELLO, MsgType.ACK, MsgType.ERROR}),
    Stage.ABORTED: frozenset({MsgType.HELLO, MsgType.ERROR}),
}
ROLE_OF: dict[MsgType, str] = {
    MsgType.HELLO: "any", MsgType.CONTRIB: "party", MsgType.ACK: "party",
    MsgType.RELEASE: "solver", MsgType.VERDICT: "solver", MsgType.ERROR: "any",
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
    released: dict[int, list[bytes]] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)  # parties the solver could not authenticate (not opened)
    refused: str = ""  # the solver's reason when it refused the step

    def move(self, to: Stage) -> None:
        if to not in TRANSITIONS[self.stage]:
            raise AssertionError(f"illegal stage transition {self.stage} -> {to}")
        self.stage = to

    def all_keys(self, cfg: SessionConfig) -> set[Key]:
        return {(lay, st, i) for lay in self.layers for st in STATISTICS for i in range(cfg.n_chunks(st))}

    def complete(self, cfg: SessionConfig) -> list[str]:
        want = self.all_keys(cfg)
        return sorted(p for p in self.expected - self.poisoned if self.accepted.get(p, set()) == want)

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
    if msg.stat not in STATISTICS:
        raise ProtocolError(f"unknown statistic {msg.stat!r}")
    key = (msg.layer, msg.stat, parse_chunk_body(body, cfg.n_values(msg.stat), cfg.chunk_values))
    if key in step.accepted.get(party, set()):
        raise ProtocolError(f"duplicate: layer {msg.layer} {msg.stat} chunk {body['chunk']} already accepted")
    return key
