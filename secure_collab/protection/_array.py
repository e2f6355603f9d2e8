"""Modes whose wire values are 64-bit integers (``plain`` in the clear, ``shares`` masked): their public
parameters, and the coordinator's running sum (uint64, wrapping mod 2^64, one buffer whatever the party
count; each party's sealed seed and signature kept beside it). No secret and no hazmat here: the coordinator's
process loads this; the full schemes (setup, hide, open) are ``scheme.ArrayScheme`` and its two modes."""

from __future__ import annotations

import numpy as np

from . import _wire
from .base import Accumulator, Payload, ProtectionError, StatContext
from .encoding import fixed_point_bits
from .public import SEALED_SEED_BYTES, PublicScheme
from .statements import SIGNATURE_BYTES

FRAME_VALUES = 1 << 17  # values per frame (1 MiB of uint64)
LIMB_BITS = 31


class ArrayPublic(PublicScheme):
    """The public side of the integer-array modes: their parameters' check and the uint64 running sum."""

    def _check_public(self, pub: _wire.Public) -> None:
        m = pub.meta
        if (m["frac_bits"] != fixed_point_bits(m["bound"], m["max_parties"]) or m["limb_bits"] != LIMB_BITS
                or m["frame_values"] != FRAME_VALUES):
            raise ProtectionError(f"{self.mode} public parameters are inconsistent (scale, limbs or frames)")

    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> ArrayAccumulator:
        return ArrayAccumulator(self.mode, FRAME_VALUES, self._public(public), n_values, ctx)


class PlainPublic(ArrayPublic):
    mode = "plain"


class SharesPublic(ArrayPublic):
    mode = "shares"


class ArrayAccumulator(Accumulator):
    def __init__(self, mode: str, frame_values: int, public: _wire.Public, n_values: int, ctx: StatContext) -> None:
        if ctx.party:
            raise ProtectionError("an accumulator is for an aggregate: its context has no party")
        if type(n_values) is not int or n_values <= 0:
            raise ProtectionError(f"n_values must be a positive integer, got {n_values!r}")
        self._mode, self._frame_values, self._public, self._n, self._ctx = mode, frame_values, public, n_values, ctx
        self._tags = _wire.tag_values(public.meta["limb_bits"])
        self._sum = np.zeros(n_values + self._tags, dtype=np.uint64)
        self._parties: list[str] = []
        self._extras: list[bytes] = []  # per party: sealed seed, signature (forwarded, never opened here)
        self._closed = False

    def add(self, payload: Payload, party: str | None = None) -> None:
        if self._closed:
            raise ProtectionError("this statistic was already aggregated: no more contributions")
        _wire.check_payload(payload, mode=self._mode, kind="party", ctx=self._ctx, n_values=self._n,
                            frame_values=self._frame_values, public=self._public, extra_frames=2, tag_values=self._tags)
        who = _wire.admit_party(payload, party, self._parties, self._public.meta["max_parties"])
        _wire.check_array_frames(payload.frames, "uint64", self._n + self._tags, self._frame_values)
        sealed, signature = (bytes(f) for f in payload.frames[-2:])
        if len(sealed) != SEALED_SEED_BYTES or len(signature) != SIGNATURE_BYTES:
            raise ProtectionError(f"a party payload ends with a {SEALED_SEED_BYTES}-byte sealed seed and a "
                                  f"{SIGNATURE_BYTES}-byte signature")
        # every check passed: now the add cannot fail half way
        for i, frame in enumerate(payload.frames[:-2]):
            part = self._sum[i * self._frame_values : (i + 1) * self._frame_values]
            np.add(part, _wire.frame_array(frame, "uint64"), out=part)  # wraps mod 2^64
        self._parties.append(who)
        self._extras.extend((sealed, signature))

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(self._parties)

    @property
    def held_bytes(self) -> int:
        return self._sum.nbytes + sum(len(e) for e in self._extras)

    def aggregate(self) -> Payload:
        if not self._parties:
            raise ProtectionError("no party has contributed yet")
        header = _wire.aggregate_header(self._mode, self._ctx, self._n, self._frame_values, self._public,
                                        self.parties)
        self._closed = True  # the frames below are views of the running sum: it must not change now
        return Payload(header, _wire.split_frames(self._sum, self._frame_values) + tuple(self._extras))


def read_sum(aggregate: Payload, frame_values: int) -> np.ndarray:
    """Solver side (after ``check_payload``): a copy of the aggregate's uint64 sum, data then tag limbs."""
    n = aggregate.header["n_values"] + aggregate.header["tag_values"]
    _wire.check_array_frames(aggregate.frames, "uint64", n, frame_values)
    total = np.empty(n, dtype=np.uint64)
    for i in range(_wire.n_frames(n, frame_values)):
        total[i * frame_values : (i + 1) * frame_values] = _wire.frame_array(aggregate.frames[i], "uint64")
    return total
