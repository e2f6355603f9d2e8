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

from . import _wire
from .base import (
    Authenticated,
    Buffer,
    IntegrityError,
    Payload,
    ProtectionError,
    ProtectionParams,
    SolverKeys,
    StatContext,
)
from .ckks_public import (
    DEFAULT_PRECISION_BITS,
    HE_STANDARD_128,
    CkksAccumulator,
    CkksPublic,
    _load_checked,
    _reference_parms,
    choose_parameters,
    ciphertext_limit,
    fresh_noise_bits,
    grid_bits,
)
from .scheme import ProtectionScheme

__all__ = ["DEFAULT_PRECISION_BITS", "HE_STANDARD_128", "CkksAccumulator", "CkksPublic", "CkksScheme",
           "choose_parameters", "fresh_noise_bits", "grid_bits"]

class CkksScheme(CkksPublic, ProtectionScheme):
    """The public side (``ckks_public.CkksPublic``) plus key generation, encryption and decryption."""

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

    def export_secret(self, secret: Any) -> bytes:
        return bytes(secret.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                      save_relin_keys=False))

    def import_secret(self, blob: bytes, pub: _wire.Public) -> Any:
        import tenseal as ts

        context = ts.context_from(blob)
        if not context.has_secret_key():
            raise ProtectionError("the stored ckks context has no secret key")
        return context

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
        for i in range(_wire.n_frames(n, m["slots"])):
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

    def _frame_bytes(self, pub: _wire.Public, count: int) -> int:
        return ciphertext_limit(pub.meta)
