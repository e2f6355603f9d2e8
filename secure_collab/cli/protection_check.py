"""`secure-collab protection-check`: protect, accumulate and open random statistics; report error, size, time.

Each of P parties holds a random symmetric (dim x dim) statistic (its upper triangle, dim(dim+1)/2 values,
uniform in [-bound, bound]); K parties drop out (they never send). The included parties protect their
statistic, the coordinator adds the payloads into one running sum, the solver opens it, and the result is
compared with the float64 sum of the included parties.

coordinator_peak_bytes: the most the coordinator holds during accumulation: the payload in flight, plus
what the accumulator allocated (Python/numpy, traced with tracemalloc around each add only, so party-side
work is not counted), plus the native ciphertext memory of its running sum in ckks mode (SEAL allocates
outside Python's allocator; counted from the ciphertext sizes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

HELP = "Check a protection mode end to end on random statistics: error, bytes per value, timings, memory."

TARGET_REL_ERR = {"shares": 1e-7, "ckks": 1e-6, "plain": 1e-12}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option

    parser.add_argument("--mode", required=True, choices=["ckks", "shares", "plain"],
                        help="protection mode (plain is no protection: baselines only)")
    parser.add_argument("--parties", type=int, required=True, metavar="P", help="number of parties")
    parser.add_argument("--dim", type=int, required=True, metavar="D",
                        help="statistic dimension d: each party protects d(d+1)/2 values")
    parser.add_argument("--dropouts", type=int, default=0, metavar="K", help="parties left out")
    parser.add_argument("--value-bound", type=float, default=1.0, help="declared max |entry| of a statistic")
    parser.add_argument("--min-parties", type=int, default=2, help="solver refuses fewer")
    parser.add_argument("--precision-bits", type=int, default=None,
                        help="ckks only: target precision relative to the bound (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed (>= 0) of the random statistics")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from secure_collab.cli._output import say, write_json
    from secure_collab.protection import (
        ProtectionError,
        ProtectionParams,
        StatContext,
        get_scheme,
        triangle_size,
    )

    err = Console(stderr=True)
    included = args.parties - args.dropouts
    if args.dim < 1 or args.parties < 1 or args.seed < 0 or not 0 <= args.dropouts < args.parties:
        err.print("[red]need dim >= 1, parties >= 1, seed >= 0 and 0 <= dropouts < parties[/red]")
        return 2
    n = triangle_size(args.dim)
    extra = {} if args.precision_bits is None else {"precision_bits": args.precision_bits}
    if extra and args.mode != "ckks":
        err.print("[red]--precision-bits is for --mode ckks only[/red]")
        return 2
    params = ProtectionParams(args.mode, max_parties=args.parties, bound=args.value_bound,
                              min_parties=min(args.min_parties, args.parties), extra=extra)
    scheme = get_scheme(args.mode)
    ctx = StatContext(f"protection-check-{args.seed}", 0, 0, "G")
    names = [f"party-{p}" for p in range(args.parties)]
    signing = {name: Ed25519PrivateKey.generate() for name in names}  # each party's long-term keys
    sealing = {name: X25519PrivateKey.generate() for name in names}
    try:
        keys = scheme.solver_setup(params, {n: k.public_key().public_bytes_raw() for n, k in sealing.items()})
    except ProtectionError as exc:
        err.print(f"[red]refused at setup: {exc}[/red]")
        return 2

    truth = np.zeros(n)
    t = {"protect": 0.0, "accumulate": 0.0, "open": 0.0}
    sent_bytes = 0
    peak = 0
    persistent = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, disable=args.quiet, transient=True) as progress:
        task = progress.add_task(f"{args.mode}: {included} parties x {n:,} values", total=included + 1)
        start = time.perf_counter()
        acc, created = _traced(lambda: scheme.accumulator(keys.public, n, ctx))
        t["accumulate"] += time.perf_counter() - start
        persistent += created[0]
        for p in range(included):  # the dropped-out parties (the last K) never send anything
            values = _uniform(args.seed, p, n, args.value_bound)
            np.add(truth, values, out=truth)
            start = time.perf_counter()
            name = f"party-{p}"
            secrets = scheme.join(keys.public, keys.bundles, name, sealing[name].private_bytes_raw())
            payload = scheme.protect(values, ctx.for_party(name), keys.public, secrets, signing[name])
            t["protect"] += time.perf_counter() - start
            if p == 0:
                sent_bytes = payload.nbytes + len(json.dumps(payload.header).encode())
            start = time.perf_counter()
            _, (grown, transient) = _traced(lambda payload=payload, p=p: acc.add(payload, party=f"party-{p}"))
            t["accumulate"] += time.perf_counter() - start
            native = acc.held_bytes if args.mode == "ckks" else 0  # SEAL memory is invisible to tracemalloc
            peak = max(peak, persistent + transient + native + payload.nbytes)
            persistent += grown
            del payload, values
            progress.advance(task)
        start = time.perf_counter()
        aggregate = acc.aggregate()
        t["accumulate"] += time.perf_counter() - start
        start = time.perf_counter()
        verify = {n: k.public_key() for n, k in signing.items()}
        total = scheme.open(aggregate, keys, ctx, scheme.authenticate(aggregate, keys, ctx, verify))
        t["open"] += time.perf_counter() - start
        progress.advance(task)

    abs_err = float(np.max(np.abs(total - truth)))
    rel_err = abs_err / float(np.max(np.abs(truth)))
    mvalues = included * n / 1e6
    result: dict[str, Any] = {
        "mode": args.mode, "parties": args.parties, "dim": args.dim, "dropouts": args.dropouts,
        "n_values": n, "value_bound": args.value_bound,
        "max_abs_err": abs_err, "max_rel_err": rel_err,
        "target_rel_err": TARGET_REL_ERR[args.mode], "ok": rel_err <= TARGET_REL_ERR[args.mode],
        "bytes_per_value": sent_bytes / n,
        "protect_seconds": t["protect"], "accumulate_seconds": t["accumulate"], "open_seconds": t["open"],
        "protect_seconds_per_mvalue": t["protect"] / mvalues,
        "accumulate_seconds_per_mvalue": t["accumulate"] / mvalues,
        "open_seconds_per_mvalue": t["open"] / (n / 1e6),
        "coordinator_peak_bytes": peak, "coordinator_held_bytes": acc.held_bytes,
        "public_bytes": len(keys.public),
        "parameters": _public_meta(keys.public),
    }
    say(args, f"{args.mode}: {included} of {args.parties} parties x {n:,} values: max relative error "
              f"{rel_err:.3g} (target {TARGET_REL_ERR[args.mode]:g}), {result['bytes_per_value']:.2f} bytes/value, "
              f"protect {result['protect_seconds_per_mvalue']:.3f} s/Mvalue, coordinator peak "
              f"{peak / 1e6:.1f} MB")
    write_json(args, result)
    if not result["ok"]:
        print(f"max_rel_err {rel_err:.3g} exceeds the target {TARGET_REL_ERR[args.mode]:g}", file=sys.stderr)
        return 1
    return 0


def _traced(fn: Any) -> tuple[Any, tuple[int, int]]:
    """Run fn under tracemalloc: (result, (bytes still allocated, peak bytes)) of what fn allocated."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, (current, peak)


def _uniform(seed: int, party: int, n: int, bound: float) -> Any:
    """Reproducible uniform test values in [-bound, bound] from an AES-CTR stream (not a secret)."""
    import numpy as np
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


def _public_meta(public: bytes) -> dict[str, Any]:
    size = int.from_bytes(public[4:8], "big")
    meta = json.loads(public[8 : 8 + size])
    meta.pop("solver_x25519", None)
    return {k: v for k, v in meta.items() if not (isinstance(v, float) and math.isnan(v))}
