"""Value encoding shared by all modes: upper-triangle packing, validation, fixed point over Z_2^64."""

from __future__ import annotations

import math

import numpy as np

from .base import ProtectionError, StatContext

# |sum of max_parties encoded values| must stay below 2^60 < q/2, q = 2^61 − 1 the integrity MAC's prime:
# then no shift of the sum by a non-zero multiple of q (or of 2^64) fits in the bound the solver checks
# (docs/integrity.md), and the int64 sum never wraps.
_HEADROOM_BITS = 60


def pack_symmetric(matrix: np.ndarray) -> np.ndarray:
    """Upper triangle (diagonal included), row-major, of a symmetric (d, d) matrix -> (d(d+1)/2,).

    Row by row (the order of ``numpy.triu_indices``): fancy indexing would first build two int64 index vectors
    as long as the triangle (1.6 GB at d 14,336, twice the packed result)."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ProtectionError(f"expected a square matrix, got shape {matrix.shape}")
    dim = matrix.shape[0]
    out = np.empty(triangle_size(dim), dtype=matrix.dtype)
    off = 0
    for i in range(dim):
        out[off : off + dim - i] = matrix[i, i:]
        off += dim - i
    return out


_MIRROR_ROWS = 128  # rows per block when ``unpack_symmetric`` mirrors the upper triangle (cache-sized transposes)


def unpack_symmetric(packed: np.ndarray, dim: int) -> np.ndarray:
    """Inverse of ``pack_symmetric``: a full symmetric (dim, dim) matrix. The upper triangle row by row, then the
    lower one as block transposes of it (no index vectors; no column-by-column strided writes)."""
    if packed.shape != (triangle_size(dim),):
        raise ProtectionError(f"packed triangle of dim {dim} needs {triangle_size(dim)} values")
    out = np.empty((dim, dim), dtype=packed.dtype)
    off = 0
    for i in range(dim):
        out[i, i:] = packed[off : off + dim - i]
        off += dim - i
    for start in range(0, dim, _MIRROR_ROWS):
        end = min(start + _MIRROR_ROWS, dim)
        out[start:end, :start] = out[:start, start:end].T
        block = out[start:end, start:end]
        lower = np.tril_indices(end - start, -1)
        block[lower] = block.T[lower]
    return out


def triangle_size(dim: int) -> int:
    """Values in the upper triangle (diagonal included) of a (dim, dim) matrix: what G packs to."""
    return dim * (dim + 1) // 2


def check_values(values: np.ndarray, bound: float, ctx: StatContext, n_values: int | None = None) -> None:
    """Refuse anything but a flat, finite float64 vector whose entries are within ``bound``."""
    check_shape(values, ctx, n_values)
    # max and min are reductions (no temporary as long as the vector); NaN propagates through both
    peak = max(float(np.max(values)), -float(np.min(values)))
    where = f"statistic {ctx.statistic!r} of layer {ctx.layer}"
    if not math.isfinite(peak):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ProtectionError(f"{where}: non-finite value {values[bad]} at index {bad}")
    if peak > bound:
        at = int(np.argmax(np.abs(values)))
        raise ProtectionError(
            f"{where}: |value| {peak:.6g} at index {at} exceeds the declared bound {bound:.6g}"
        )


def check_shape(values: np.ndarray, ctx: StatContext, n_values: int | None = None) -> None:
    """Refuse anything but a non-empty flat float64 vector (of ``n_values`` values when given)."""
    where = f"statistic {ctx.statistic!r} of layer {ctx.layer}"
    if not isinstance(values, np.ndarray):
        raise ProtectionError(f"{where}: expected a numpy array, got {type(values).__name__}")
    if values.dtype != np.float64:
        raise ProtectionError(f"{where}: expected dtype float64, got {values.dtype}")
    if values.ndim != 1:
        raise ProtectionError(f"{where}: expected a flat vector, got shape {values.shape}")
    if n_values is not None and values.shape[0] != n_values:
        raise ProtectionError(f"{where}: expected {n_values} values, got {values.shape[0]}")
    if values.size == 0:
        raise ProtectionError(f"{where}: empty statistic")


def check_bound(bound: float, max_parties: int, min_parties: int) -> None:
    if not (isinstance(bound, int | float) and math.isfinite(bound) and bound > 0):
        raise ProtectionError(f"bound must be a finite positive number, got {bound!r}")
    if not (isinstance(max_parties, int) and max_parties >= 1):
        raise ProtectionError(f"max_parties must be a positive integer, got {max_parties!r}")
    if not (isinstance(min_parties, int) and 2 <= min_parties <= max_parties):
        raise ProtectionError(
            f"min_parties must be an integer in [2, max_parties={max_parties}], got {min_parties!r}"
        )


def fixed_point_bits(bound: float, max_parties: int) -> int:
    """Fractional bits f such that max_parties * (bound * 2^f + 1/2) < 2^60.

    With ceil(log2(P * bound)) integer bits and f = 59 - that, P * bound * 2^f <= 2^59, so even with
    each party's rounding (<= 1/2) the exact sum of P encodings stays below 2^60: no wraparound of the
    true sum in int64/uint64, and a sum within the bound cannot be shifted by a multiple of the MAC's prime
    without leaving it. This is the setup-time overflow proof.
    """
    int_bits = math.ceil(math.log2(max_parties * bound))
    frac = _HEADROOM_BITS - 1 - int_bits
    if frac > 1000:  # 2^f must stay a finite float64
        raise ProtectionError(f"bound {bound!r} is too small to encode")
    assert max_parties * (bound * 2.0**frac + 0.5) < 2.0**_HEADROOM_BITS
    return frac


def aggregate_bound(bound: float, parties: int, frac_bits: int) -> int:
    """The largest |Σ_p round(x_p 2^f)| of ``parties`` in-bound contributions (the solver's range check)."""
    return int(math.floor(parties * (bound * 2.0**frac_bits + 0.5)))


def encode_fixed(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """float64 -> round(x * 2^f) as int64 (values already checked against bound)."""
    out = np.empty(values.shape, dtype=np.int64)
    encode_fixed_into(values, frac_bits, out, np.empty(values.shape, dtype=np.float64))
    return out


def encode_fixed_into(values: np.ndarray, frac_bits: int, out: np.ndarray, scratch: np.ndarray) -> None:
    """``encode_fixed`` into ``out`` (int64) through ``scratch`` (float64), both as long as ``values``.

    x · 2^f is a multiplication by a power of two: exact (the bound keeps it below 2^59; a tiny result rounds
    as ldexp rounds it), then rint, then the same float -> int64 conversion as ``astype``."""
    np.multiply(values, 2.0**frac_bits, out=scratch)
    np.rint(scratch, out=scratch)
    np.copyto(out, scratch, casting="unsafe")


_DECODE_STEP = 1 << 14  # values per piece of the decoders (a 128 KiB scratch)


def decode_fixed(encoded: np.ndarray, frac_bits: int, step: int = _DECODE_STEP) -> np.ndarray:
    """int64 (or uint64 two's complement) -> float64 (one rounding, to 53 bits, in the int -> float step),
    piece by piece into the result (no temporary as long as the vector). Scaling by 2^-f is exact or rounds
    as ldexp does."""
    ints = encoded.view(np.int64) if encoded.dtype == np.uint64 else encoded.astype(np.int64, copy=False)
    out = np.empty(ints.shape, dtype=np.float64)
    scale = 2.0**-frac_bits
    for start in range(0, ints.shape[0], step):
        part = out[start : start + step]
        np.copyto(part, ints[start : start + step], casting="unsafe")
        np.multiply(part, scale, out=part)
    return out


def decode_fixed_in_place(ints: np.ndarray, frac_bits: int, step: int = _DECODE_STEP) -> np.ndarray:
    """``decode_fixed`` of an int64 vector written over it: returns the float64 view of the same memory (the
    integers are gone). For a caller that owns ``ints`` and needs only the floats: no second vector-long
    buffer, whose first touch costs more than the conversion. Each piece is converted into a small scratch
    before it is written back, so no value is read after it was overwritten."""
    if ints.dtype != np.int64 or not ints.flags.c_contiguous:
        raise ValueError("decode_fixed_in_place needs a contiguous int64 vector")
    out = ints.view(np.float64)
    scratch = np.empty(min(step, ints.shape[0]), dtype=np.float64)
    scale = 2.0**-frac_bits
    for start in range(0, ints.shape[0], step):
        part = scratch[: min(step, ints.shape[0] - start)]
        np.copyto(part, ints[start : start + step], casting="unsafe")
        np.multiply(part, scale, out=out[start : start + step])
    return out
