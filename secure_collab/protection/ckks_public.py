"""The public side of ``ckks`` mode (the coordinator's): the session's public context, the check of received
parameters and ciphertexts, and the running sum of ciphertexts. No secret key and no hazmat here. The parameter
choice (``choose_parameters``, ``grid_bits``) is public arithmetic and lives here too, so that a process without
secrets (the coordinator) can compute a session's encoding grid; key generation, encryption and decryption are
``ckks.CkksScheme`` (its docstring explains the parameters and the checks).
"""

from __future__ import annotations

import io
import math
from typing import Any

import zstandard

from . import _wire
from .base import Payload, ProtectionError, StatContext
from .public import EXTRA_FRAMES, PublicScheme, RunningSum

# public parameters used as shift counts, slot counts and sizes
_INT_FIELDS = ("poly_modulus_degree", "scale_bits", "slots", "bound_bits", "grid_bits",
               "frac_bits", "limb_bits", "frame_values")


class CkksPublic(PublicScheme):
    mode = "ckks"

    def __init__(self) -> None:
        self._contexts: dict[str, Any] = {}  # public digest -> parsed public context (parsing is ~ms)

    def _check_public(self, pub: _wire.Public) -> None:
        m = pub.meta
        try:
            # JSON's 30.0 equals 30 but is no shift count or slot count: the integer fields must be ints
            ok = (all(type(m[k]) is int for k in _INT_FIELDS)
                  and m["bound_bits"] == math.ceil(math.log2(m["bound"])) and m["frame_values"] == m["slots"]
                  and m["grid_bits"] == grid_bits(m["error_bits"], m["max_parties"])
                  and m["frac_bits"] == m["grid_bits"] - m["bound_bits"] and m["limb_bits"] == min(31, m["grid_bits"]))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ProtectionError("ckks public parameters are inconsistent (grid, scale or limbs)")

    def _session(self, public: bytes) -> tuple[_wire.Public, Any]:
        pub = self._public(public)
        return pub, self._context_for(pub)

    def _context_for(self, pub: _wire.Public) -> Any:
        import tenseal as ts

        if pub.digest not in self._contexts:
            try:
                context = ts.context_from(pub.body)
            except (ValueError, RuntimeError) as exc:
                raise ProtectionError("ckks public context does not parse") from exc
            if context.has_secret_key() or not context.is_public():
                raise ProtectionError("ckks public context carries a secret key: refusing to use it")
            if context.global_scale != 2.0 ** pub.meta["scale_bits"]:
                raise ProtectionError("ckks public context scale differs from the declared parameters")
            self._contexts[pub.digest] = context
        return self._contexts[pub.digest]

    def _sum_frame_bytes(self, pub: _wire.Public, total: int, frames: int) -> int:
        return frames * _ciphertext_bytes(pub.meta)  # one running ciphertext per frame of slots

    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> CkksAccumulator:
        pub, context = self._session(public)
        return CkksAccumulator(pub, context, n_values, ctx)


HE_STANDARD_128 = {2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}  # max log2(q), 128-bit classical
SIGMA = 3.2
SPECIAL_PRIME_BITS = 20
DEFAULT_PRECISION_BITS = 32  # the exact-sum grid sits 2 bits above the noise: ~2^-30 of the bound
_MAX_PRIME_BITS = 60


def fresh_noise_bits(n: int) -> float:
    return math.log2(8 * math.sqrt(2) * SIGMA * n + 6 * SIGMA * math.sqrt(n) + 16 * SIGMA * n)


