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
_M31 = np.uint64((1 << 31) - 1)
_M30 = np.uint64((1 << 30) - 1)
_M32 = np.uint64((1 << 32) - 1)
_Q = np.uint64(Q)


def alpha(mac_key: bytes, label: bytes, j: int, n: int) -> np.ndarray:
    """The secret coefficient vector α_j for a chunk of n values: uint64 in [0, q] (q ≡ 0)."""
    key = hazmat.hkdf_sha256(mac_key, None, _ALPHA_INFO + label + b"|" + str(j).encode(), 32)
    out = np.empty(n, dtype=np.uint64)
    hazmat.Keystream(key, bytes(16)).fill(out.data.cast("B"))
    np.bitwise_and(out, _Q, out=out)
    return out


def tag_pad(tag_key: bytes, j: int) -> int:
    """ρ_j = PRF(tag_key, j) in [0, q]."""
    raw = hazmat.hkdf_sha256(tag_key, None, _PAD_INFO + str(j).encode(), 8)
    return int.from_bytes(raw, "little") & Q


def _reduce(x: np.ndarray) -> np.ndarray:
    """x mod q for uint64 x (any value), vectorised; 2^61 ≡ 1 (mod q)."""
    x = (x & _Q) + (x >> np.uint64(61))
    return np.where(x >= _Q, x - _Q, x)


def _mulmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a · b mod q elementwise for uint64 a, b < 2^61, without 128-bit integers (31-bit halves)."""
    a1, a0 = a >> np.uint64(31), a & _M31
    b1, b0 = b >> np.uint64(31), b & _M31
    mid = a1 * b0 + a0 * b1  # < 2^62;  a·b = a1 b1 2^62 + mid 2^31 + a0 b0,  2^62 ≡ 2
    s = ((a1 * b1) << np.uint64(1)) + (mid >> np.uint64(30)) + ((mid & _M30) << np.uint64(31)) + a0 * b0
    return _reduce(s)  # s < 2^63 + 2^32: no wraparound


def to_field(u: np.ndarray) -> np.ndarray:
    """Signed integers with |u| < q to their residues in [0, q) as uint64."""
    u = np.asarray(u, dtype=np.int64)
    return np.where(u < 0, u + np.int64(Q), u).astype(np.uint64)


def dot_mod_q(a: np.ndarray, u: np.ndarray) -> int:
    """⟨a, u⟩ mod q for a in [0, q] (uint64) and signed int64 u with |u| < q."""
    prod = _mulmod(a, to_field(u))  # each < q < 2^61
    hi = int(np.sum(prod >> np.uint64(32), dtype=np.uint64))  # < n · 2^29: exact for n < 2^35
    lo = int(np.sum(prod & _M32, dtype=np.uint64))  # < n · 2^32: exact for n < 2^32
    return ((hi << 32) + lo) % Q


def tags(u: np.ndarray, mac_key: bytes, label: bytes, tag_key: bytes) -> list[int]:
    """A party's TAGS tags of its integer chunk u under the chunk's (party-free) label."""
    return [(dot_mod_q(alpha(mac_key, label, j, u.shape[0]), u) + tag_pad(tag_key, j)) % Q for j in range(TAGS)]


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
    for j in range(TAGS):
        want = (dot_mod_q(alpha(mac_key, label, j, total.shape[0]), total) + sum(p[j] for p in pads)) % Q
        if got[j] != want:
            return False
    return True
