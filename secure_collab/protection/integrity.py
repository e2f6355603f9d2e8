"""A labelled, linearly homomorphic MAC over Z_q (q = 2^61 − 1) on the exact integer encodings of a chunk.

    α_j   = 61-bit words of AES-256-CTR(HKDF(mac_key, "mac-alpha" ‖ label ‖ j))      (secret, per chunk label)
    ρ_p,j = 61 bits of HKDF(tag_key_p, "tag-pad" ‖ j)                                (per party and chunk)
    t_p,j = ⟨α_j, u_p⟩ + ρ_p,j  (mod q)

Tags add up like the data: Σ_p t_p,j = ⟨α_j, Σ_p u_p⟩ + Σ_p ρ_p,j (mod q), which the solver checks after
opening the sum. A tag travels as non-negative limbs of ``limb_bits`` bits so that the sum of P parties'
limbs is exact in any of the modes. Why this is sound, and what it assumes: docs/integrity.md.
Pure functions: keys and labels in, integers out.
"""

from __future__ import annotations

import numpy as np

from . import _primitives as hazmat
from ._wire import TAGS, n_limbs, tag_values  # the tags' layout on the wire (public: the coordinator reads it)

__all__ = ["TAGS", "n_limbs", "tag_values"]
Q = (1 << 61) - 1  # a Mersenne prime: reduction is a shift and an add
_ALPHA_INFO = b"secure-collab/v2/mac-alpha|"
_PAD_INFO = b"secure-collab/v2/tag-pad|"
TAG_KEY_INFO = b"secure-collab/v2/tag-key|"
_Q = np.uint64(Q)
_I31 = np.int64((1 << 31) - 1)
_S31 = np.int64(31)


# Values per step of the piecewise kernels (MAC, encoding, masks, decoding). Small enough that one protect's
# or open's scratch (~10 buffers) stays near the core's caches and, above all, below glibc's heap trim
# threshold: a session calls protect once per 262,144-value chunk, and scratch of 2^16-value pieces (~7.5 MB
# with the payload) was handed back to the kernel and page-faulted in again on every call (84 k faults and
# twice the time for 16 chunks; docs/protection.md). Large enough that numpy's per-call cost stays small.
PIECE_VALUES = 1 << 14


def _alpha_key(mac_key: bytes, label: bytes, j: int) -> bytes:
    return hazmat.hkdf_sha256(mac_key, None, _ALPHA_INFO + label + b"|" + str(j).encode(), 32)


def alpha(mac_key: bytes, label: bytes, j: int, n: int) -> np.ndarray:
    """The secret coefficient vector α_j for a chunk of n values: uint64 in [0, q] (q ≡ 0)."""
    out = np.empty(n, dtype=np.uint64)
    hazmat.Keystream(_alpha_key(mac_key, label, j), bytes(16)).fill(out.data.cast("B"))
    np.bitwise_and(out, _Q, out=out)
    return out


def tag_pad(tag_key: bytes, j: int) -> int:
    """ρ_j = PRF(tag_key, j) in [0, q]."""
    raw = hazmat.hkdf_sha256(tag_key, None, _PAD_INFO + str(j).encode(), 8)
    return int.from_bytes(raw, "little") & Q


class _DotKernel:
    """Exact Σ a_i·u_i (a Python int, not reduced) of uint64 a in [0, q] and int64 u with |u| < 2^60, through
    reused buffers of ``size`` values: no allocation proportional to the vector, and no 128-bit integers.

    With a = a1·2^31 + a0 and u = u1·2^31 + u0 (a0, u0 in [0, 2^31), a1 in [0, 2^30), u1 = u >> 31 signed in
    [−2^29, 2^29)): a·u = h·2^62 + m·2^31 + l with h = a1·u1, m = a1·u0 + a0·u1, l = a0·u0, all within int64.
    The bits of l above 31 are carried into m and those of m into h, and h is split at bit 31, so every summed
    array holds values below 2^31 in magnitude: exact int64 sums for any chunk under 2^32 values."""

    def __init__(self, size: int) -> None:
        self.u0, self.u1, self.a0, self.a1, self.h, self.m, self.t = (
            np.empty(size, dtype=np.int64) for _ in range(7))

    def split_u(self, u: np.ndarray) -> None:
        """Once per chunk of u (shared by every α)."""
        k = u.shape[0]
        np.bitwise_and(u, _I31, out=self.u0[:k])
        np.right_shift(u, _S31, out=self.u1[:k])  # arithmetic: the sign stays in u1

    def dot(self, a: np.ndarray) -> int:
        """Σ a_i·u_i over the chunk last given to ``split_u`` (a: the same length, values in [0, q])."""
        k = a.shape[0]
        u0, u1, a0, a1, h, m, t = (b[:k] for b in (self.u0, self.u1, self.a0, self.a1, self.h, self.m, self.t))
        ai = a.view(np.int64)  # a <= q < 2^63: the same non-negative integers
        np.bitwise_and(ai, _I31, out=a0)
        np.right_shift(ai, _S31, out=a1)
        np.multiply(a1, u1, out=h)  # |h| < 2^59
        np.multiply(a1, u0, out=m)
        np.multiply(a0, u1, out=t)
        np.add(m, t, out=m)  # m in (−2^60, 2^61 + 2^60)
        np.multiply(a0, u0, out=t)  # l in [0, 2^62)
        np.right_shift(t, _S31, out=a1)  # carry l's high bits into m (a1 is free now)
        np.add(m, a1, out=m)
        np.bitwise_and(t, _I31, out=t)
        low = int(np.add.reduce(t))
        np.right_shift(m, _S31, out=a1)  # and m's into h
        np.add(h, a1, out=h)
        np.bitwise_and(m, _I31, out=m)
        mid = int(np.add.reduce(m))
        np.right_shift(h, _S31, out=a1)
        np.bitwise_and(h, _I31, out=h)
        return ((int(np.add.reduce(a1)) << 93) + (int(np.add.reduce(h)) << 62) + (mid << 31) + low)