def choose_parameters(max_parties: int, precision_bits: int = DEFAULT_PRECISION_BITS) -> dict[str, Any]:
    """The smallest 128-bit-secure addition-only CKKS parameters for values in [-1, 1]."""
    if not (isinstance(precision_bits, int) and 8 <= precision_bits <= 200):
        raise ProtectionError(f"precision_bits must be an integer in [8, 200], got {precision_bits!r}")
    p_bits = math.ceil(math.log2(max_parties)) if max_parties > 1 else 0
    for n, limit in HE_STANDARD_128.items():
        scale_bits = math.ceil(math.log2(max_parties) + fresh_noise_bits(n)) + precision_bits
        q_bits = p_bits + scale_bits + 3
        primes = math.ceil(q_bits / _MAX_PRIME_BITS)
        data = [math.ceil(q_bits / primes)] * primes
        if sum(data) + SPECIAL_PRIME_BITS <= limit:
            return {"poly_modulus_degree": n, "coeff_mod_bit_sizes": data + [SPECIAL_PRIME_BITS],
                    "scale_bits": scale_bits, "precision_bits": precision_bits, "slots": n // 2,
                    "error_bits": math.log2(max_parties) + fresh_noise_bits(n) - scale_bits}
    raise ProtectionError(f"no 128-bit-secure CKKS parameters hold {max_parties} parties at "
                          f"{precision_bits} bits of precision")


def grid_bits(error_bits: float, max_parties: int) -> int:
    """The integer grid 2^-g the decrypted sum is rounded to: the error (below 2^error_bits) stays under a
    quarter step, and P · 2^(g+1) < q keeps every structured shift out of the bound (docs/integrity.md)."""
    return min(math.floor(-error_bits) - 2, 59 - math.ceil(math.log2(max(max_parties, 2))))


class CkksAccumulator(RunningSum):
    """One running ciphertext per frame of slots, whatever the party count."""

    def __init__(self, pub: _wire.Public, context: Any, n_values: int, ctx: StatContext) -> None:
        super().__init__("ckks", pub, n_values, ctx, pub.meta["slots"])
        self._context = context
        self._total = n_values + self._tags
        self._sum: list[Any] = [None] * _wire.n_frames(self._total, self._frame_values)
        self._reference = _reference_parms(context)

    def _add_frames(self, payload: Payload, who: str) -> None:
        slots = self._frame_values
        # parse every ciphertext before adding any: all or nothing
        vecs = [_load_checked(frame, self._context, min(slots, self._total - i * slots), self._public.meta,
                              self._reference, f"party {who!r} frame {i}")
                for i, frame in enumerate(payload.frames[:-EXTRA_FRAMES])]
        for i, vec in enumerate(vecs):
            if self._sum[i] is None:
                self._sum[i] = vec
            else:
                self._sum[i] += vec

    def _sum_frames(self) -> tuple[Any, ...]:
        return tuple(s.serialize() for s in self._sum)

    def _sum_bytes(self) -> int:
        return sum(_ciphertext_bytes(self._public.meta) for s in self._sum if s is not None)


def _ciphertext_bytes(meta: dict[str, Any]) -> int:
    """The memory of one running ciphertext: 2 polynomials x N coefficients x primes x 8 bytes."""
    return 2 * int(meta["poly_modulus_degree"]) * (len(meta["coeff_mod_bit_sizes"]) - 1) * 8


def _reference_parms(context: Any) -> list[int]:
    import tenseal as ts

    return list(ts.ckks_vector(context, [0.0]).ciphertext()[0].parms_id())


def ciphertext_limit(meta: dict[str, Any]) -> int:
    """The most bytes of one serialised ciphertext: 2 polynomials of N coefficients x primes x u64, plus framing."""
    return 2 * int(meta["poly_modulus_degree"]) * (len(meta["coeff_mod_bit_sizes"]) - 1) * 8 + 65536


