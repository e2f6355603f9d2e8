"""`secure-collab solver --config F`: the trusted solver of one session, in its own process."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "run the solver: open aggregates only, solve ΔW in float64, sign each release"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="session configuration (TOML)")
    parser.add_argument("--threads", type=int, default=0, help="math threads for this process (0: default)")
    parser.add_argument("--cache-dir", default=None, help="cache of converted models and covariances")


def engine_solve(config: Any) -> Any:
    """The engine's ``solve(round, layer, g_sum, b_sum) -> ΔW`` for this session (covariance, λ, Cholesky).

    Plug-in point for the editing engine: return a callable taking g_sum (d_k, d_k) symmetric and
    b_sum (d_v, d_k), float64 numpy sums over the included parties, returning ΔW (d_v, d_k) float64
    (see coordinator.solver.SolveFn).
    """
    from coordinator.engine import SessionSolve

    return SessionSolve(config.session)


def run(args: argparse.Namespace) -> int:
    from coordinator.solver import run_solver
    from secure_collab.cli._roles import load_scheme, set_threads
    from secure_collab.config import load_config

    set_threads(args.threads)
    config = load_config(args.config)
    if args.cache_dir:
        import os

        os.environ["SECURE_COLLAB_CACHE"] = args.cache_dir
    result = run_solver(config, load_scheme(config.session.mode), engine_solve(config))
    print(f"solver: {'done' if result.ok else 'stopped'}: {result.reason}; "
          f"{len(result.releases)} releases, {len(result.received)} aggregate chunks received")
    return 0 if result.ok else 1
