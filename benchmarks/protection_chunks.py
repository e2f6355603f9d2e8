"""Protect, add and open one statistic the way a session does: one call per chunk of ``--chunk-values``.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/protection_chunks.py --mode shares \
        --parties 3 --chunk-values 262144 --chunks 32

A session calls protect once per 262,144-value chunk (``chunk_values``), so per-call costs (keys, seal,
signature, scratch buffers and what the allocator does with them) weigh differently than in one whole-statistic
call. (Since issue 22 `secure-collab protection-check` streams a whole statistic that way too, with the
coordinator's window; this script stays the quick per-call probe on a few chunks.) Reported per value: the
median over chunks of the process CPU time of one call (robust to other jobs on a shared machine, and it
includes the kernel's page-fault time), and the wall-clock totals. Add and protect are per value sent, open
per value of the result.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time


def main() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from secure_collab.bench.protection import uniform
    from secure_collab.protection import ProtectionParams, StatContext, get_scheme

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["shares", "plain"], default="shares")
    parser.add_argument("--parties", type=int, default=3)
    parser.add_argument("--chunk-values", type=int, default=262_144)
    parser.add_argument("--chunks", type=int, default=32)
    args = parser.parse_args()
    c, names = args.chunk_values, [f"party-{p}" for p in range(args.parties)]
    scheme = get_scheme(args.mode)
    signing = {n: Ed25519PrivateKey.generate() for n in names}
    sealing = {n: X25519PrivateKey.generate() for n in names}
    keys = scheme.solver_setup(ProtectionParams(args.mode, max_parties=args.parties, bound=1.0, min_parties=2),
                               {n: k.public_key().public_bytes_raw() for n, k in sealing.items()})
    secrets = {n: scheme.join(keys.public, keys.bundles, n, sealing[n].private_bytes_raw()) for n in names}
    verify = {n: k.public_key() for n, k in signing.items()}
    values = [uniform(0, p, c * args.chunks, 1.0) for p in range(args.parties)]
    cpu: dict[str, list[float]] = {"protect": [], "add": [], "open": []}
    wall = dict.fromkeys(cpu, 0.0)

    def timed(kind: str, fn, *fn_args, **fn_kwargs):  # noqa: ANN202 - a local helper
        w, t = time.perf_counter(), time.process_time()
        out = fn(*fn_args, **fn_kwargs)
        cpu[kind].append(time.process_time() - t)
        wall[kind] += time.perf_counter() - w
        return out

    for chunk in range(args.chunks):
        ctx = StatContext("bench-chunks", 0, 0, "G", chunk=chunk)
        acc = scheme.accumulator(keys.public, c, ctx)
        for p, name in enumerate(names):
            part = values[p][chunk * c : (chunk + 1) * c]
            payload = timed("protect", scheme.protect, part, ctx.for_party(name), keys.public, secrets[name],
                            signing[name])
            timed("add", acc.add, payload, party=name)
            del payload
        aggregate = acc.aggregate()
        timed("open", functools.partial(_open, scheme, aggregate, keys, ctx, verify))
    sent, opened = args.parties * c * args.chunks / 1e6, c * args.chunks / 1e6
    per = {"protect": sent, "add": sent, "open": opened}
    print(f"{args.mode}, {args.parties} parties, {args.chunks} chunks of {c:,} values "
          "(s per million values: median CPU per call | wall total):")
    for kind, times in cpu.items():
        med = statistics.median(times) / (c / 1e6)
        print(f"  {kind:8s} {med:.4f} | {wall[kind] / per[kind]:.4f}   ({8e-3 / med:.2f} GB/s of float64 input)")


def _open(scheme, aggregate, keys, ctx, verify):  # noqa: ANN001, ANN202 - what a solver does per chunk
    return scheme.open(aggregate, keys, ctx, scheme.authenticate(aggregate, keys, ctx, verify))


if __name__ == "__main__":
    main()
