"""`secure-collab keys init --dir D --parties a,b,c`: CURVE key pairs, solver keys and the roster (demos)."""

from __future__ import annotations

import argparse

HELP = "make key pairs for the coordinator, the solver and each party, and the public roster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option

    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True
    init = sub.add_parser("init", help="every site's keys in one directory, for demos and tests (refuses to "
                                       "overwrite)")
    init.add_argument("--dir", required=True, help="directory to create the keys in")
    init.add_argument("--parties", required=True, help="comma-separated party names, e.g. a,b,c")
    add_json_option(init)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secure_collab.cli._output import say, write_json
    from secure_collab.keys import ROSTER_FILE, KeyFileError, init_keys

    parties = [p.strip() for p in args.parties.split(",") if p.strip()]
    try:
        roster = init_keys(Path(args.dir), parties)
    except FileExistsError as exc:
        raise KeyFileError(f"{exc.filename} exists: keys init never overwrites a key") from None
    say(args, f"wrote secret keys (mode 0600) for coordinator, solver and parties {', '.join(roster.parties)}")
    say(args, f"roster (public keys, share it): {Path(args.dir) / ROSTER_FILE}")
    say(args, f'pin it in session.toml: roster_sha256 = "{roster.digest()}"')
    write_json(args, {"dir": str(Path(args.dir).resolve()), "roster": str(Path(args.dir) / ROSTER_FILE),
                      "roster_digest": roster.digest(), "parties": sorted(roster.parties)})
    return 0
