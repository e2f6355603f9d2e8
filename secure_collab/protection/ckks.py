"""``ckks`` mode: TenSEAL CKKS, addition only, a fresh key per session at the solver.

Parameters (``choose_parameters``). Values are pre-scaled by 2^-b, b = ceil(log2(bound)), so each party
encrypts entries in [-1, 1] (exact: a power of two). For P = max_parties, a target precision of
2^-prec relative to the bound, and ring degree N:

    fresh-noise bound  B(N) = 8·√2·σ·N + 6·σ·√N + 16·σ·N      (σ = 3.2; canonical-embedding bound of a
                                                              public-key encryption, h ≤ N)
    scale              Δ = 2^s,  s = ceil(log2(P·B(N))) + prec   so P·B(N)/Δ ≤ 2^-prec
    data modulus       q_bits = ceil(log2 P) + s + 3             so |sum|·Δ + noise < q/2
    special prime      20 bits (TenSEAL always makes a key-switching prime; we never key-switch)

and N is the smallest power of two in 2048..32768 with q_bits + 20 within the 128-bit classical limit of
the HomomorphicEncryption.org Security Standard (Albrecht et al., 2018, Table 1, ternary secret, σ ≈ 3.2):
N = 2048: 54 bits, 4096: 109, 8192: 218, 16384: 438, 32768: 881 (SEAL enforces the same table).
No rescaling or key switching happens, so one data prime (split into several if q_bits > 60) suffices.

Exact integers (protocol v2). A party quantises each pre-scaled value to a grid 2^-g,
g = min(⌊−error_bits⌋ − 2, 59 − ⌈log2 P⌉) (``grid_bits``), and encrypts the integers u (|u| ≤ 2^g, the
integrity tag limbs appended) divided by 2^g. The decryption error of a sum of P ciphertexts stays below a
quarter of the grid step, so the solver recovers Σ u exactly by rounding and checks the integrity MAC on
it (docs/integrity.md): the released statistics carry no CKKS noise at all, so no key-dependent low-order
bits (Li-Micciancio 2021) leave the solver.

Checks: a received ciphertext must name the session's public-parameter digest, parse under the session
context, hold exactly its frame's slot count, two polynomials of degree N at the data level, the
session's scale, and the session's parms_id. A ciphertext under another key with the same parameters
cannot be told apart without the secret key: its decryption is out of range or fails the MAC.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import zstandard

from . import _wire, integrity
from .base import (
    Accumulator,
    Authenticated,
    Buffer,
    IntegrityError,
    Payload,
    ProtectionError,
    ProtectionParams,
    SolverKeys,
    StatContext,
)
from .scheme import SEALED_SEED_BYTES, ProtectionScheme

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


# public parameters used as shift counts, slot counts and sizes
_INT_FIELDS = ("poly_modulus_degree", "scale_bits", "slots", "bound_bits", "grid_bits",
               "frac_bits", "limb_bits", "frame_values")


class CkksScheme(ProtectionScheme):
    mode = "ckks"

    def __init__(self) -> None:
        self._contexts: dict[str, Any] = {}  # public digest -> parsed public context (parsing is ~ms)

    def _public_meta(self, params: ProtectionParams) -> tuple[dict[str, Any], bytes, Any]:
        import tenseal as ts

        unknown = set(params.extra) - {"precision_bits"}
        if unknown:
            raise ProtectionError(f"unknown ckks parameters {sorted(unknown)}")
        chosen = choose_parameters(params.max_parties, params.extra.get("precision_bits",
                                                                        DEFAULT_PRECISION_BITS))
        grid = grid_bits(chosen["error_bits"], params.max_parties)
        if grid < 8:
            raise ProtectionError(f"ckks precision_bits={chosen['precision_bits']} leaves a {grid}-bit grid; the "
                                  "exact sums and their integrity tags need at least 8 (precision_bits >= 12)")
        secret = ts.context(ts.SCHEME_TYPE.CKKS, chosen["poly_modulus_degree"],
                            coeff_mod_bit_sizes=chosen["coeff_mod_bit_sizes"])
        secret.global_scale = 2.0 ** chosen["scale_bits"]
        body = secret.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                save_relin_keys=False)
        bound_bits = math.ceil(math.log2(params.bound))
        meta = {**chosen, "bound_bits": bound_bits, "grid_bits": grid, "frac_bits": grid - bound_bits,
                "limb_bits": min(31, grid), "frame_values": chosen["slots"]}
        return meta, body, secret

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

    def export_secret(self, secret: Any) -> bytes:
        return bytes(secret.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                      save_relin_keys=False))

    def import_secret(self, blob: bytes, pub: _wire.Public) -> Any:
        import tenseal as ts

        context = ts.context_from(blob)
        if not context.has_secret_key():
            raise ProtectionError("the stored ckks context has no secret key")
        return context

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

    def _hide(self, vector: np.ndarray, seed: bytes, ctx: StatContext, pub: _wire.Public) -> tuple[Buffer, ...]:
        import tenseal as ts

        context = self._context_for(pub)
        scaled = np.ldexp(vector.astype(np.float64), -pub.meta["grid_bits"])  # exact: |u| ≤ 2^grid
        slots = pub.meta["slots"]
        return tuple(ts.ckks_vector(context, scaled[i : i + slots]).serialize()
                     for i in range(0, scaled.shape[0], slots))

    def _unhide(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext, auth: Authenticated,
                pub: _wire.Public) -> np.ndarray:
        m = pub.meta
        n = aggregate.header["n_values"] + aggregate.header["tag_values"]
        reference = _reference_parms(keys.secret)
        total = np.empty(n, dtype=np.float64)
        for i in range(_wire.n_chunks(n, m["slots"])):
            count = min(m["slots"], n - i * m["slots"])
            vec = _load_checked(aggregate.frames[i], keys.secret, count, m, reference, f"aggregate frame {i}")
            total[i * m["slots"] : i * m["slots"] + count] = vec.decrypt()
        np.ldexp(total, m["grid_bits"], out=total)
        # Under the right key the slots are integers Σ u_p plus noise below a quarter of the grid step.
        # Garbage (a ciphertext under another key, altered bytes) is uniform mod q: huge, or not finite.
        if not np.all(np.isfinite(total)) or float(np.max(np.abs(total))) >= 2.0**62:
            raise IntegrityError(f"{ctx.statistic} chunk {ctx.chunk} of layer {ctx.layer}",
                                 "range: decrypted values far out of range (another key, or altered bytes)")
        return np.rint(total).astype(np.int64)

    def _aggregate_bound(self, pub: _wire.Public, parties: int) -> int:
        return parties << int(pub.meta["grid_bits"])  # an int (_check_public)

    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> CkksAccumulator:
        pub, context = self._session(public)
        return CkksAccumulator(pub, context, n_values, ctx)


def grid_bits(error_bits: float, max_parties: int) -> int:
    """The integer grid 2^-g the decrypted sum is rounded to: the error (below 2^error_bits) stays under a
    quarter step, and P · 2^(g+1) < q keeps every structured shift out of the bound (docs/integrity.md)."""
    return min(math.floor(-error_bits) - 2, 59 - math.ceil(math.log2(max(max_parties, 2))))


class CkksAccumulator(Accumulator):
    """One running ciphertext per frame of slots, whatever the party count; seals and signatures beside."""

    def __init__(self, pub: _wire.Public, context: Any, n_values: int, ctx: StatContext) -> None:
        if ctx.party:
            raise ProtectionError("an accumulator is for an aggregate: its context has no party")
        if type(n_values) is not int or n_values <= 0:
            raise ProtectionError(f"n_values must be a positive integer, got {n_values!r}")
        self._pub, self._context, self._n, self._ctx = pub, context, n_values, ctx
        self._slots = pub.meta["slots"]
        self._tags = integrity.tag_values(pub.meta["limb_bits"])
        self._total = n_values + self._tags
        self._sum: list[Any] = [None] * _wire.n_chunks(self._total, self._slots)
        self._parties: list[str] = []
        self._extras: list[bytes] = []
        self._reference = _reference_parms(context)
        self._closed = False

    def add(self, payload: Payload, party: str | None = None) -> None:
        if self._closed:
            raise ProtectionError("this statistic was already aggregated: no more contributions")
        _wire.check_payload(payload, mode="ckks", kind="party", ctx=self._ctx, n_values=self._n,
                            chunk=self._slots, public=self._pub, extra_frames=2, tag_values=self._tags)
        who = _wire.admit_party(payload, party, self._parties, self._pub.meta["max_parties"])
        sealed, signature = (bytes(f) for f in payload.frames[-2:])
        if len(sealed) != SEALED_SEED_BYTES or len(signature) != 64:
            raise ProtectionError(f"a party payload ends with a {SEALED_SEED_BYTES}-byte sealed seed and a "
                                  "64-byte signature")
        # parse every ciphertext before adding any: all or nothing
        vecs = [_load_checked(frame, self._context, min(self._slots, self._total - i * self._slots),
                              self._pub.meta, self._reference, f"party {who!r} frame {i}")
                for i, frame in enumerate(payload.frames[:-2])]
        for i, vec in enumerate(vecs):
            if self._sum[i] is None:
                self._sum[i] = vec
            else:
                self._sum[i] += vec
        self._parties.append(who)
        self._extras.extend((sealed, signature))

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(self._parties)

    @property
    def held_bytes(self) -> int:
        n, primes = int(self._pub.meta["poly_modulus_degree"]), len(self._pub.meta["coeff_mod_bit_sizes"]) - 1
        held = sum(2 * n * primes * 8 for s in self._sum if s is not None)  # 2 polys x N x primes x u64
        return held + sum(len(e) for e in self._extras)

    def aggregate(self) -> Payload:
        if not self._parties:
            raise ProtectionError("no party has contributed yet")
        header = _wire.aggregate_header("ckks", self._ctx, self._n, self._slots, self._pub, self.parties)
        self._closed = True  # one aggregate per statistic: later contributions are refused
        return Payload(header, tuple(s.serialize() for s in self._sum) + tuple(self._extras))


def _reference_parms(context: Any) -> list[int]:
    import tenseal as ts

    return list(ts.ckks_vector(context, [0.0]).ciphertext()[0].parms_id())


def _load_checked(frame: Any, context: Any, count: int, meta: dict[str, Any], reference: list[int],
                  where: str) -> Any:
    """Parse one ciphertext under the session context and check it belongs to it."""
    import tenseal as ts

    n = meta["poly_modulus_degree"]
    primes = len(meta["coeff_mod_bit_sizes"]) - 1
    limit = 2 * n * primes * 8 + 65536  # a full ciphertext (2 polynomials) plus framing
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
    import io
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
