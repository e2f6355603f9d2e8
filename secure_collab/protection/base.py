"""The one interface every protection mode implements, for parties, coordinator and solver.

Life cycle of one statistic (a flat float64 vector: the upper triangle of G = K Kᵀ, or B = R Kᵀ raveled)
for one (session, round, layer, statistic); ``ctx`` is a ``StatContext``, ``ctx.party`` empty except on
the party side:

    solver:      scheme = get_scheme(params.mode)              # the mode is always named explicitly
                 keys = scheme.solver_setup(params)             # once per session: fresh secrets
                 send keys.public (bytes) to parties and coordinator
    party:       payload = scheme.protect(values, ctx_with_party, keys.public)
    coordinator: acc = scheme.accumulator(keys.public, n_values, ctx)
                 acc.add(payload, party=authenticated_id)      # once per party; frame by frame into
                                                               # ONE running sum; all-or-nothing
                 aggregate = acc.aggregate()                   # one Payload, whatever the party count
    solver:      total = scheme.open(aggregate, keys, ctx)     # float64; refuses < min_parties and an
                                                               # aggregate bound to another ctx

A ``Payload`` is a JSON-safe header plus raw byte frames (bytes-like: bytes, bytearray or memoryview,
so a transport can send them zero-copy). Frames are chunks of the vector (so a transport may cap its
message size) plus, in ``shares`` mode, sealed seeds. No pickle anywhere: every frame is checked for
count, dtype and size before a buffer is interpreted. Every refusal raises ``ProtectionError`` with a
message that says what was wrong (never a secret); every failed authentication/decryption is the same
opaque message.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Buffer = bytes | bytearray | memoryview


class ProtectionError(ValueError):
    """A payload, parameter or value was refused. The message says why (never a secret)."""


@dataclass(frozen=True)
class StatContext:
    """What one protected statistic is bound to: AEAD associated data, HKDF info and ledger key."""

    session_id: str
    round: int
    layer: int
    statistic: str  # "G" (upper triangle of K Kᵀ) or "B" (R Kᵀ, row-major)
    party: str = ""  # authenticated party id; empty for an aggregate

    def __post_init__(self) -> None:
        for name in ("session_id", "statistic", "party"):
            if not isinstance(getattr(self, name), str):
                raise ProtectionError(f"StatContext.{name} must be a string")
        if not self.session_id or not self.statistic:
            raise ProtectionError("StatContext needs a session_id and a statistic")
        for name in ("round", "layer"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ProtectionError(f"StatContext.{name} must be a non-negative int, got {value!r}")

    def label(self) -> bytes:
        """Canonical, unambiguous byte encoding (a JSON array: no field can run into the next), used as
        AEAD associated data and in HKDF info."""
        fields = ["secure-collab/v1", self.session_id, self.round, self.layer, self.statistic, self.party]
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()

    def for_party(self, party: str) -> StatContext:
        return StatContext(self.session_id, self.round, self.layer, self.statistic, party)


@dataclass(frozen=True)
class ProtectionParams:
    """Declared at session setup; the solver checks they cannot overflow before any party encodes."""

    mode: str  # "ckks" | "shares" | "plain"
    max_parties: int
    bound: float  # declared max |value| of any single party's statistic entry
    min_parties: int = 2
    extra: dict[str, Any] = field(default_factory=dict)  # ckks: {"precision_bits": 30}


@dataclass(frozen=True)
class Payload:
    header: dict[str, Any]
    frames: tuple[Buffer, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the frames (what a transport sends besides the small header)."""
        return sum(memoryview(f).nbytes for f in self.frames)


@dataclass(frozen=True, repr=False)
class SolverKeys:
    """What ``solver_setup`` returns. Only ``public`` leaves the solver; ``secret`` never does."""

    params: ProtectionParams
    public: bytes
    secret: Any

    def __repr__(self) -> str:  # never print the secret
        return f"SolverKeys(mode={self.params.mode!r}, public=<{len(self.public)} bytes>)"


class ProtectionScheme(abc.ABC):
    mode: str

    @abc.abstractmethod
    def solver_setup(self, params: ProtectionParams) -> SolverKeys:
        """Check the parameters (overflow proof) and make fresh session secrets."""

    @abc.abstractmethod
    def protect(self, values: np.ndarray, ctx: StatContext, public: bytes) -> Payload:
        """Party side: validate (flat float64, finite, within bound) and protect a vector."""

    @abc.abstractmethod
    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> Accumulator:
        """Coordinator side: a running sum for one (session, round, layer, statistic)."""

    @abc.abstractmethod
    def open(self, aggregate: Payload, secrets: SolverKeys, ctx: StatContext) -> np.ndarray:
        """Solver side: the float64 sum of the included parties, if ``aggregate`` is bound to ``ctx``
        and holds at least ``min_parties`` parties."""


class Accumulator(abc.ABC):
    @abc.abstractmethod
    def add(self, payload: Payload, party: str | None = None) -> None:
        """Validate and add one party's payload (each party at most once; all or nothing).

        ``party``: the transport's authenticated identity; when given it must equal the header's."""

    @property
    @abc.abstractmethod
    def parties(self) -> tuple[str, ...]:
        """Parties whose payloads were added, in order."""

    @property
    @abc.abstractmethod
    def held_bytes(self) -> int:
        """Bytes of protected state this accumulator holds (the running sum, plus sealed seeds)."""

    @abc.abstractmethod
    def aggregate(self) -> Payload:
        """The running sum as a payload for the solver (includes what the solver needs to open it)."""
