"""`secure-collab protection-check`: stream random statistics through a protection mode as a session does.

Each of P parties holds a random symmetric (dim x dim) statistic (its upper triangle, dim(dim+1)/2 values,
uniform in [-bound, bound]); K parties drop out (they never send). The included parties protect their
statistic chunk by chunk (``--chunk-values``), the coordinator adds each chunk into its running sum within its
window (``--coordinator-memory``) and hands each complete sum to the solver, which authenticates it on arrival
and opens them all at the end; the result is compared with the float64 sum of the included parties. The summary
compares the protect rate and the coordinator's peak with issue 22's targets.

The measurement itself (and what coordinator_peak_bytes, the rates and the byte figures count) is
``secure_collab.bench.protection.measure_mode``, shared with `secure-collab bench`.
"""

from __future__ import annotations

import argparse
import sys

HELP = "Check a protection mode end to end on random statistics: error, bytes per value, timings, memory."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.bench.protection import session_defaults
    from secure_collab.cli._output import add_json_option

    chunk_values, memory = session_defaults()

    parser.add_argument("--mode", required=True, choices=["ckks", "shares", "plain"],
                        help="protection mode (plain is no protection: baselines only)")
    parser.add_argument("--parties", type=int, required=True, metavar="P", help="number of parties")
    parser.add_argument("--dim", type=int, required=True, metavar="D",
                        help="statistic dimension d: each party protects d(d+1)/2 values")
    parser.add_argument("--dropouts", type=int, default=0, metavar="K", help="parties left out")
    parser.add_argument("--value-bound", type=float, default=1.0, help="declared max |entry| of a statistic")
    parser.add_argument("--min-parties", type=int, default=2, help="solver refuses fewer")
    parser.add_argument("--precision-bits", type=int, default=None,
                        help="ckks only: target precision relative to the bound (default 32)")
    parser.add_argument("--chunk-values", type=int, default=chunk_values, metavar="C",
                        help="values per chunk, as a session's session.chunk_values (default: %(default)s)")
    parser.add_argument("--coordinator-memory", type=int, default=memory, metavar="BYTES",
                        help="the coordinator's window of running sums, as a session's "
                             "network.coordinator_memory_bytes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (>= 0) of the random statistics")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from secure_collab.bench.protection import TARGET_REL_ERR, measure_mode, uniform
    from secure_collab.cli._output import say, write_json
    from secure_collab.progress import progress
    from secure_collab.protection import triangle_size
    from secure_collab.protocol.statistics import chunk_bounds

    err = Console(stderr=True, soft_wrap=True)  # a refusal is one line, whatever the terminal's width
    included = args.parties - args.dropouts
    if (args.dim < 1 or args.parties < 1 or args.seed < 0 or not 0 <= args.dropouts < args.parties
            or args.chunk_values < 1 or args.coordinator_memory < 1):
        err.print("[red]need dim >= 1, parties >= 1, seed >= 0, 0 <= dropouts < parties, chunk values >= 1 and "
                  "coordinator memory >= 1[/red]")
        return 2
    n = triangle_size(args.dim)
    extra = {} if args.precision_bits is None else {"precision_bits": args.precision_bits}
    if extra and args.mode != "ckks":
        err.print("[red]--precision-bits is for --mode ckks only[/red]")
        return 2
    chunks = len(chunk_bounds(n, args.chunk_values))
    try:
        with progress(f"{args.mode}: {included} parties x {n:,} values", chunks, "chunks",
                      enabled=not args.quiet) as advance:
            result = measure_mode(args.mode, args.parties, n, lambda p: uniform(args.seed, p, n, args.value_bound),
                                  dropouts=args.dropouts, bound=args.value_bound, min_parties=args.min_parties,
                                  extra=extra, label=f"protection-check-{args.seed}", advance=advance,
                                  chunk_values=args.chunk_values, coordinator_memory=args.coordinator_memory)
    except ValueError as exc:  # ProtectionError included: parameters refused before anything is sent
        err.print(f"refused at setup: {exc}", style="red", markup=False, highlight=False)
        return 2
    result = {"dim": args.dim, "value_bound": args.value_bound, **result}
    say(args, summary(result))
    write_json(args, result)
    if not result["ok"]:
        print(f"max_rel_err {result['max_rel_err']:.3g} exceeds the target {TARGET_REL_ERR[args.mode]:g}",
              file=sys.stderr)
        return 1
    return 0


def summary(result: dict) -> str:
    """One line: error, bytes, and protect rate and coordinator peak against issue 22's targets."""
    from secure_collab.bench.protection import (
        TARGET_COORDINATOR_PEAK_BYTES,
        TARGET_PROTECT_SECONDS_PER_MVALUE,
        TARGET_REL_ERR,
    )

    mode, rate, peak = result["mode"], result["protect_seconds_per_mvalue"], result["coordinator_peak_bytes"]
    rate_target, peak_target = TARGET_PROTECT_SECONDS_PER_MVALUE.get(mode), TARGET_COORDINATOR_PEAK_BYTES[mode]

    def against(value: float, target: float | None, unit: str) -> str:
        if target is None:
            return "no target"
        return f"target <= {target:g} {unit} met" if value <= target else f"target missed: <= {target:g} {unit}"

    return (f"{mode}: {result['parties'] - result['dropouts']} of {result['parties']} parties x "
            f"{result['n_values']:,} values in {result['chunks']:,} chunks of {result['chunk_values']:,} (window "
            f"{result['window_chunks']:,}): max relative error {result['max_rel_err']:.3g} (target "
            f"{TARGET_REL_ERR[mode]:g}), {result['bytes_per_value']:.2f} bytes/value, protect {rate:.4f} s/Mvalue "
            f"CPU ({against(rate, rate_target, 's/Mvalue')}), coordinator peak {peak / 1e6:.1f} MB "
            f"({against(peak / 1e6, peak_target / 1e6, 'MB')})")
