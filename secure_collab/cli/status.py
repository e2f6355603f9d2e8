"""`secure-collab status --config F`: a live session's stage, counts and time left.

On the coordinator's host (the ledger is there) it shows the whole session, with per-party detail. On a party's
host it shows that party's own view, from the status file its `secure-collab party` keeps (parties/status.py):
stage and counts only, no other party's timing."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from secure_collab.config import Config

HELP = "show a session's stage, counts (joined, contributed, applied) and time left"

NO_LEDGER = ("no ledger at {path}: this is not the coordinator's host, and no party status file (status-<party>.json) "
             "in {status_dir}: no party of this session has run here yet. The whole session's stage and counts are "
             "read from the coordinator's ledger; per-party timing stays there on purpose (when each party answers "
             "is the timing signal attacks/wire.py measures). On a party's host, `secure-collab status` shows that "
             "party's own stage and counts once `secure-collab party` has started there.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option

    parser.add_argument("--config", default="session.toml", help="session configuration (TOML)")
    parser.add_argument("--name", help="show this party's own view (its status file on this host), even where "
                        "the ledger is; the default on a host without the ledger, when one party's file is there")
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
    if args.name is not None or not config.paths.ledger.is_file():
        return _party_view(args, config)
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


def _party_view(args: argparse.Namespace, config: Config) -> int:
    """A party's own stage and counts, from its status file; no other party's detail exists here."""
    from parties.status import read_status, render, status_files, status_path
    from secure_collab.cli._output import say, write_json
    from secure_collab.errors import ConfigError
    from secure_collab.names import is_name, shown

    found = status_files(config)
    if args.name is not None:
        if not is_name(args.name) or args.name not in config.roster.parties:
            raise ConfigError(f"--name {shown(args.name)} is not a party of the roster "
                              f"({', '.join(sorted(config.roster.parties))})")
        path = status_path(config, args.name)
        if not path.is_file():
            raise ConfigError(f"no status file of party {args.name} at {path}: `secure-collab party --name "
                              f"{args.name}` has not run on this host with this session file")
    elif not found:
        raise ConfigError(NO_LEDGER.format(path=config.paths.ledger, status_dir=config.paths.party_status))
    elif len(found) > 1:
        raise ConfigError(f"status files of parties {', '.join(found)} in {config.paths.party_status}: "
                          "say which with --name")
    else:
        path = next(iter(found.values()))
    try:
        doc = read_status(path, config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for line in render(doc):
        say(args, line)
    write_json(args, doc)
    return 0
