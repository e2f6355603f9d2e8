"""Compiled loops of the protection layer (numba): exact int64 arithmetic only, the same integers as the
definitions (tests/protection/test_integrity.py checks them against Python integers, tests/vectors/ byte for
byte), on any CPU.

Imported on first use by the parties' and the solver's code (``integrity.TagStream``), never by the coordinator,
which computes no tag: numba's import (~0.35 s, ~55 MB) stays out of its memory bound. Compiled once per
machine and cached (numba's ``cache=True``: beside this file, or in the user's cache directory where that is
read-only).

Why a compiled loop: the MAC's exact dot product through numpy took ~20 passes over int64 temporaries per tag
(≈ 11 ns per value for the two tags at session chunks); this loop makes one pass over α and u in registers
(≈ 0.5 ns per value and tag). docs/protection.md "Throughput" has the measurements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np

from ._wire import TAGS

if TAGS != 2:  # protect_piece keeps both tags' sums in registers
    raise ImportError(f"protect_piece is written for 2 tags, the protocol has {TAGS}")
_I31 = (1 << 31) - 1
_Q = np.uint64((1 << 61) - 1)
_ABS = np.uint64((1 << 63) - 1)  # all bits of a double but its sign


def _product_limbs_py(a: Any, u0: Any, u1: Any) -> tuple[Any, Any, Any, Any]:  # int64 scalars under numba
    """a·u as four summands below 2^31 in magnitude: (low, mid, hi, top) with a·u = top·2^93 + hi·2^62 + mid·2^31
    + low, for a in [0, 2^61) and u = u1·2^31 + u0 (u0 in [0, 2^31), u1 = u >> 31 signed in [−2^29, 2^29)).

    With a = a1·2^31 + a0: a·u = h·2^62 + m·2^31 + l, h = a1·u1, m = a1·u0 + a0·u1, l = a0·u0, all within int64;
    l's bits above 31 are carried into m and m's into h, and h is split at bit 31. Sums of these are exact in
    int64 for any piece under 2^32 values."""
    a0 = a & _I31
    a1 = a >> 31
    lo = a0 * u0
    m = a1 * u0 + a0 * u1 + (lo >> 31)
    h = a1 * u1 + (m >> 31)
    return lo & _I31, m & _I31, h & _I31, h >> 31


def _jit(fn: Callable[..., Any], **options: Any) -> Any:
    """numba.njit with its on-disk cache, or without it where no cache location is writable (numba refuses
    ``cache=True`` then: each process compiles the kernels once instead, ~1-2 s)."""
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:
        return numba.njit(**options)(fn)


_product_limbs = _jit(_product_limbs_py, inline="always")


def _limb_sums_py(alpha: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """out[j] = (Σ low, Σ mid, Σ hi, Σ top) of ``_product_limbs`` over Σ_i (α[j, i] masked to q's 61 bits) · u[i],
    for each row j of α (|u| < 2^60): Σ a·u = ``combine(out)[j]``."""
    for j in range(alpha.shape[0]):
        low = 0
        mid = 0
        hi = 0
        top = 0
        for i in range(u.shape[0]):
            x = u[i]
            d0, d1, d2, d3 = _product_limbs(np.int64(alpha[j, i] & _Q), x & _I31, x >> 31)
            low += d0
            mid += d1
            hi += d2
            top += d3
        out[j, 0] = low
        out[j, 1] = mid
        out[j, 2] = hi
        out[j, 3] = top


limb_sums = cast(Callable[[np.ndarray, np.ndarray, np.ndarray], None],
                 _jit(_limb_sums_py, nogil=True, boundscheck=False))


def _encode_py(x: np.ndarray, x_bits: np.ndarray, scale: float, u: np.ndarray) -> Any:
    """u = rint(x · scale) as int64 (``encoding.encode_fixed``: scale is 2^f, so the product is exact; rint rounds
    ties to even, as numpy's). Returns the largest |x| as its IEEE-754 bits (``x_bits``: x viewed as uint64, sign
    cleared): for non-negative doubles the bits order as the values do, and every NaN's bits exceed infinity's,
    so an integer maximum (which the compiler vectorises, unlike a float one) finds the peak and any NaN."""
    peak = np.uint64(0)
    for i in range(x.shape[0]):
        peak = max(peak, x_bits[i] & _ABS)
        u[i] = np.int64(np.rint(x[i] * scale))
    return peak


_encode = _jit(_encode_py, inline="always")


def _protect_piece_py(x: np.ndarray, x_bits: np.ndarray, scale: float, alpha: np.ndarray, mask: np.ndarray,
                      u: np.ndarray, out: np.ndarray, sums: np.ndarray) -> Any:
    """A party's protect over one piece in one call, while it is in cache: u = the piece's encoding
    (``_encode``), ``sums`` = its tags' limb sums (``limb_sums``), and out = u − mask mod 2^64 (uint64; ``shares``)
    or u where ``mask`` is empty. Returns the bits of the piece's largest |x| (``_encode``): the caller refuses
    everything unless that is within the bound (|x · scale| < 2^59 there; beyond it u means nothing, and nothing
    of it is sent)."""
    peak = _encode(x, x_bits, scale, u)
    limb_sums(alpha, u, sums)
    if mask.shape[0] > 0:
        for i in range(u.shape[0]):
            out[i] = np.uint64(u[i]) - mask[i]  # wraps mod 2^64
    else:
        for i in range(u.shape[0]):
            out[i] = np.uint64(u[i])
    return peak


protect_piece = cast(Callable[..., np.uint64], _jit(_protect_piece_py, nogil=True, boundscheck=False))


def combine(sums: np.ndarray) -> list[int]:
    """Each row's (low, mid, hi, top) limb sums as the exact Python integer Σ a·u (not reduced)."""
    return [(int(t) << 93) + (int(h) << 62) + (int(m) << 31) + int(lo) for lo, m, h, t in sums.tolist()]