class TagStream:
    """⟨α_j, u⟩ mod q for every tag j of one chunk label, over a vector fed in pieces of at most ``size``
    values (each α_j's keystream continues across pieces): what ``tags`` and ``verify`` compute, in bounded
    memory, without ever holding α_j or a temporary as long as the vector."""

    def __init__(self, mac_key: bytes, label: bytes, size: int = PIECE_VALUES) -> None:
        self._streams = [hazmat.Keystream(_alpha_key(mac_key, label, j), bytes(16)) for j in range(TAGS)]
        self._sums = [0] * TAGS
        self._size = size
        self._alpha = np.empty(size, dtype=np.uint64)
        self._kernel = _DotKernel(size)

    def update(self, u: np.ndarray) -> None:
        """The next int64 piece of u (|u| < 2^60), at most ``size`` values."""
        k = u.shape[0]
        self._kernel.split_u(u)
        a = self._alpha[:k]
        for j, stream in enumerate(self._streams):
            stream.fill(a.data)
            np.bitwise_and(a, _Q, out=a)
            self._sums[j] += self._kernel.dot(a)

    def update_all(self, u: np.ndarray) -> None:
        """All of u, in pieces of this stream's size."""
        for start in range(0, u.shape[0], self._size):
            self.update(u[start : start + self._size])

    def digests(self) -> list[int]:
        """⟨α_j, u⟩ mod q of everything fed so far, for each j."""
        return [s % Q for s in self._sums]


def dot_mod_q(a: np.ndarray, u: np.ndarray) -> int:
    """⟨a, u⟩ mod q for a in [0, q] (uint64) and signed int64 u with |u| < 2^60, chunk by chunk."""
    a, u = np.asarray(a, dtype=np.uint64), np.asarray(u, dtype=np.int64)
    kernel, total = _DotKernel(min(PIECE_VALUES, max(u.shape[0], 1))), 0
    for start in range(0, u.shape[0], PIECE_VALUES):
        kernel.split_u(u[start : start + PIECE_VALUES])
        total += kernel.dot(a[start : start + PIECE_VALUES])
    return total % Q


def tags(u: np.ndarray, mac_key: bytes, label: bytes, tag_key: bytes) -> list[int]:
    """A party's TAGS tags of its integer chunk u under the chunk's (party-free) label."""
    stream = TagStream(mac_key, label, min(PIECE_VALUES, max(u.shape[0], 1)))
    stream.update_all(np.asarray(u, dtype=np.int64))
    return finish_tags(stream, tag_key)


def finish_tags(stream: TagStream, tag_key: bytes) -> list[int]:
    """t_j = ⟨α_j, u⟩ + ρ_j (mod q) once the whole of u went through ``stream``."""
    return [(d + tag_pad(tag_key, j)) % Q for j, d in enumerate(stream.digests())]


def to_limbs(values: list[int], limb_bits: int) -> np.ndarray:
    """Each value in [0, q) as n_limbs(limb_bits) non-negative limbs, least significant first (int64)."""
    mask = (1 << limb_bits) - 1
    return np.array([(v >> (k * limb_bits)) & mask for v in values for k in range(n_limbs(limb_bits))],
                    dtype=np.int64)


def from_limbs(limbs: np.ndarray, limb_bits: int) -> list[int]:
    """Inverse of ``to_limbs`` for (sums of) limbs: Σ_k limb_k 2^(k·limb_bits) mod q, per value."""
    k = n_limbs(limb_bits)
    ints = [int(x) for x in np.asarray(limbs, dtype=np.int64)]
    return [sum(ints[i * k + m] << (m * limb_bits) for m in range(k)) % Q for i in range(len(ints) // k)]


def verify(total: np.ndarray, tag_limb_sums: np.ndarray, mac_key: bytes, label: bytes,
           pads: list[list[int]], limb_bits: int) -> bool:
    """Does Σ_p t_p,j ≡ ⟨α_j, total⟩ + Σ_p ρ_p,j for every j?  ``pads[p][j]`` = ρ_p,j of each listed party;
    ``total``: the opened integer sum (already checked to be within the aggregate bound)."""
    got = from_limbs(tag_limb_sums, limb_bits)
    if len(got) != TAGS or any(len(p) != TAGS for p in pads):
        return False
    stream = TagStream(mac_key, label, min(PIECE_VALUES, max(total.shape[0], 1)))
    stream.update_all(np.asarray(total, dtype=np.int64))
    return all(got[j] == (d + sum(p[j] for p in pads)) % Q for j, d in enumerate(stream.digests()))
