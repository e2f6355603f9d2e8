"""`secure-collab keys new|roster|check|init`: each site makes its own keys and sends only the public file.

    keys new --role party --name a     this site's key pairs: keys/party-a.key_secret (0600, never leaves the
                                       site) and keys/party-a.public.toml (send it), with its fingerprint
    keys roster --out roster.toml F..  assemble the roster from every site's public file
    keys check --roster roster.toml --fingerprints agreed.txt
                                       each site: the roster holds exactly the fingerprints agreed out of band
    keys init --dir D --parties a,b,c  every role's keys in one directory: demos and tests only
"""

from __future__ import annotations

import argparse

HELP = "make this site's keys (new), assemble the roster (roster), check it against agreed fingerprints (check)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option

    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True
    new = sub.add_parser("new", help="this site's key pairs; prints the fingerprint to read to the other sites")
    new.add_argument("--role", required=True, choices=("party", "solver", "coordinator"), help="this site's role")
    new.add_argument("--name", default=None, help="the party's name, e.g. a (default: none; parties only)")
    new.add_argument("--dir", default="keys", help="where the secret file and the public file are written")
    add_json_option(new)
    roster = sub.add_parser("roster", help="assemble roster.toml from every site's public file")
    roster.add_argument("public", nargs="+", metavar="PUBLIC", help="the sites' *.public.toml files")
    roster.add_argument("--out", default="roster.toml", help="the roster file to write")
    roster.add_argument("--force", action="store_true", help="overwrite an existing --out")
    add_json_option(roster)
    check = sub.add_parser("check", help="the roster holds exactly the fingerprints this site agreed to")
    check.add_argument("--roster", default="roster.toml", help="the roster file to check")
    check.add_argument("--fingerprints", required=True,
                       help="the agreed fingerprints, one 'WHO FINGERPRINT' per line (WHO: coordinator, solver, "
                            "party:NAME), as `keys new` and `keys roster` print them")
    add_json_option(check)
    init = sub.add_parser("init", help="every site's keys in one directory, for demos and tests (refuses to "
                                       "overwrite)")
    init.add_argument("--dir", required=True, help="directory to create the keys in")
    init.add_argument("--parties", required=True, help="comma-separated party names, e.g. a,b,c")
    add_json_option(init)


def run(args: argparse.Namespace) -> int:
    return {"new": _new, "roster": _roster, "check": _check, "init": _init}[args.keys_command](args)


def _who(ident) -> str:
    return f"party:{ident.name}" if ident.role == "party" else ident.role


def _new(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secure_collab.cli._output import say, write_json
    from secure_collab.keys import KeyFileError, role_file_stem, write_identity

    if (args.role == "party") != bool(args.name):
        raise KeyFileError("--name is required for --role party, and only for it")
    directory = Path(args.dir)
    stem = role_file_stem(args.role, args.name or "")
    try:
        ident = write_identity(directory, args.role, args.name or "")
    except FileExistsError:
        raise KeyFileError(f"{directory / (stem + '.key_secret')} exists: keys new never overwrites a key") from None
    public = directory / f"{stem}.public.toml"
    say(args, f"secret keys: {directory / (stem + '.key_secret')} (mode 0600; never leaves this site)")
    say(args, f"public file: {public} (send it to whoever assembles the roster)")
    say(args, f"fingerprint: {_who(ident)} {ident.fingerprint()}")
    say(args, "read the fingerprint to the other sites over a second channel (phone, signed mail)")
    write_json(args, {"who": _who(ident), "fingerprint": ident.fingerprint(), "public": str(public),
                      "secret": str(directory / f"{stem}.key_secret")})
    return 0


def _roster(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secure_collab.cli._output import say, write_json
    from secure_collab.errors import ConfigError
    from secure_collab.keys import Roster, load_public_identity

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    roster = Roster.from_identities([load_public_identity(Path(p)) for p in args.public])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(roster.to_toml())
    say(args, f"roster: {out} ({len(roster.parties)} parties); fingerprints:")
    for who, fp in roster.fingerprints().items():
        say(args, f"{who} {fp}")
    say(args, f"roster_sha256 {roster.digest()}")
    write_json(args, {"roster": str(out), "fingerprints": roster.fingerprints(), "roster_sha256": roster.digest()})
    return 0


def parse_fingerprints(path) -> dict[str, str]:
    """'WHO FINGERPRINT' lines (blank lines and # comments skipped) to {who: fingerprint}."""
    from secure_collab.keys import KeyFileError

    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or len(words[1]) != 64 or words[0] in out:
            raise KeyFileError(f"{path} line {n}: want 'WHO FINGERPRINT' once per site, got {line.strip()!r}")
        out[words[0]] = words[1].lower()
    return out


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secure_collab.cli._output import say, write_json
    from secure_collab.keys import KeyFileError, load_roster

    roster = load_roster(Path(args.roster))
    agreed = parse_fingerprints(Path(args.fingerprints))
    found = roster.fingerprints()
    for who in sorted(set(agreed) | set(found)):
        if who not in found:
            raise KeyFileError(f"{args.roster} lacks {who}, whose fingerprint was agreed")
        if who not in agreed:
            raise KeyFileError(f"{args.roster} holds {who}, which nobody agreed to (an added key?)")
        if agreed[who] != found[who]:
            raise KeyFileError(f"{args.roster}: {who} has fingerprint {found[who][:16]}…, the agreed one is "
                               f"{agreed[who][:16]}… (a swapped key?)")
    say(args, f"{args.roster}: every fingerprint matches the {len(agreed)} agreed; roster_sha256 {roster.digest()}")
    write_json(args, {"ok": True, "roster": str(args.roster), "roster_sha256": roster.digest(),
                      "fingerprints": found})
    return 0


def _init(args: argparse.Namespace) -> int:
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
                      "roster_sha256": roster.digest(), "parties": sorted(roster.parties)})
    return 0
