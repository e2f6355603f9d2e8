"""Modes whose wire values are 64-bit integers (``plain`` in the clear, ``shares`` masked): their public
parameters, and the coordinator's running sum (uint64, wrapping mod 2^64, one buffer whatever the party
count; each party's sealed seed and signature kept beside it). No secret and no hazmat here: the coordinator's
process loads this; the full schemes (setup, hide, open) are ``scheme.ArrayScheme`` and its two modes."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _wire
from .base import Payload, ProtectionError, StatContext
from .encoding import fixed_point_bits
from .public import EXTRA_FRAMES, PublicScheme, RunningSum

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


class ArrayAccumulator(RunningSum):
    """One uint64 buffer, wrapping mod 2^64, whatever the party count."""

    def __init__(self, mode: str, frame_values: int, public: _wire.Public, n_values: int, ctx: StatContext) -> None:
        super().__init__(mode, public, n_values, ctx, frame_values)
        self._sum = np.zeros(n_values + self._tags, dtype=np.uint64)

    def _add_frames(self, payload: Payload, who: str) -> None:
        _wire.check_array_frames(payload.frames, "uint64", self._n + self._tags, self._frame_values)
        for i, frame in enumerate(payload.frames[:-EXTRA_FRAMES]):
            part = self._sum[i * self._frame_values : (i + 1) * self._frame_values]
            np.add(part, _wire.frame_array(frame, "uint64"), out=part)  # wraps mod 2^64

    def _sum_frames(self) -> tuple[Any, ...]:
        return _wire.split_frames(self._sum, self._frame_values)

    def _sum_bytes(self) -> int:
        return self._sum.nbytes


def read_sum(aggregate: Payload, frame_values: int) -> np.ndarray:
    """Solver side (after ``check_payload``): a copy of the aggregate's uint64 sum, data then tag limbs."""
    n = aggregate.header["n_values"] + aggregate.header["tag_values"]
    _wire.check_array_frames(aggregate.frames, "uint64", n, frame_values)
    total = np.empty(n, dtype=np.uint64)
    for i in range(_wire.n_frames(n, frame_values)):
        total[i * frame_values : (i + 1) * frame_values] = _wire.frame_array(aggregate.frames[i], "uint64")
    return total
