"""`secure-collab solver --config F`: the trusted solver of one session, in its own process."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "run the solver: open aggregates only, solve ΔW in float64, sign each release"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._roles import add_role_options

    add_role_options(parser)


def session_solve(config: Any, args: argparse.Namespace | None = None) -> Any:
    """The session's ``solve(round, layer, g_sum, b_sum) -> ΔW`` (``solver.solve.SessionSolve``: covariance, λ,
    Cholesky). "Engine" is the party's word (``parties.runner.PartyEngine``); the solver's is "solve".

    Plug-in point for another solve: return a callable taking g_sum (d_k, d_k) symmetric and
    b_sum (d_v, d_k), float64 numpy sums over the included parties, returning ΔW (d_v, d_k) float64
    (see solver.server.SolveFn). Loads the base model, checks it against the session (one-line refusal).
    """
    from pathlib import Path

    from solver.solve import SessionSolve

    cache = getattr(args, "cache_dir", None)
    return SessionSolve(config.session, cache=Path(cache) if cache else None, hypernet=config.paths.hypernet,
                        allow_download=bool(getattr(args, "allow_download", False)),
                        progress=not getattr(args, "quiet", False))


def run(args: argparse.Namespace) -> int:
    from secure_collab.cli._output import say, write_json
    from secure_collab.cli._roles import load_scheme, rejoin_hint, require_secret, set_threads, stop_on_signals
    from secure_collab.config import load_config
    from secure_collab.preflight import check_solver_state
    from solver.server import run_solver

    set_threads(args.threads)
    config = load_config(args.config)
    require_secret(config.paths.keys / "solver.key_secret", "the solver", config.roster.solver)
    check_solver_state(config)
    solve = session_solve(config, args)
    with stop_on_signals(rejoin_hint("solver")) as stop:
        result = run_solver(config, load_scheme(config.session.mode), solve, stop=stop)
    say(args, f"solver: {'done' if result.ok else 'stopped'}: {result.reason}; "
              f"{len(result.releases)} releases, {result.chunks_received} aggregate chunks received")
    write_json(args, {"session": config.session.id, "ok": result.ok, "reason": result.reason,
                      "releases": sorted(f"{r}/{lay}" for r, lay in result.releases),
                      "aggregate_chunks": result.chunks_received})
    if stop.is_set():
        raise KeyboardInterrupt
    return 0 if result.ok else 1
