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

Checks: a received ciphertext must name the session's public-parameter digest, parse under the session
context, hold exactly its chunk's slot count, two polynomials of degree N at the data level, the
session's scale, and the session's parms_id. A ciphertext under another key with the same parameters
cannot be told apart without the secret key: the solver refuses a decrypted sum over P·bound.
Before release the solver rounds the sum to a power-of-two grid at the precision bound, so the low-order
noise bits (which carry key-dependent information, Li-Micciancio 2021) are not released.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _wire
from .base import (
    Accumulator,
    Payload,
    ProtectionError,
    ProtectionParams,
    ProtectionScheme,
    SolverKeys,
    StatContext,
)
from .encoding import check_bound, check_values

HE_STANDARD_128 = {2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}  # max log2(q), 128-bit classical
SIGMA = 3.2
SPECIAL_PRIME_BITS = 20
DEFAULT_PRECISION_BITS = 30
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


class CkksScheme(ProtectionScheme):
    mode = "ckks"

    def __init__(self) -> None:
        self._contexts: dict[str, Any] = {}  # public digest -> parsed public context (parsing is ~ms)

    def solver_setup(self, params: ProtectionParams) -> SolverKeys:
        import tenseal as ts

        if params.mode != self.mode:
            raise ProtectionError(f"params are for mode {params.mode!r}, not {self.mode!r}")
        check_bound(params.bound, params.max_parties, params.min_parties)
        unknown = set(params.extra) - {"precision_bits"}
        if unknown:
            raise ProtectionError(f"unknown ckks parameters {sorted(unknown)}")
        chosen = choose_parameters(params.max_parties, params.extra.get("precision_bits",
                                                                        DEFAULT_PRECISION_BITS))
        secret = ts.context(ts.SCHEME_TYPE.CKKS, chosen["poly_modulus_degree"],
                            coeff_mod_bit_sizes=chosen["coeff_mod_bit_sizes"])
        secret.global_scale = 2.0 ** chosen["scale_bits"]
        body = secret.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                save_relin_keys=False)
        meta = {"v": _wire.VERSION, "mode": self.mode, "bound": float(params.bound),
                "bound_bits": math.ceil(math.log2(params.bound)), "max_parties": params.max_parties,
                "min_parties": params.min_parties, **chosen}
        return SolverKeys(params, _wire.encode_public(meta, body), secret)

    def _session(self, public: bytes) -> tuple[_wire.Public, Any]:
        import tenseal as ts

        pub = _wire.decode_public(public, self.mode)
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
        return pub, self._contexts[pub.digest]

    def protect(self, values: np.ndarray, ctx: StatContext, public: bytes) -> Payload:
        import tenseal as ts

        pub, context = self._session(public)
        if not ctx.party:
            raise ProtectionError("protect() needs the party's context (ctx.party is empty)")
        check_values(values, pub.meta["bound"], ctx)
        scaled = np.ldexp(values, -pub.meta["bound_bits"])  # exact; entries now in [-1, 1]
        slots = pub.meta["slots"]
        frames = tuple(ts.ckks_vector(context, scaled[i : i + slots]).serialize()
                       for i in range(0, scaled.shape[0], slots))
        return Payload(_wire.party_header(self.mode, ctx, values.shape[0], slots, pub), frames)

    def accumulator(self, public: bytes, n_values: int, ctx: StatContext) -> CkksAccumulator:
        pub, context = self._session(public)
        return CkksAccumulator(pub, context, n_values, ctx)

    def open(self, aggregate: Payload, secrets: SolverKeys, ctx: StatContext) -> np.ndarray:
        pub = _wire.decode_public(secrets.public, self.mode)
        m = pub.meta
        n, parties = _wire.check_aggregate_header(aggregate, ctx, secrets.params.min_parties,
                                                  m["max_parties"])
        _wire.check_payload(aggregate, mode=self.mode, kind="aggregate", ctx=ctx, n_values=n,
                            chunk=m["slots"], public=pub, extra_frames=0)
        reference = _reference_parms(secrets.secret)
        total = np.empty(n, dtype=np.float64)
        for i, frame in enumerate(aggregate.frames):
            count = min(m["slots"], n - i * m["slots"])
            vec = _load_checked(frame, secrets.secret, count, m, reference, f"aggregate frame {i}")
            total[i * m["slots"] : i * m["slots"] + count] = vec.decrypt()
        # Under the right key |sum| <= parties (entries in [-1, 1]) plus tiny noise. Garbage from a
        # ciphertext under another key, or altered bytes, is uniform mod q: far larger, or not finite.
        limit = len(parties) * (1 + 2.0 ** -m["precision_bits"])
        if not np.all(np.isfinite(total)) or float(np.max(np.abs(total))) > limit:
            raise ProtectionError("decrypted aggregate exceeds parties x bound: a ciphertext was made under "
                                  "another key or was altered")
        # round to the precision grid (power of two at or above the error bound), then undo the pre-scale
        step_bits = math.ceil(m["error_bits"])  # error_bits already covers max_parties noises
        np.ldexp(np.rint(np.ldexp(total, -step_bits)), step_bits + m["bound_bits"], out=total)
        return total


