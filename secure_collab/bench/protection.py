"""Protect, accumulate and open one statistic in one of our modes: error, bytes, seconds, coordinator memory.

The one measurement behind `secure-collab protection-check` (random statistics) and the bench's anchor and
memory sections (real G and B vectors, random ones for memory). P parties each protect a float64 vector of n
values, K of them drop out (never send), the coordinator adds the payloads into one running sum, the solver
authenticates and opens it, and the result is compared with the float64 sum of the included parties.

coordinator_peak_bytes: the most the coordinator holds during accumulation: the payload in flight, plus what
the accumulator allocated (Python/numpy, traced with tracemalloc around each add only, so party-side work is
not counted), plus the native ciphertext memory of its running sum in ckks mode (SEAL allocates outside
Python's allocator; counted from the ciphertext sizes).

Bytes: ``bytes_per_value`` is everything one party sends for the statistic (frames + JSON header) / n;
``data_bytes_per_value`` only the frames that carry values, less the share of the integrity tag values packed
with them; ``integrity_bytes`` what the integrity costs per payload (tag values, sealed seed, signature).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

TARGET_REL_ERR = {"shares": 1e-7, "ckks": 1e-6, "plain": 1e-12}


def measure_mode(mode: str, parties: int, n_values: int, values: Callable[[int], np.ndarray], *, dropouts: int = 0,
                 bound: float = 1.0, min_parties: int = 2, extra: dict[str, Any] | None = None,
                 label: str = "protection-check", advance: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one statistic of ``n_values`` through ``mode`` with ``parties`` parties (``values(p)``: party p's
    float64 vector) and return the figures. Raises ProtectionError where the parameters are refused."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from secure_collab.protection import ProtectionParams, StatContext, get_scheme

    included = parties - dropouts
    params = ProtectionParams(mode, max_parties=parties, bound=bound, min_parties=min(min_parties, parties),
                              extra=dict(extra or {}))
    scheme = get_scheme(mode)
    ctx = StatContext(label, 0, 0, "G")
    names = [f"party-{p}" for p in range(parties)]
    signing = {name: Ed25519PrivateKey.generate() for name in names}  # each party's long-term keys
    sealing = {name: X25519PrivateKey.generate() for name in names}
    keys = scheme.solver_setup(params, {n: k.public_key().public_bytes_raw() for n, k in sealing.items()})
    truth = np.zeros(n_values)
    t = {"protect": 0.0, "accumulate": 0.0, "open": 0.0}
    sent: dict[str, int] = {}
    peak = persistent = 0
    start = time.perf_counter()
    acc, created = traced(lambda: scheme.accumulator(keys.public, n_values, ctx))
    t["accumulate"] += time.perf_counter() - start
    persistent += created[0]
    for p in range(included):  # the dropped-out parties (the last K) never send anything
        vec = values(p)
        np.add(truth, vec, out=truth)
        name = names[p]
        start = time.perf_counter()
        secrets = scheme.join(keys.public, keys.bundles, name, sealing[name].private_bytes_raw())
        payload = scheme.protect(vec, ctx.for_party(name), keys.public, secrets, signing[name])
        t["protect"] += time.perf_counter() - start
        if p == 0:
            sent = payload_bytes(payload, n_values)
        start = time.perf_counter()
        _, (grown, transient) = traced(functools.partial(acc.add, payload, party=name))
        t["accumulate"] += time.perf_counter() - start
        native = acc.held_bytes if mode == "ckks" else 0  # SEAL memory is invisible to tracemalloc
        peak = max(peak, persistent + transient + native + payload.nbytes)
        persistent += grown
        del payload, vec
        if advance:
            advance()
    start = time.perf_counter()
    aggregate = acc.aggregate()
    t["accumulate"] += time.perf_counter() - start
    start = time.perf_counter()
    verify = {n: k.public_key() for n, k in signing.items()}
    total = scheme.open(aggregate, keys, ctx, scheme.authenticate(aggregate, keys, ctx, verify))
    t["open"] += time.perf_counter() - start
    abs_err = float(np.max(np.abs(total - truth)))
    scale = float(np.max(np.abs(truth)))
    rel_err = abs_err / scale if scale > 0 else abs_err
    mvalues = included * n_values / 1e6
    return {
        "mode": mode, "parties": parties, "dropouts": dropouts, "n_values": n_values, "bound": bound,
        "max_abs_err": abs_err, "max_rel_err": rel_err,
        "target_rel_err": TARGET_REL_ERR[mode], "ok": rel_err <= TARGET_REL_ERR[mode],
        **sent,
        "protect_seconds": t["protect"], "accumulate_seconds": t["accumulate"], "open_seconds": t["open"],
        "protect_seconds_per_mvalue": t["protect"] / mvalues,
        "accumulate_seconds_per_mvalue": t["accumulate"] / mvalues,
        "open_seconds_per_mvalue": t["open"] / (n_values / 1e6),
        "coordinator_peak_bytes": peak, "coordinator_held_bytes": acc.held_bytes,
        "public_bytes": len(keys.public), "parameters": public_meta(keys.public),
    }


def payload_bytes(payload: Any, n_values: int) -> dict[str, Any]:
    """What one party's payload costs on the wire, split into data, integrity and header."""
    from secure_collab.protection.scheme import EXTRA_FRAMES

    frames = [len(memoryview(f).cast("B")) for f in payload.frames]
    data_frames, extras = frames[:-EXTRA_FRAMES], frames[-EXTRA_FRAMES:]
    header = len(json.dumps(payload.header).encode())
    tags = int(payload.header.get("tag_values", 0)) if isinstance(payload.header, dict) else 0
    data = sum(data_frames) * n_values / (n_values + tags)  # the tag limbs ride in the same frames
    integrity = sum(data_frames) - data + sum(extras)
    return {"bytes_per_value": (sum(frames) + header) / n_values, "data_bytes_per_value": data / n_values,
            "integrity_bytes": round(integrity), "header_bytes": header, "payload_bytes": sum(frames) + header}


def traced(fn: Callable[[], Any]) -> tuple[Any, tuple[int, int]]:
    """Run fn under tracemalloc: (result, (bytes still allocated, peak bytes)) of what fn allocated."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, (current, peak)


def uniform(seed: int, party: int, n: int, bound: float) -> np.ndarray:
    """Reproducible uniform test values in [-bound, bound] from an AES-CTR stream (not a secret)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = seed.to_bytes(16, "big", signed=False)
    nonce = party.to_bytes(16, "big")
    raw = np.empty(n, dtype=np.uint64)
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    view = raw.data.cast("B")
    step = 1 << 20
    zeros = bytes(step)
    for off in range(0, view.nbytes, step):
        m = min(step, view.nbytes - off)
        enc.update_into(zeros[:m], view[off : off + m])
    unit = np.ldexp((raw >> np.uint64(11)).astype(np.float64), -53)  # [0, 1)
    return (2.0 * unit - 1.0) * bound


def public_meta(public: bytes) -> dict[str, Any]:
    size = int.from_bytes(public[4:8], "big")
    meta = json.loads(public[8 : 8 + size])
    meta.pop("solver_x25519", None)
    return {k: v for k, v in meta.items() if not (isinstance(v, float) and math.isnan(v))}
