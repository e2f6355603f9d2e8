"""Running sum of array payloads (``plain`` float64, ``shares`` uint64 wraparound) for the coordinator."""

from __future__ import annotations

import numpy as np

from . import _wire
from .base import Accumulator, Payload, ProtectionError, StatContext


class ArrayAccumulator(Accumulator):
    """One running sum of n_values entries, whatever the party count; frames are added in place."""

    def __init__(self, mode: str, dtype: str, chunk: int, public: _wire.Public, n_values: int,
                 ctx: StatContext, extra_frames: int) -> None:
        if ctx.party:
            raise ProtectionError("an accumulator is for an aggregate: its context has no party")
        if not isinstance(n_values, int) or n_values <= 0:
            raise ProtectionError(f"n_values must be a positive integer, got {n_values!r}")
        self._mode, self._dtype, self._chunk = mode, dtype, chunk
        self._public, self._n, self._ctx, self._extra = public, n_values, ctx, extra_frames
        self._sum = np.zeros(n_values, dtype=np.uint64 if dtype == "uint64" else np.float64)
        self._parties: list[str] = []
        self._extras: list[bytes] = []  # shares: the sealed seeds, forwarded unread
        self._closed = False

    def add(self, payload: Payload, party: str | None = None) -> None:
        if self._closed:
            raise ProtectionError("this statistic was already aggregated: no more contributions")
        _wire.check_payload(payload, mode=self._mode, kind="party", ctx=self._ctx, n_values=self._n,
                            chunk=self._chunk, public=self._public, extra_frames=self._extra)
        who = _wire.admit_party(payload, party, self._parties, self._public.meta["max_parties"])
        _wire.check_array_frames(payload.frames, self._dtype, self._n, self._chunk)
        data_frames = len(payload.frames) - self._extra
        extras = [bytes(f) for f in payload.frames[data_frames:]]
        self._check_extras(extras)
        # every check passed: now the add cannot fail half way
        for i, frame in enumerate(payload.frames[:data_frames]):
            part = self._sum[i * self._chunk : (i + 1) * self._chunk]
            np.add(part, _wire.frame_array(frame, self._dtype), out=part)  # uint64: wraps mod 2^64
        self._parties.append(who)
        self._extras.extend(extras)

    def _check_extras(self, extras: list[bytes]) -> None:
        """Hook for the mode's extra frames (sizes only: the coordinator cannot open them)."""

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(self._parties)

    @property
    def held_bytes(self) -> int:
        return self._sum.nbytes + sum(len(e) for e in self._extras)

    def aggregate(self) -> Payload:
        if not self._parties:
            raise ProtectionError("no party has contributed yet")
        header = _wire.aggregate_header(self._mode, self._ctx, self._n, self._chunk, self._public,
                                        self.parties)
        self._closed = True  # the frames below are views of the running sum: it must not change now
        return Payload(header, _wire.chunk_frames(self._sum, self._chunk) + tuple(self._extras))


def read_aggregate(aggregate: Payload, mode: str, dtype: str, chunk: int, public: _wire.Public,
                   ctx: StatContext, min_parties: int, max_parties: int,
                   extra_per_party: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Solver side: validate an aggregate and copy its sum out (the solver then owns the buffer)."""
    n, parties = _wire.check_aggregate_header(aggregate, ctx, min_parties, max_parties)
    _wire.check_payload(aggregate, mode=mode, kind="aggregate", ctx=ctx, n_values=n, chunk=chunk,
                        public=public, extra_frames=extra_per_party * len(parties))
    _wire.check_array_frames(aggregate.frames, dtype, n, chunk)
    total = np.empty(n, dtype=np.uint64 if dtype == "uint64" else np.float64)
    for i in range(_wire.n_chunks(n, chunk)):
        total[i * chunk : (i + 1) * chunk] = _wire.frame_array(aggregate.frames[i], dtype)
    return total, parties
