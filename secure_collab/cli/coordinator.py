"""`secure-collab coordinator --config F`: run the coordinator of one session until it ends."""

from __future__ import annotations

import argparse

HELP = "run the coordinator: admit roster keys, add protected statistics, relay signed updates"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="session configuration (TOML)")


def run(args: argparse.Namespace) -> int:
    from coordinator.server import run_coordinator
    from secure_collab.cli._roles import load_scheme
    from secure_collab.config import load_config

    config = load_config(args.config)
    outcome = run_coordinator(config, load_scheme(config.session.mode))
    print(f"session {config.session.id}: {'done' if outcome.ok else 'ABORTED'}: {outcome.reason}")
    for (round_, layer), sha in sorted(outcome.releases.items()):
        print(f"  round {round_} layer {layer}: ΔW sha256 {sha[:16]}")
    print(f"ledger: {config.paths.ledger}")
    return 0 if outcome.ok else 1
