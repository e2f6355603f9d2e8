"""`secure-collab keys init --dir D --parties a,b,c`: CURVE key pairs, solver keys and the roster."""

from __future__ import annotations

import argparse

HELP = "make key pairs for the coordinator, the solver and each party, and the public roster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True
    init = sub.add_parser("init", help="create a fresh key directory (refuses to overwrite)")
    init.add_argument("--dir", required=True, help="directory to create the keys in")
    init.add_argument("--parties", required=True, help="comma-separated party names, e.g. a,b,c")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secure_collab.keys import ROSTER_FILE, KeyFileError, init_keys

    parties = [p.strip() for p in args.parties.split(",") if p.strip()]
    try:
        roster = init_keys(Path(args.dir), parties)
    except (KeyFileError, FileExistsError) as exc:
        print(f"keys init: {exc}")
        return 2
    print(f"wrote secret keys (mode 0600) for coordinator, solver and parties {', '.join(roster.parties)}")
    print(f"roster (public keys, share it): {Path(args.dir) / ROSTER_FILE}")
    print(f'pin it in session.toml: roster_sha256 = "{roster.digest()}"')
    return 0
