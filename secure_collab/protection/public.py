"""What of a protection mode needs no secret: the public parameters, the layout of the frames a party adds to its
contribution, the coordinator's running sum, and its early check of a party's signature.

This is the coordinator's whole view of protection (``secure_collab.protection.public_scheme(mode)``). Nothing
here, and nothing it imports, touches a secret or the hazmat primitives, so the coordinator's process never loads
them (tested over a real coordinator process). The full schemes (``get_scheme``: setup, protect, authenticate,
open) extend these classes.
"""

from __future__ import annotations

import abc
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import _wire, statements
from .base import Accumulator, Payload, ProtectionError, StatContext
from .encoding import check_bound

SEED_BYTES = 32
SEALED_OVERHEAD = 32 + 16  # sealing.seal_to: ephemeral X25519 public key + Poly1305 tag
CHANNEL_OVERHEAD = 12 + 16  # sealing.encrypt_channel: random nonce + Poly1305 tag
SEALED_SEED_BYTES = SEALED_OVERHEAD + SEED_BYTES
EXTRA_FRAMES = 2  # per party: the sealed seed and the signature


class PublicScheme(abc.ABC):
    """A mode's public side: parse and check public parameters, sum contributions, check their signatures."""

    mode: str

    @abc.abstractmethod
    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> Accumulator:
        """Coordinator side: a running sum for one chunk (ctx without party)."""

    @abc.abstractmethod
    def _check_public(self, pub: _wire.Public) -> None:
        """Mode-specific consistency checks of received public parameters."""

    def _public(self, public: bytes) -> _wire.Public:
        pub = _wire.decode_public(public, self.mode)
        m = pub.meta
        try:
            check_bound(m["bound"], m["max_parties"], m["min_parties"])
            key = bytes.fromhex(m["solver_x25519"])
            ok = (len(key) == 32 and m["tags"] == _wire.TAGS and isinstance(m["frac_bits"], int)
                  and isinstance(m["limb_bits"], int) and 8 <= m["limb_bits"] <= 31)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtectionError(f"{self.mode} public parameters are malformed: {exc}") from None
        if not ok:
            raise ProtectionError(f"{self.mode} public parameters are inconsistent")
        self._check_public(pub)
        return pub

    def _frame_values(self, pub: _wire.Public) -> int:
        """Values per data frame."""
        return int(pub.meta["frame_values"])

    def sum_bytes_bound(self, public: bytes, n_values: int, parties: int) -> int:
        """The bytes a running sum of one chunk of ``n_values`` over ``parties`` holds once every party is in (its
        ``held_bytes``): what the coordinator sizes its memory window with before any chunk arrives."""
        pub = self._public(public)
        total, per_frame = n_values + _wire.tag_values(pub.meta["limb_bits"]), self._frame_values(pub)
        frames = _wire.n_frames(total, per_frame)
        return self._sum_frame_bytes(pub, total, frames) + parties * (SEALED_SEED_BYTES + statements.SIGNATURE_BYTES)

    def _sum_frame_bytes(self, pub: _wire.Public, total: int, frames: int) -> int:
        """Bytes of the running sum's data for ``total`` values in ``frames`` frames (64-bit integers unless a mode
        says otherwise)."""
        return total * 8

    def frac_bits(self, public: bytes) -> int:
        """Fractional bits of the integer encoding: one encoded step is 2^-frac_bits in value units."""
        return int(self._public(public).meta["frac_bits"])

    def solver_seal_key(self, public: bytes) -> bytes:
        """The solver's session X25519 key in the (signature-checked) public parameters: what parties seal to."""
        return bytes.fromhex(self._public(public).meta["solver_x25519"])

    def n_tag_values(self, public: bytes) -> int:
        return _wire.tag_values(self._public(public).meta["limb_bits"])

    def check_signature(self, payload: Payload, ctx: StatContext, verify_key: Ed25519PublicKey,
                        public: bytes) -> None:
        """The coordinator's early check that a party signed what it sent (the solver checks again)."""
        pub = self._public(public)
        n = payload.header.get("n_values") if isinstance(payload.header, dict) else None
        if not isinstance(n, int) or len(payload.frames) < EXTRA_FRAMES:
            raise ProtectionError("payload lacks n_values or its sealed seed and signature")
        sealed, signature = bytes(payload.frames[-2]), bytes(payload.frames[-1])
        try:
            statements.verify(verify_key, signature, statements.contribution_statement(ctx, pub.digest, n, sealed))
        except statements.AuthenticationFailed:
            raise ProtectionError(f"party {ctx.party!r}: contribution signature does not verify") from None


class RunningSum(Accumulator):
    """What every mode's running sum shares: one aggregate per statistic, each party at most once, all or nothing;
    each party's sealed seed and signature kept beside the sum (forwarded, never opened here). A mode adds its
    data frames in ``_add_frames`` after every check has passed."""

    def __init__(self, mode: str, public: _wire.Public, n_values: int, ctx: StatContext, frame_values: int) -> None:
        if ctx.party:
            raise ProtectionError("an accumulator is for an aggregate: its context has no party")
        if type(n_values) is not int or n_values <= 0:
            raise ProtectionError(f"n_values must be a positive integer, got {n_values!r}")
        self._mode, self._public, self._n, self._ctx, self._frame_values = mode, public, n_values, ctx, frame_values
        self._tags = _wire.tag_values(public.meta["limb_bits"])
        self._parties: list[str] = []
        self._extras: list[bytes] = []
        self._closed = False

    @abc.abstractmethod
    def _add_frames(self, payload: Payload, who: str) -> None:
        """Check this mode's data frames (raise before changing anything), then add them to the sum."""

    @abc.abstractmethod
    def _sum_frames(self) -> tuple[Any, ...]:
        """The running sum as data frames."""

    @abc.abstractmethod
    def _sum_bytes(self) -> int:
        """Bytes the running sum holds."""

    def add(self, payload: Payload, party: str | None = None) -> None:
        if self._closed:
            raise ProtectionError("this statistic was already aggregated: no more contributions")
        _wire.check_payload(payload, mode=self._mode, kind="party", ctx=self._ctx, n_values=self._n,
                            frame_values=self._frame_values, public=self._public, extra_frames=EXTRA_FRAMES,
                            tag_values=self._tags)
        who = _wire.admit_party(payload, party, self._parties, self._public.meta["max_parties"])
        sealed, signature = (bytes(f) for f in payload.frames[-EXTRA_FRAMES:])
        if len(sealed) != SEALED_SEED_BYTES or len(signature) != statements.SIGNATURE_BYTES:
            raise ProtectionError(f"a party payload ends with a {SEALED_SEED_BYTES}-byte sealed seed and a "
                                  f"{statements.SIGNATURE_BYTES}-byte signature")
        self._add_frames(payload, who)  # all or nothing: it raises before it adds
        self._parties.append(who)
        self._extras.extend((sealed, signature))

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(self._parties)

    @property
    def held_bytes(self) -> int:
        return self._sum_bytes() + sum(len(e) for e in self._extras)

    def aggregate(self) -> Payload:
        if not self._parties:
            raise ProtectionError("no party has contributed yet")
        header = _wire.aggregate_header(self._mode, self._ctx, self._n, self._frame_values, self._public,
                                        self.parties)
        self._closed = True  # one aggregate per statistic (array modes: the frames are views of the sum)
        return Payload(header, self._sum_frames() + tuple(self._extras))
