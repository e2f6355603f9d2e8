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

from types import ModuleType

import numpy as np

from . import _primitives as hazmat
from ._wire import TAGS, n_limbs, tag_values  # the tags' layout on the wire (public: the coordinator reads it)

__all__ = ["TAGS", "n_limbs", "tag_values"]
Q = (1 << 61) - 1  # a Mersenne prime: reduction is a shift and an add
_ALPHA_INFO = b"secure-collab/v2/mac-alpha|"
_PAD_INFO = b"secure-collab/v2/tag-pad|"
TAG_KEY_INFO = b"secure-collab/v2/tag-key|"
_Q = np.uint64(Q)


# Values per step of the piecewise kernels (MAC, encoding, masks, decoding). Small enough that one protect's
# or open's scratch (α of both tags, mask words, the encoded piece: 1 MiB at 2^15) stays near the core's caches
# and below glibc's heap trim threshold: a session calls protect once per 262,144-value chunk, and the numpy
# kernels' scratch of 2^16-value pieces (~7.5 MB with the payload) was handed back to the kernel and
# page-faulted in again on every call (84 k faults and twice the time for 16 chunks; docs/protection.md).
# Large enough that the per-piece Python cost (three keystream fills, one compiled call) stays small.
PIECE_VALUES = 1 << 15


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


def _kernels() -> ModuleType:
    """The compiled kernels, imported on first use: by the roles that compute tags (parties, solver), never the
    coordinator (numba's import is ~55 MB of its memory bound)."""
    from . import _kernels

    return _kernels


class TagStream:
    """⟨α_j, u⟩ mod q for every tag j of one chunk label, over a vector fed in pieces of at most ``size``
    values (each α_j's keystream continues across pieces): what ``tags`` and ``verify`` compute, in bounded
    memory, without ever holding α_j or a temporary as long as the vector. The dot product is one compiled
    pass over each piece (``_kernels.limb_sums``: exact int64 limbs, combined into Python integers here)."""

    def __init__(self, mac_key: bytes, label: bytes, size: int = PIECE_VALUES) -> None:
        self._streams = [hazmat.Keystream(_alpha_key(mac_key, label, j), bytes(16)) for j in range(TAGS)]
        self._sums = [0] * TAGS
        self._size = size
        self._alpha = np.empty(TAGS * size, dtype=np.uint64)  # raw keystream words; the kernel masks them to q
        self._limbs = np.empty((TAGS, 4), dtype=np.int64)
        self._mask = np.empty(size, dtype=np.uint64)  # protect's scratch: mask words and the encoded piece
        self._u = np.empty(size, dtype=np.int64)
        self._k = _kernels()

    def update(self, u: np.ndarray) -> None:
        """The next int64 piece of u (|u| < 2^60), at most ``size`` values."""
        self._k.limb_sums(self._next_alpha(u.shape[0]), np.ascontiguousarray(u, dtype=np.int64), self._limbs)
        self._add_limbs()

    def protect(self, x: np.ndarray, frac_bits: int, out: np.ndarray, mask: hazmat.Keystream | None = None) -> float:
        """A party's pass over the next float64 piece x: u = round(x · 2^frac_bits) (``encoding.encode_fixed``) fed
        to the stream as by ``update``, and ``out`` (uint64, as long as x) = u − the next words of ``mask`` mod 2^64
        (``shares``), or u without one: one compiled call while the piece is in cache. Returns the piece's largest
        magnitude (NaN if it holds a NaN): the caller must refuse everything unless it is within the bound, since
        out and the stream mean nothing then."""
        k = x.shape[0]
        words = self._mask[:k] if mask is not None else self._mask[:0]
        if mask is not None:
            mask.fill(words.data)
        x = np.ascontiguousarray(x, dtype=np.float64)
        peak = self._k.protect_piece(x, x.view(np.uint64), 2.0**frac_bits, self._next_alpha(k), words,
                                     self._u[:k], out, self._limbs)
        self._add_limbs()
        return float(np.array([peak], dtype=np.uint64).view(np.float64)[0])

    def _next_alpha(self, k: int) -> np.ndarray:
        """(TAGS, k): the next k raw keystream words of each α_j (the kernels mask them to [0, q])."""
        a = self._alpha[: TAGS * k].reshape(TAGS, k)  # contiguous whatever k
        for j, stream in enumerate(self._streams):
            stream.fill(a[j].data)
        return a

    def _add_limbs(self) -> None:
        for j, total in enumerate(self._k.combine(self._limbs)):
            self._sums[j] += total

    def update_all(self, u: np.ndarray) -> None:
        """All of u, in pieces of this stream's size."""
        for start in range(0, u.shape[0], self._size):
            self.update(u[start : start + self._size])

    def digests(self) -> list[int]:
        """⟨α_j, u⟩ mod q of everything fed so far, for each j."""
        return [s % Q for s in self._sums]


def warm() -> None:
    """Load the compiled kernels now (compiled once per machine, then read from numba's cache: ~0.5 s), so the
    first chunk a party protects or the solver opens does not pay for it."""
    TagStream(bytes(32), b"warm", 1).protect(np.zeros(1), 0, np.empty(1, dtype=np.uint64))
    dot_mod_q(np.zeros(1, dtype=np.uint64), np.zeros(1, dtype=np.int64))


def dot_mod_q(a: np.ndarray, u: np.ndarray) -> int:
    """⟨a, u⟩ mod q for a in [0, q] (uint64) and signed int64 u with |u| < 2^60, piece by piece."""
    a, u = np.asarray(a, dtype=np.uint64), np.asarray(u, dtype=np.int64)
    k, total, limbs = _kernels(), 0, np.empty((1, 4), dtype=np.int64)
    for start in range(0, u.shape[0], PIECE_VALUES):
        k.limb_sums(np.ascontiguousarray(a[None, start : start + PIECE_VALUES]),
                    np.ascontiguousarray(u[start : start + PIECE_VALUES]), limbs)
        total += k.combine(limbs)[0]
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
