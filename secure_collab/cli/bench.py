"""`secure-collab bench`: the benchmarks of BENCHMARKS.md in one run, each a ratio against a baseline of the same run.

Sections: sessions (plain / shares / ckks wall time and bytes per party, ratios to plain), anchors (Flower's
SecAgg+ and NVFlare's CKKS against our modes on the same G and B vectors), memory (the coordinator's peak against
party count and statistic size), solve (Cholesky against an explicit inverse), covariance (tokens per second,
forward stopped early against full) and targets (target optimisation seconds per edit before and after, FLOPs
against the core's matmul rate, keys one request at a time against batched) and backends (a party's statistics per
edit, MEMIT against MALMEN with the bundled hypernetwork). ``--only realsize`` (never by default: hours and most of a
24 GiB machine) runs real-size sessions of synthetic statistics (Llama-3-8B's and GPT-J's d_k and d_v) over the real
roles: wall time, bytes, each role's peak memory, protect/add/open rates and the solve. Each section's result is kept in
``--out`` and read back by a later run with the same settings, so an interrupted run resumes.

Every process measures with one math thread. On a shared machine run it alone (or under a lock) and compare
only figures of the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = ("run the benchmarks (sessions, anchors, memory, solve, covariance, targets, backends; realsize when named) "
        "and write JSON and plots")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from secure_collab.bench.runner import SECTIONS
    from secure_collab.cli._output import add_json_option

    p.add_argument("--quick", action="store_true",
                   help="minutes instead of about two hours: 3 parties x 1 edit per session, two repetitions, "
                        "memory at d = 256 and 1536, fewer tokens and edits (what is smaller is in the JSON)")
    p.add_argument("--out", default="runs/bench", metavar="DIR",
                   help="where each section's JSON and the plots go (default: runs/bench)")
    p.add_argument("--only", default=None, metavar="SECTIONS",
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but realsize, which runs "
                        "only when named: hours and most of 24 GiB at the real sizes)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="change one setting of the preset, e.g. session_parties=3,10 session_reps=2 "
                        "target_edits=4 memory_large_parties=2 (repeatable; names: the fields of "
                        "secure_collab.bench.runner.BenchConfig; what ran is in the JSON's config; default: none)")
    p.add_argument("--fresh", action="store_true", help="measure again even where a kept result matches")
    p.add_argument("--model", default="smollm2-135m", help="model to measure (default: smollm2-135m)")
    p.add_argument("--target-requests", default="../shared/data/counterfact.json", metavar="FILE",
                   help="requests for the target and key timings (default: ../shared/data/counterfact.json; "
                        "records from 100 on)")
    p.add_argument("--cache-dir", default=None, help="shared cache (default: ~/.cache/secure-collab)")
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from secure_collab.bench.runner import DEFAULT_SECTIONS, SECTIONS, BenchConfig, run_bench
    from secure_collab.cli._output import write_json

    sections = tuple(s.strip() for s in args.only.split(",")) if args.only else DEFAULT_SECTIONS
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"bench: unknown sections {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cfg = BenchConfig.preset(args.quick, model=args.model, sections=sections, target_requests=args.target_requests)
    try:
        cfg = cfg.with_settings(args.set)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    def say(msg: str) -> None:  # progress and the verdicts: stderr, so `--json -` leaves stdout to the JSON
        if not getattr(args, "quiet", False):
            print(f"bench: {msg}", file=sys.stderr, flush=True)

    result = run_bench(cfg, Path(args.out), Path(args.cache_dir) if args.cache_dir else None, args.fresh, say)
    write_json(args, result)
    for c in result["targets_check"]:
        value = "-" if c["value"] is None else f"{c['value']:.4g}"
        say(f"{'met    ' if c['met'] else 'MISSED '} {c['target']}: {value} (limit {c['limit']:.4g}) {c['note']}")
    return 0
