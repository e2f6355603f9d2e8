"""`secure-collab protection-check`: protect, accumulate and open random statistics; report error, size, time.

Each of P parties holds a random symmetric (dim x dim) statistic (its upper triangle, dim(dim+1)/2 values,
uniform in [-bound, bound]); K parties drop out (they never send). The included parties protect their
statistic, the coordinator adds the payloads into one running sum, the solver opens it, and the result is
compared with the float64 sum of the included parties.

The measurement itself (and what coordinator_peak_bytes and the byte figures count) is
``secure_collab.bench.protection.measure_mode``, shared with `secure-collab bench`.
"""

from __future__ import annotations

import argparse
import sys

HELP = "Check a protection mode end to end on random statistics: error, bytes per value, timings, memory."


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
                        help="ckks only: target precision relative to the bound (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed (>= 0) of the random statistics")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from secure_collab.bench.protection import TARGET_REL_ERR, measure_mode, uniform
    from secure_collab.cli._output import say, write_json
    from secure_collab.protection import ProtectionError, triangle_size

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
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, disable=args.quiet, transient=True) as progress:
        task = progress.add_task(f"{args.mode}: {included} parties x {n:,} values", total=included)
        try:
            result = measure_mode(args.mode, args.parties, n, lambda p: uniform(args.seed, p, n, args.value_bound),
                                  dropouts=args.dropouts, bound=args.value_bound, min_parties=args.min_parties,
                                  extra=extra, label=f"protection-check-{args.seed}",
                                  advance=lambda: progress.advance(task))
        except ProtectionError as exc:
            err.print(f"[red]refused at setup: {exc}[/red]")
            return 2
    result = {"dim": args.dim, "value_bound": args.value_bound, **result}
    rel_err, peak = result["max_rel_err"], result["coordinator_peak_bytes"]
    say(args, f"{args.mode}: {included} of {args.parties} parties x {n:,} values: max relative error "
              f"{rel_err:.3g} (target {TARGET_REL_ERR[args.mode]:g}), {result['bytes_per_value']:.2f} bytes/value, "
              f"protect {result['protect_seconds_per_mvalue']:.3f} s/Mvalue, coordinator peak "
              f"{peak / 1e6:.1f} MB")
    write_json(args, result)
    if not result["ok"]:
        print(f"max_rel_err {result['max_rel_err']:.3g} exceeds the target {TARGET_REL_ERR[args.mode]:g}",
              file=sys.stderr)
        return 1
    return 0
