"""``shares`` mode: two-server additive secret sharing over Z_2^64 of exact fixed-point integers.

A party encodes its chunk as u = round(x · 2^f) (``encoding``), appends the integrity tag limbs
(``integrity``), draws a fresh 256-bit seed, and sends masked = v − PRG(seed) (mod 2^64) to the coordinator
and the seed sealed to the solver's session X25519 key, signed with its own long-term key (``scheme``):

    mask key   = HKDF-SHA256(seed, salt=None, info="secure-collab/v2/mask|" + ctx.label())   (32 B)
    PRG(seed)  = AES-256-CTR keystream (counter block 0), read as little-endian uint64

``ctx.label()`` binds session, round, layer, statistic, chunk, attempt and party. The coordinator adds
masked vectors into one uint64 running sum and forwards the sealed seeds unread; the solver opens the seeds
of exactly the listed parties and adds their masks back. The share the coordinator holds is uniform in
Z_2^64 and independent of x (a one-time pad under AES-CTR's PRF security); the solver sees only the sum.
"""

from __future__ import annotations

import numpy as np

from . import _primitives as hazmat
from . import _wire
from ._array import FRAME_VALUES
from .base import Authenticated, Payload, ProtectionError, SolverKeys, StatContext
from .integrity import PIECE_VALUES
from .scheme import ArrayScheme

_MASK_INFO = b"secure-collab/v2/mask|"
_COUNTER0 = bytes(16)


def mask_stream(seed: bytes, ctx: StatContext) -> hazmat.Keystream:
    """The mask PRG for one party's chunk: fill buffers with ``.fill(memoryview)``."""
    if len(seed) != 32:
        raise ProtectionError("a mask seed has 32 bytes")
    key = hazmat.hkdf_sha256(seed, None, _MASK_INFO + ctx.label(), 32)
    return hazmat.Keystream(key, _COUNTER0)


def mask_vector(encoded: np.ndarray, seed: bytes, ctx: StatContext, sign: int) -> None:
    """In place on a uint64 vector: encoded += sign * PRG(seed) (mod 2^64), one reused piece-sized buffer."""
    stream = mask_stream(seed, ctx)
    buf = np.empty(min(PIECE_VALUES, encoded.shape[0]), dtype=np.uint64)
    op = np.add if sign > 0 else np.subtract
    for start in range(0, encoded.shape[0], PIECE_VALUES):
        part = encoded[start : start + PIECE_VALUES]
        mask = buf[: part.shape[0]]
        stream.fill(mask.data)
        op(part, mask, out=part)


class SharesScheme(ArrayScheme):
    mode = "shares"

    def _mask(self, seed: bytes, ctx: StatContext) -> hazmat.Keystream:
        """masked = v − PRG(seed): subtracted as the vector is encoded (``scheme.encode_with_tags``); the frames
        are then the plain mode's views of it."""
        return mask_stream(seed, ctx)

    def _unhide(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext, auth: Authenticated,
                pub: _wire.Public) -> np.ndarray:
        """The sum plus every listed party's mask, frame by frame: one pass over the result, each frame
        unmasked while it is in cache (the same integers as adding each mask over the whole vector in turn)."""
        n = aggregate.header["n_values"] + aggregate.header["tag_values"]
        _wire.check_array_frames(aggregate.frames, "uint64", n, FRAME_VALUES)
        streams = [mask_stream(seed, ctx.for_party(party)) for party, seed in zip(auth.parties, auth.seeds,
                                                                                  strict=True)]
        total = np.empty(n, dtype=np.uint64)
        buf = np.empty(min(PIECE_VALUES, n), dtype=np.uint64)
        for i in range(_wire.n_frames(n, FRAME_VALUES)):
            frame = _wire.frame_array(aggregate.frames[i], "uint64")
            for start in range(0, frame.shape[0], PIECE_VALUES):
                part = total[i * FRAME_VALUES + start : i * FRAME_VALUES + start + PIECE_VALUES]
                part[:] = frame[start : start + PIECE_VALUES]
                mask = buf[: part.shape[0]]
                for stream in streams:
                    stream.fill(mask.data)
                    np.add(part, mask, out=part)  # wraps mod 2^64
        return total.view(np.int64)