def _load_checked(frame: Any, context: Any, count: int, meta: dict[str, Any], reference: list[int],
                  where: str) -> Any:
    """Parse one ciphertext under the session context and check it belongs to it."""
    import tenseal as ts

    n = meta["poly_modulus_degree"]
    primes = len(meta["coeff_mod_bit_sizes"]) - 1
    limit = ciphertext_limit(meta)
    data = bytes(memoryview(frame).cast("B"))
    if not data or len(data) > limit:
        raise ProtectionError(f"{where}: {len(data)} bytes is not a ciphertext of this session")
    try:
        vec = ts.ckks_vector_from(context, _one_ciphertext(data, limit))
        cts = vec.ciphertext()
    except (ValueError, RuntimeError, TypeError, zstandard.ZstdError):
        raise ProtectionError(f"{where}: ciphertext does not parse under the session context "
                              "(another context, truncated or altered)") from None
    if vec.size() != count or len(cts) != 1:
        raise ProtectionError(f"{where}: ciphertext holds {vec.size()} values, expected {count}")
    ct = cts[0]
    if (ct.size() != 2 or ct.poly_modulus_degree() != n or ct.coeff_modulus_size() != primes
            or not ct.is_ntt_form() or list(ct.parms_id()) != reference):
        raise ProtectionError(f"{where}: ciphertext is not at the session context's parameters")
    if ct.scale != 2.0 ** meta["scale_bits"]:
        raise ProtectionError(f"{where}: ciphertext scale 2^{math.log2(ct.scale):.1f} differs from the "
                              f"session's 2^{meta['scale_bits']}")
    return vec


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[i]
        value, i, shift = value | (byte & 0x7F) << shift, i + 1, shift + 7
        if not byte & 0x80:
            return value, i


_SEAL_MAGIC, _SEAL_HEADER, _SEAL_NONE, _SEAL_ZSTD = 0xA15E, 16, 0, 2


def _one_ciphertext(data: bytes, limit: int) -> bytes:
    """A received CKKSVector, re-encoded with exactly one *uncompressed* ciphertext of at most ``limit``
    bytes, before TenSEAL sees it. TenSEAL would otherwise parse every ciphertext the message lists and
    SEAL inflate each zstd stream without an output bound: a few kilobytes of run-length blocks become
    gigabytes (a decompression bomb) before the one-ciphertext check could run.

    TenSEAL's message (tensors.proto): 1 = sizes (packed uint32), 2 = ciphertexts (SEAL serialisations),
    3 = scale (double); SEAL's 16-byte header: magic 0xA15E, header size, version, compression mode,
    reserved, total size (uint64)."""
    import struct

    fields: list[tuple[int, int, bytes]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, i = _varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        else:
            raise ValueError("unexpected field type")
        if i > len(data):
            raise ValueError("truncated field")
        fields.append((number, wire, value))
    if [(f, w) for f, w, _ in fields] != [(1, 2), (2, 2), (3, 1)]:
        raise ValueError("not exactly one ciphertext")
    blob = fields[1][2]
    if len(blob) < _SEAL_HEADER:
        raise ValueError("truncated ciphertext")
    magic, header_size, major, minor, mode, _, total = struct.unpack("<HBBBBHQ", blob[:_SEAL_HEADER])
    if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER or total != len(blob):
        raise ValueError("not a SEAL serialisation")
    if mode == _SEAL_ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob[_SEAL_HEADER:]))
        body = reader.read(limit + 1)
        while len(body) <= limit and (more := reader.read(limit + 1 - len(body))):
            body += more
        if len(body) > limit:
            raise ValueError("ciphertext inflates beyond one ciphertext of this session")
    elif mode == _SEAL_NONE:
        body = blob[_SEAL_HEADER:]
    else:
        raise ValueError("unsupported compression")
    header = struct.pack("<HBBBBHQ", _SEAL_MAGIC, _SEAL_HEADER, major, minor, _SEAL_NONE, 0, _SEAL_HEADER + len(body))
    ciphertext = header + body

    def field(number: int, value: bytes) -> bytes:
        return bytes([number << 3 | 2]) + _leb128(len(value)) + value

    return field(1, fields[0][2]) + field(2, ciphertext) + bytes([3 << 3 | 1]) + fields[2][2]


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
