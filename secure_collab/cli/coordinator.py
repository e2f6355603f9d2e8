"""`secure-collab coordinator --config F`: run the coordinator of one session until it ends."""

from __future__ import annotations

import argparse

HELP = "run the coordinator: admit roster keys, add protected statistics, relay signed updates"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._roles import add_role_options

    add_role_options(parser, model=False)


def run(args: argparse.Namespace) -> int:
    from coordinator.server import run_coordinator
    from secure_collab.cli._output import say, write_json
    from secure_collab.cli._roles import require_secret, stop_on_signals
    from secure_collab.config import load_config
    from secure_collab.preflight import check_coordinator_state
    from secure_collab.protection import public_scheme

    config = load_config(args.config)
    require_secret(config.paths.keys / "coordinator.key_secret", "the coordinator", config.roster.coordinator)
    check_coordinator_state(config)
    with stop_on_signals("coordinator: stopping… (telling every connected peer why; Ctrl-C again to quit at "
                         "once)") as stop:
        outcome = run_coordinator(config, public_scheme(config.session.mode), stop=stop)  # it never needs more
    say(args, f"session {config.session.id}: {'done' if outcome.ok else 'ABORTED'}: {outcome.reason}")
    for (round_, layer), sha in sorted(outcome.releases.items()):
        say(args, f"  round {round_} layer {layer}: ΔW sha256 {sha[:16]}")
    say(args, f"ledger: {config.paths.ledger}")
    write_json(args, {"session": config.session.id, "ok": outcome.ok, "reason": outcome.reason,
                      "releases": {f"{r}/{lay}": sha for (r, lay), sha in sorted(outcome.releases.items())},
                      "included": {f"{r}/{','.join(map(str, ls))}": list(p)
                                   for (r, ls), p in sorted(outcome.included.items())},
                      "ledger": str(config.paths.ledger)})
    if stop.is_set():
        raise KeyboardInterrupt  # one line, exit code 2, after every peer was told
    return 0 if outcome.ok else 1
