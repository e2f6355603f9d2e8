"""``plain`` mode: no protection at all, behind the same interface. For baselines and benchmarks only."""

from __future__ import annotations

import numpy as np

from . import _wire
from ._array import ArrayAccumulator, read_aggregate
from .base import Payload, ProtectionError, ProtectionParams, ProtectionScheme, SolverKeys, StatContext
from .encoding import check_bound, check_values

CHUNK = 1 << 17  # values per frame (1 MiB of float64)


class PlainScheme(ProtectionScheme):
    """The coordinator sees every party's statistic in the clear. Never the default."""

    mode = "plain"

    def solver_setup(self, params: ProtectionParams) -> SolverKeys:
        if params.mode != self.mode:
            raise ProtectionError(f"params are for mode {params.mode!r}, not {self.mode!r}")
        check_bound(params.bound, params.max_parties, params.min_parties)
        meta = {"v": _wire.VERSION, "mode": self.mode, "bound": float(params.bound),
                "max_parties": params.max_parties, "min_parties": params.min_parties}
        return SolverKeys(params, _wire.encode_public(meta), None)

    def protect(self, values: np.ndarray, ctx: StatContext, public: bytes) -> Payload:
        pub = _wire.decode_public(public, self.mode)
        if not ctx.party:
            raise ProtectionError("protect() needs the party's context (ctx.party is empty)")
        check_values(values, pub.meta["bound"], ctx)
        header = _wire.party_header(self.mode, ctx, values.shape[0], CHUNK, pub)
        return Payload(header, _wire.chunk_frames(values.copy(), CHUNK))

    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> ArrayAccumulator:
        pub = _wire.decode_public(public, self.mode)
        return ArrayAccumulator(self.mode, "float64", CHUNK, pub, n_values, ctx, extra_frames=0)

    def open(self, aggregate: Payload, secrets: SolverKeys, ctx: StatContext) -> np.ndarray:
        pub = _wire.decode_public(secrets.public, self.mode)
        total, _ = read_aggregate(aggregate, self.mode, "float64", CHUNK, pub, ctx,
                                  secrets.params.min_parties, secrets.params.max_parties, 0)
        if not np.all(np.isfinite(total)):  # raw float frames may carry NaN/Inf past the party's checks
            raise ProtectionError(f"statistic {ctx.statistic!r} of layer {ctx.layer}: non-finite aggregate")
        return total
