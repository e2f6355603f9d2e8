"""``shares`` mode: two-server additive secret sharing over Z_2^64 with fixed-point values.

A party encodes x as round(x * 2^f) in Z_2^64, draws a fresh 256-bit seed, and sends
masked = x - PRG(seed) (mod 2^64) to the coordinator and the seed sealed to the solver's X25519 key:

    mask key   = HKDF-SHA256(seed, salt=None, info="secure-collab/v1/mask|" + ctx.label())   (32 B)
    PRG(seed)  = AES-256-CTR keystream (counter block 0), read as little-endian uint64
    sealed     = E || ChaCha20-Poly1305(k, nonce=0, seed, ad=ctx.label()),   80 bytes, where
                 E = X25519(e, 9) for a fresh ephemeral e, k = HKDF-SHA256(X25519(e, S), salt=E || S,
                 info="secure-collab/v1/seal-seed|" + ctx.label()), S = the solver's session public key

``ctx.label()`` binds session, round, layer, statistic and party. The coordinator adds masked vectors
into one uint64 running sum and forwards the sealed seeds unread; the solver opens the seeds of exactly
the listed parties and adds their masks back. The share the coordinator holds is uniform in Z_2^64 and
independent of x (a one-time pad under AES-CTR's PRF security); the solver sees only seeds and the sum.
"""

from __future__ import annotations

import numpy as np

from . import _primitives as hazmat
from . import _wire
from ._array import ArrayAccumulator, read_aggregate
from .base import Payload, ProtectionError, ProtectionParams, ProtectionScheme, SolverKeys, StatContext
from .encoding import check_bound, check_values, decode_fixed, encode_fixed, fixed_point_bits

CHUNK = 1 << 17  # values per frame (1 MiB of uint64)
SEED_BYTES = 32
SEALED_BYTES = 32 + SEED_BYTES + 16  # ephemeral public key, seed, Poly1305 tag
_MASK_INFO = b"secure-collab/v1/mask|"
_SEAL_INFO = b"secure-collab/v1/seal-seed|"
_COUNTER0 = bytes(16)
_AUTH_FAILED = "authentication failed"  # the one message for every failed open, whatever the cause


# --- recipes -------------------------------------------------------------------------------------


def mask_stream(seed: bytes, ctx: StatContext) -> hazmat.Keystream:
    """The mask PRG for one party's statistic: fill buffers with ``.fill(memoryview)``."""
    if len(seed) != SEED_BYTES:
        raise ProtectionError(f"a mask seed has {SEED_BYTES} bytes")
    key = hazmat.hkdf_sha256(seed, None, _MASK_INFO + ctx.label(), 32)
    return hazmat.Keystream(key, _COUNTER0)


def mask_vector(encoded: np.ndarray, seed: bytes, ctx: StatContext, sign: int) -> None:
    """In place: encoded += sign * PRG(seed) (mod 2^64), one reused 1 MiB keystream buffer."""
    stream = mask_stream(seed, ctx)
    buf = np.empty(min(CHUNK, encoded.shape[0]), dtype=np.uint64)
    op = np.add if sign > 0 else np.subtract
    for start in range(0, encoded.shape[0], CHUNK):
        part = encoded[start : start + CHUNK]
        mask = buf[: part.shape[0]]
        stream.fill(mask.data)
        op(part, mask, out=part)


def seal_seed_for_solver(seed: bytes, ctx: StatContext, solver_public: bytes, ephemeral: bytes) -> bytes:
    """Seal a seed to the solver; ``ephemeral`` is a fresh 32-byte X25519 private key."""
    eph_public = hazmat.x25519_public(ephemeral)
    try:
        shared = hazmat.x25519(ephemeral, solver_public)
    except hazmat.AuthenticationFailed as exc:
        raise ProtectionError("the solver's public key is not a valid X25519 key") from exc
    key = hazmat.hkdf_sha256(shared, eph_public + solver_public, _SEAL_INFO + ctx.label(), 32)
    return eph_public + hazmat.aead_seal(key, seed, ctx.label())


def open_sealed_seed(sealed: bytes, ctx: StatContext, solver_private: bytes) -> bytes:
    """Solver side. Any failure (length, low-order point, tag, wrong context) is the same error."""
    try:
        if len(sealed) != SEALED_BYTES:
            raise hazmat.AuthenticationFailed()
        eph_public = sealed[:32]
        solver_public = hazmat.x25519_public(solver_private)
        shared = hazmat.x25519(solver_private, eph_public)
        key = hazmat.hkdf_sha256(shared, eph_public + solver_public, _SEAL_INFO + ctx.label(), 32)
        return hazmat.aead_open(key, sealed[32:], ctx.label())
    except hazmat.AuthenticationFailed:
        raise ProtectionError(f"sealed seed of party {ctx.party!r}: {_AUTH_FAILED}") from None