class CkksAccumulator(Accumulator):
    """One running ciphertext per chunk of slots, whatever the party count."""

    def __init__(self, pub: _wire.Public, context: Any, n_values: int, ctx: StatContext) -> None:
        if ctx.party:
            raise ProtectionError("an accumulator is for an aggregate: its context has no party")
        if not isinstance(n_values, int) or n_values <= 0:
            raise ProtectionError(f"n_values must be a positive integer, got {n_values!r}")
        self._pub, self._context, self._n, self._ctx = pub, context, n_values, ctx
        self._slots = pub.meta["slots"]
        self._sum: list[Any] = [None] * _wire.n_chunks(n_values, self._slots)
        self._parties: list[str] = []
        self._reference = _reference_parms(context)
        self._closed = False

    def add(self, payload: Payload, party: str | None = None) -> None:
        if self._closed:
            raise ProtectionError("this statistic was already aggregated: no more contributions")
        _wire.check_payload(payload, mode="ckks", kind="party", ctx=self._ctx, n_values=self._n,
                            chunk=self._slots, public=self._pub, extra_frames=0)
        who = _wire.admit_party(payload, party, self._parties, self._pub.meta["max_parties"])
        first = not self._parties
        done = 0
        try:
            for i, frame in enumerate(payload.frames):
                count = min(self._slots, self._n - i * self._slots)
                vec = _load_checked(frame, self._context, count, self._pub.meta, self._reference,
                                    f"party {who!r} frame {i}")
                if first:
                    self._sum[i] = vec
                else:
                    self._sum[i] += vec
                done = i + 1
        except ProtectionError:
            # all or nothing: take back the chunks already added (exact: ciphertext arithmetic mod q)
            for i in range(done):
                if first:
                    self._sum[i] = None
                else:
                    self._sum[i] -= _load_checked(payload.frames[i], self._context,
                                                  min(self._slots, self._n - i * self._slots),
                                                  self._pub.meta, self._reference, "rollback")
            raise
        self._parties.append(who)

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(self._parties)

    @property
    def held_bytes(self) -> int:
        n, primes = self._pub.meta["poly_modulus_degree"], len(self._pub.meta["coeff_mod_bit_sizes"]) - 1
        return sum(2 * n * primes * 8 for s in self._sum if s is not None)  # 2 polys x N x primes x u64

    def aggregate(self) -> Payload:
        if not self._parties:
            raise ProtectionError("no party has contributed yet")
        header = _wire.aggregate_header("ckks", self._ctx, self._n, self._slots, self._pub, self.parties)
        self._closed = True  # one aggregate per statistic: later contributions are refused
        return Payload(header, tuple(s.serialize() for s in self._sum))


def _reference_parms(context: Any) -> list[int]:
    import tenseal as ts

    return list(ts.ckks_vector(context, [0.0]).ciphertext()[0].parms_id())


def _load_checked(frame: Any, context: Any, count: int, meta: dict[str, Any], reference: list[int],
                  where: str) -> Any:
    """Parse one ciphertext under the session context and check it belongs to it."""
    import tenseal as ts

    n = meta["poly_modulus_degree"]
    primes = len(meta["coeff_mod_bit_sizes"]) - 1
    size = len(memoryview(frame).cast("B"))
    if size == 0 or size > 2 * n * primes * 8 + 65536:  # over a full ciphertext plus framing
        raise ProtectionError(f"{where}: {size} bytes is not a ciphertext of this session")
    try:
        vec = ts.ckks_vector_from(context, bytes(frame))
        cts = vec.ciphertext()
    except (ValueError, RuntimeError, TypeError):
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
