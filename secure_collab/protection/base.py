"""The one interface every protection mode implements, for parties, coordinator and solver (protocol v2).

Life cycle of one statistic chunk (a flat float64 vector: part of the upper triangle of G = K Kᵀ, of
B = R Kᵀ raveled, or the edit count N) for one ``StatContext`` (session, round, layer, statistic, chunk,
attempt; ``party`` set on the party side only):

    solver:      scheme = get_scheme(params.mode)                 # the mode is always named explicitly
                 keys = scheme.solver_setup(params, {party: its X25519 sealing public key})
                 send keys.public and keys.bundles (signed by the runtime) to parties and coordinator
    party:       secrets = scheme.join(public, bundles, name, own X25519 sealing private key)
                 payload = scheme.protect(values, ctx_with_party, public, secrets, signing_key)
    coordinator: scheme.check_signature(payload, ctx_with_party, the party's verify key)   # early refusal
                 acc = scheme.accumulator(public, n_values, ctx); acc.add(payload, party=authenticated)
                 aggregate = acc.aggregate()                        # one Payload, whatever the party count
    solver:      auth = scheme.authenticate(aggregate, keys, ctx, verify_keys)   # PartyFault names parties
                 total = scheme.open(aggregate, keys, ctx, auth)                  # IntegrityError after opening

Every mode encodes values as exact integers, appends integrity tags (``integrity``), hides the vector its
own way (in the clear, masked, or encrypted: ``_hide``/``_unhide``), seals a fresh seed to the solver and
signs the contribution. Why the checks are sound: docs/integrity.md. A ``Payload`` is a JSON-safe header
plus raw byte frames; no pickle anywhere; every frame is checked for count, dtype and size before a buffer
is interpreted. Every refusal raises ``ProtectionError`` (or a subclass) whose message never holds a secret.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Any

Buffer = bytes | bytearray | memoryview
MODES = ("ckks", "shares", "plain")  # the protection modes; the wire, the configuration and the CLI take them from here


class ProtectionError(ValueError):
    """A payload, parameter or value was refused. The message says why (never a secret)."""


class PartyFault(ProtectionError):
    """Found before anything was opened and attributable: these listed parties' contributions do not
    authenticate (not in the roster, bad signature, a seal that does not open)."""

    def __init__(self, parties: list[str], reason: str) -> None:
        self.parties = tuple(sorted(set(parties)))
        super().__init__(f"{reason}: {', '.join(self.parties)}")


class IntegrityError(ProtectionError):
    """Found after opening: the aggregate is not exactly the sum of the listed parties' contributions.

    One text for every cause (range, tags, MAC), so a coordinator that alters a sum learns nothing from the
    refusal about the values it cannot see (a range check that answered differently from the MAC would
    tell it whether an entry exceeds a threshold); ``detail`` says which check, for the solver's own log."""

    def __init__(self, where: str, detail: str = "") -> None:
        super().__init__(f"{where}: integrity check failed: the aggregate is not exactly the sum of the listed "
                         "parties' in-bound, authenticated contributions")
        self.detail = detail


@dataclass(frozen=True)
class StatContext:
    """What one protected chunk is bound to: AEAD associated data, HKDF info, signatures, ledger key."""

    session_id: str
    round: int
    layer: int
    statistic: str  # "G" (upper triangle of K Kᵀ), "B" (R Kᵀ, row-major) or "N" (edit count)
    party: str = ""  # authenticated party id; empty for an aggregate
    chunk: int = 0
    attempt: int = 0

    def __post_init__(self) -> None:
        for name in ("session_id", "statistic", "party"):
            if not isinstance(getattr(self, name), str):
                raise ProtectionError(f"StatContext.{name} must be a string")
        if not self.session_id or not self.statistic:
            raise ProtectionError("StatContext needs a session_id and a statistic")
        for name in ("round", "layer", "chunk", "attempt"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < 2**31:
                raise ProtectionError(f"StatContext.{name} must be an int in [0, 2^31), got {value!r}")

    def label(self) -> bytes:
        """Canonical, unambiguous byte encoding (a JSON array: no field can run into the next)."""
        fields = ["secure-collab/v2", self.session_id, self.round, self.layer, self.statistic, self.chunk,
                  self.attempt, self.party]
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()

    def for_party(self, party: str) -> StatContext:
        return StatContext(self.session_id, self.round, self.layer, self.statistic, party, self.chunk,
                           self.attempt)

    def aggregate(self) -> StatContext:
        return self.for_party("")


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
class PartySecrets:
    """What a party learns from its sealed bundle: never sent to the coordinator."""

    mac_key: bytes
    release_key: bytes

    def __repr__(self) -> str:
        return "PartySecrets(<hidden>)"


@dataclass(frozen=True, repr=False)
class SolverKeys:
    """What ``solver_setup`` returns. Only ``public`` and ``bundles`` leave the solver."""

    params: ProtectionParams
    public: bytes
    bundles: bytes  # one sealed (mac_key, release_key) per party, sealed to its long-term X25519 key
    secret: Any  # the mode's secret (ckks: the TenSEAL context with its secret key)
    seal_private: bytes  # X25519 session key the parties seal their seeds to
    mac_key: bytes
    release_key: bytes

    def __repr__(self) -> str:  # never print a secret
        return f"SolverKeys(mode={self.params.mode!r}, public=<{len(self.public)} bytes>)"

    def party_secrets(self) -> PartySecrets:
        return PartySecrets(self.mac_key, self.release_key)


@dataclass(frozen=True)
class Authenticated:
    """The listed parties' opened seeds for one aggregate chunk (the solver's, after ``authenticate``)."""

    parties: tuple[str, ...]
    seeds: tuple[bytes, ...]


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
        """Bytes of protected state this accumulator holds (the running sum, plus seals and signatures)."""

    @abc.abstractmethod
    def aggregate(self) -> Payload:
        """The running sum as a payload for the solver (with each party's sealed seed and signature)."""