# --- the scheme ----------------------------------------------------------------------------------


class SharesScheme(ProtectionScheme):
    mode = "shares"

    def solver_setup(self, params: ProtectionParams) -> SolverKeys:
        return self._setup_from_parts(params, hazmat.random_bytes(32))

    def _setup_from_parts(self, params: ProtectionParams, solver_private: bytes) -> SolverKeys:
        if params.mode != self.mode:
            raise ProtectionError(f"params are for mode {params.mode!r}, not {self.mode!r}")
        check_bound(params.bound, params.max_parties, params.min_parties)
        meta = {"v": _wire.VERSION, "mode": self.mode, "bound": float(params.bound),
                "max_parties": params.max_parties, "min_parties": params.min_parties,
                "frac_bits": fixed_point_bits(params.bound, params.max_parties),
                "solver_x25519": hazmat.x25519_public(solver_private).hex()}
        return SolverKeys(params, _wire.encode_public(meta), solver_private)

    def _public(self, public: bytes) -> _wire.Public:
        pub = _wire.decode_public(public, self.mode)
        m = pub.meta
        try:
            check_bound(m["bound"], m["max_parties"], m["min_parties"])
            consistent = m["frac_bits"] == fixed_point_bits(m["bound"], m["max_parties"])
            key = bytes.fromhex(m["solver_x25519"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtectionError(f"shares public parameters are malformed: {exc}") from None
        if not consistent or len(key) != 32:
            raise ProtectionError("shares public parameters are inconsistent (scale or solver key)")
        return pub

    def protect(self, values: np.ndarray, ctx: StatContext, public: bytes) -> Payload:
        return self._protect_from_parts(values, ctx, public, hazmat.random_bytes(SEED_BYTES),
                                        hazmat.random_bytes(32))

    def _protect_from_parts(self, values: np.ndarray, ctx: StatContext, public: bytes, seed: bytes,
                            ephemeral: bytes) -> Payload:
        pub = self._public(public)
        if not ctx.party:
            raise ProtectionError("protect() needs the party's context (ctx.party is empty)")
        check_values(values, pub.meta["bound"], ctx)
        masked = encode_fixed(values, pub.meta["frac_bits"])  # fresh buffer, masked in place below
        mask_vector(masked, seed, ctx, sign=-1)
        sealed = seal_seed_for_solver(seed, ctx, bytes.fromhex(pub.meta["solver_x25519"]), ephemeral)
        header = _wire.party_header(self.mode, ctx, values.shape[0], CHUNK, pub)
        return Payload(header, _wire.chunk_frames(masked, CHUNK) + (sealed,))

    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> ArrayAccumulator:
        return _SharesAccumulator(self.mode, "uint64", CHUNK, self._public(public), n_values, ctx,
                                  extra_frames=1)

    def open_encoded(self, aggregate: Payload, secrets: SolverKeys, ctx: StatContext) -> np.ndarray:
        """The exact fixed-point sum (uint64, two's complement) of the included parties."""
        pub = self._public(secrets.public)
        total, parties = read_aggregate(aggregate, self.mode, "uint64", CHUNK, pub, ctx,
                                        secrets.params.min_parties, secrets.params.max_parties, 1)
        sealed = aggregate.frames[len(aggregate.frames) - len(parties) :]
        # open every seed before touching the sum: one bad seal refuses the whole aggregate
        seeds = [open_sealed_seed(bytes(s), ctx.for_party(p), secrets.secret)
                 for s, p in zip(sealed, parties, strict=True)]
        for seed, party in zip(seeds, parties, strict=True):
            mask_vector(total, seed, ctx.for_party(party), sign=+1)
        return total

    def open(self, aggregate: Payload, secrets: SolverKeys, ctx: StatContext) -> np.ndarray:
        frac_bits = self._public(secrets.public).meta["frac_bits"]
        return decode_fixed(self.open_encoded(aggregate, secrets, ctx), frac_bits)


class _SharesAccumulator(ArrayAccumulator):
    def _check_extras(self, extras: list[bytes]) -> None:
        if len(extras) != 1 or len(extras[0]) != SEALED_BYTES:
            raise ProtectionError(f"the sealed seed frame must have {SEALED_BYTES} bytes")
