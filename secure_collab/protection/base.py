"""The one interface every protection mode implements, for parties, coordinator and solver.

Life cycle of one statistic (a flat float64 vector: the upper triangle of G = K Kᵀ, or B = R Kᵀ raveled)
for one (session, round, layer, statistic):

    solver:      keys = scheme.solver_setup(params)          # fresh secrets; keys.public is shareable bytes
    party:       payload = scheme.protect(values, ctx, keys.public)
    coordinator: acc = scheme.accumulator(keys.public, n_values, ctx without party)
                 acc.add(payload)                             # once per party, chunk by chunk
                 aggregate = acc.aggregate()                  # one Payload, whatever the party count
    solver:      total = scheme.open(aggregate, keys)         # float64, refuses < min_parties

A ``Payload`` is a JSON-safe header plus raw byte frames; a transport sends it as-is (no pickle).
Every failure to validate raises ``ProtectionError`` with a message that says what was wrong.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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

    def label(self) -> bytes:
        """Canonical byte encoding, used as associated data / HKDF info."""
        return (
            f"secure-collab/v1|{self.session_id}|{self.round}|{self.layer}|{self.statistic}|{self.party}"
        ).encode()


@dataclass(frozen=True)
class ProtectionParams:
    """Declared at session setup; the solver checks they cannot overflow before any party encodes."""

    mode: str  # "ckks" | "shares" | "plain"
    max_parties: int
    bound: float  # declared max |value| of any single party's statistic entry
    min_parties: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Payload:
    header: dict[str, Any]
    frames: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)


class ProtectionScheme(abc.ABC):
    mode: str

    @abc.abstractmethod
    def solver_setup(self, params: ProtectionParams) -> Any:
        """Make fresh session secrets; returns an object with ``.public: bytes`` for parties/coordinator."""

    @abc.abstractmethod
    def protect(self, values: np.ndarray, ctx: StatContext, public: bytes) -> Payload:
        """Party side: validate (finite, within bound) and protect a flat float64 vector."""

    @abc.abstractmethod
    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> Accumulator:
        """Coordinator side: a running sum for one (session, round, layer, statistic)."""

    @abc.abstractmethod
    def open(self, aggregate: Payload, secrets: Any) -> np.ndarray:
        """Solver side: recover the float64 sum of the included parties; refuses < min_parties."""


class Accumulator(abc.ABC):
    @abc.abstractmethod
    def add(self, payload: Payload) -> None:
        """Validate and add one party's payload (each party at most once)."""

    @property
    @abc.abstractmethod
    def parties(self) -> tuple[str, ...]:
        """Parties whose payloads were added, in order."""

    @abc.abstractmethod
    def aggregate(self) -> Payload:
        """The running sum as a payload for the solver (includes what the solver needs to open it)."""
