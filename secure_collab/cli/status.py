"""`secure-collab status --config F`: a live session's stage, counts and time left."""

from __future__ import annotations

import argparse

HELP = "show a session's stage, counts (joined, contributed, applied) and time left"

NO_LEDGER = ("no ledger at {path}: this is not the coordinator's host. Stage, counts and time left are read from "
             "the coordinator's ledger; per-party timing stays there on purpose (when each party answers is the "
             "timing signal attacks/wire.py measures). A party follows its session in its own log (each step it "
             "is asked for, each release it applies, with the parties it was computed over).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option

    parser.add_argument("--config", default="session.toml", help="session configuration (TOML)")
    parser.add_argument("--no-parties", action="store_true", help="stage and counts only, no per-party detail")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from secure_collab.cli._output import say, write_json
    from secure_collab.config import load_config
    from secure_collab.errors import ConfigError
    from secure_collab.ledger import NotALedger
    from secure_collab.status import render, session_status

    config = load_config(args.config)
    if not config.paths.ledger.is_file():
        raise ConfigError(NO_LEDGER.format(path=config.paths.ledger))
    try:
        st = session_status(config)
    except NotALedger as exc:
        raise ConfigError(str(exc)) from None
    for line in render(st, per_party=not args.no_parties):
        say(args, line)
    doc = dataclasses.asdict(st)
    if args.no_parties:
        doc.pop("per_party")
    write_json(args, doc)
    return 0
