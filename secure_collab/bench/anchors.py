"""What a user would pick instead, on our own G and B vectors: Flower's SecAgg+ masking and NVFlare's CKKS.

Flower (``flwr``, the optional ``bench`` extra): the client path of ``flwr.client.mod.secure_aggregation.
secaggplus_mod`` and the server's unmasking in ``secaggplus_workflow``, with Flower's own functions: ``quantize``
(stochastic rounding of [-clip, clip] onto [0, quantization_range]), a private mask and one pairwise mask per
neighbour from ``pseudo_rand_gen`` (pairwise seeds from ``generate_shared_key``, ECDH on SECP384R1 + HKDF),
``parameters_addition`` / ``parameters_subtraction`` / ``parameters_mod`` for the masked sum, and ``dequantize``
with the workflow's offset −(P−1)·clip. Every other party is a neighbour (SecAgg+ with ``num_shares`` = P,
the most masking work per party); the Shamir sharing of the mask seeds (a few hundred bytes per party) and the
weighting factor Flower prepends are left out. Bytes: ``ndarray_to_bytes`` of the masked int64 vector, as the
client uploads it. Flower's default quantisation (2^22 levels in a 2^32 modulus) and the finest its int32
quantiser and 2^32 modulus allow for P parties are both measured; the clipping range is our declared bound.

NVFlare: the context of its ``HEBuilder`` (CKKS, N = 8192, coefficient moduli [60, 40, 40], scale 2^40,
Galois keys) and its ``HEModelEncryptor``'s call ``ts.ckks_vector(context, values).serialize()``, here one call
per 4,096 values (what TenSEAL does inside for a longer vector, without its warning); the server adds the
ciphertexts (``IntimeAccumulateModelAggregator``) and the client decrypts.

Rates are process CPU seconds per million values, as ``measure_mode`` reports ours, so the rows compare.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

NVFLARE_CKKS: dict[str, Any] = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40], "scale_bits": 40}
FLOWER_DEFAULT = {"quantization_range": 1 << 22, "modulus_range": 1 << 32}


def flower_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("flwr") is not None


def _errors(total: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    abs_err = float(np.max(np.abs(total - truth)))
    scale = float(np.max(np.abs(truth)))
    return {"max_abs_err": abs_err, "max_rel_err": abs_err / scale if scale > 0 else abs_err}


def _rates(n: int, parties: int, t: dict[str, float]) -> dict[str, float]:
    mvalues = n / 1e6
    return {"protect_seconds_per_mvalue": t["protect"] / (parties * mvalues),
            "accumulate_seconds_per_mvalue": t["add"] / (parties * mvalues),
            "open_seconds_per_mvalue": t["open"] / mvalues}


def flower_finest(parties: int) -> dict[str, int]:
    """The most quantisation levels Flower allows for P parties: Σ of P values stays below the 2^32 modulus
    (``modulus_range`` must not exceed 2^32) and each level fits the int32 its quantiser casts to."""
    levels = min(1 << 30, 1 << int(math.floor(math.log2((1 << 32) / parties))))
    return {"quantization_range": levels, "modulus_range": 1 << 32}


def measure_flower(vectors: list[np.ndarray], clipping_range: float, quantization_range: int,
                   modulus_range: int) -> dict[str, Any]:
    """Flower's SecAgg+ masking path on each party's float64 vector; figures as our ``measure_mode``."""
    from flwr.common import ndarray_to_bytes
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize, quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import generate_key_pairs

    from secure_collab.protection.sealing import fresh_bytes as random_bytes

    parties, n = len(vectors), vectors[0].shape[0]
    dims: list[tuple[int, ...]] = [(int(n),)]
    keys = [generate_key_pairs() for _ in range(parties)]  # (sk1, pk1) per party, as the setup stage makes
    seeds = [random_bytes(32) for _ in range(parties)]  # each party's private-mask seed (Flower: os.urandom)
    t = {"protect": 0.0, "add": 0.0, "open": 0.0}
    total: list[np.ndarray] | None = None
    sent = 0
    for i, vec in enumerate(vectors):
        start = time.process_time()
        masked = quantize([vec], clipping_range, quantization_range)
        masked = parameters_addition(masked, pseudo_rand_gen(seeds[i], modulus_range, dims))
        for j in range(parties):
            if j == i:
                continue
            shared = generate_shared_key(keys[i][0], keys[j][1])
            pairwise = pseudo_rand_gen(shared, modulus_range, dims)
            masked = (parameters_addition if i > j else parameters_subtraction)(masked, pairwise)
        masked = parameters_mod(masked, modulus_range)
        blob = ndarray_to_bytes(masked[0])  # what the client uploads
        t["protect"] += time.process_time() - start
        sent = len(blob) if i == 0 else sent
        start = time.process_time()
        total = masked if total is None else parameters_addition(total, masked)
        t["add"] += time.process_time() - start
    assert total is not None
    start = time.process_time()
    for seed in seeds:  # the server removes every active party's private mask (pairwise masks cancel)
        total = parameters_subtraction(total, pseudo_rand_gen(seed, modulus_range, dims))
    total = parameters_mod(total, modulus_range)
    opened = dequantize(total, clipping_range, quantization_range)[0] - (parties - 1) * clipping_range
    t["open"] += time.process_time() - start
    truth = np.sum(vectors, axis=0)
    return {"method": "flower-secagg+", "parties": parties, "n_values": n, "bytes_per_value": sent / n,
            "data_bytes_per_value": sent / n, "integrity_bytes": 0, **_errors(opened, truth), **_rates(n, parties, t),
            "parameters": {"clipping_range": clipping_range, "quantization_range": quantization_range,
                           "modulus_range": modulus_range, "neighbours": parties - 1}}


def measure_nvflare_ckks(vectors: list[np.ndarray]) -> dict[str, Any]:
    """NVFlare's TenSEAL CKKS parameters on each party's vector: encrypt, add on the server, decrypt."""
    import tenseal as ts

    p = NVFLARE_CKKS
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=p["poly_modulus_degree"],
                         coeff_mod_bit_sizes=p["coeff_mod_bit_sizes"])
    context.global_scale = 2.0 ** p["scale_bits"]
    context.generate_galois_keys()
    slots = p["poly_modulus_degree"] // 2
    parties, n = len(vectors), vectors[0].shape[0]
    t = {"protect": 0.0, "add": 0.0, "open": 0.0}
    total: list[Any] | None = None
    sent = 0
    for i, vec in enumerate(vectors):
        start = time.process_time()
        blobs = [ts.ckks_vector(context, vec[s : s + slots]).serialize() for s in range(0, n, slots)]
        t["protect"] += time.process_time() - start
        sent = sum(len(b) for b in blobs) if i == 0 else sent
        start = time.process_time()
        cts = [ts.ckks_vector_from(context, b) for b in blobs]  # the server parses what it received
        if total is None:
            total = cts
        else:
            for a, b in zip(total, cts, strict=True):
                a += b
        t["add"] += time.process_time() - start
        del blobs, cts
    assert total is not None
    start = time.process_time()
    opened = np.concatenate([np.asarray(c.decrypt()) for c in total])
    t["open"] += time.process_time() - start
    truth = np.sum(vectors, axis=0)
    return {"method": "nvflare-ckks", "parties": parties, "n_values": n, "bytes_per_value": sent / n,
            "data_bytes_per_value": sent / n, "integrity_bytes": 0, **_errors(opened, truth), **_rates(n, parties, t),
            "parameters": dict(p)}


def ckks_precision_for(abs_err: float, parties: int, bound: float) -> int:
    """The fewest ckks ``precision_bits`` whose exact-sum grid keeps our error at or below ``abs_err``: each
    party rounds to the grid 2^-frac_bits, so the sum of P is off by at most P·2^-(frac_bits+1)."""
    from secure_collab.protection.ckks import choose_parameters, grid_bits

    bound_bits = math.ceil(math.log2(bound))
    for bits in range(12, 120):
        chosen = choose_parameters(parties, bits)
        frac = grid_bits(chosen["error_bits"], parties) - bound_bits
        if parties * 2.0 ** -(frac + 1) <= abs_err:
            return bits
    raise ValueError(f"no ckks precision reaches an error of {abs_err:g} for {parties} parties")


def measure_all(vectors: list[np.ndarray], bound: float, progress: Any = None) -> dict[str, Any]:
    """Every method on the same vectors: ours (plain, shares, ckks at its default precision and at the error
    NVFlare reaches), NVFlare's CKKS, and Flower's SecAgg+ (default and finest quantisation) when installed."""
    from secure_collab.bench.protection import measure_mode

    parties, n = len(vectors), vectors[0].shape[0]
    say = progress or (lambda _msg: None)
    rows: dict[str, Any] = {}
    for mode in ("plain", "shares", "ckks"):
        say(f"anchors: ours, {mode}")
        rows[f"ours-{mode}"] = {"method": f"ours-{mode}", **measure_mode(
            mode, parties, n, lambda p: vectors[p], bound=bound, label="bench-anchors")}
    say("anchors: NVFlare CKKS")
    rows["nvflare-ckks"] = measure_nvflare_ckks(vectors)
    bits = ckks_precision_for(rows["nvflare-ckks"]["max_abs_err"], parties, bound)
    say(f"anchors: ours, ckks at NVFlare's error ({bits} precision bits)")
    rows["ours-ckks-matched"] = {"method": "ours-ckks-matched", **measure_mode(
        "ckks", parties, n, lambda p: vectors[p], bound=bound, extra={"precision_bits": bits},
        label="bench-anchors")}
    if flower_available():
        for name, q in (("flower-secagg+", FLOWER_DEFAULT), ("flower-secagg+-finest", flower_finest(parties))):
            say(f"anchors: {name}")
            rows[name] = {**measure_flower(vectors, bound, **q), "method": name}
    else:
        rows["flower-secagg+"] = {"method": "flower-secagg+", "skipped": "flwr is not installed: "
                                  "pip install 'secure-collab[bench]' (the optional bench extra)"}
    return rows
