"""What every command shares for output: ``--json OUT`` ('-' is stdout) and human output that then moves to stderr.

Rule: logs and progress always go to stderr; a command's human result (tables, summaries) goes to stdout,
unless ``--json -`` claims stdout for the JSON document alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

JSON_HELP = "write the result as JSON to OUT ('-': stdout, human output then goes to stderr) (default: no JSON)"


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default=None, metavar="OUT", help=JSON_HELP)


def json_to_stdout(args: argparse.Namespace) -> bool:
    return getattr(args, "json", None) == "-"


def human(args: argparse.Namespace) -> IO[str]:
    """Where this command's human-readable result goes."""
    return sys.stderr if json_to_stdout(args) else sys.stdout


def console(args: argparse.Namespace) -> Any:
    """A rich Console on ``human(args)`` (quiet with ``-q``)."""
    from rich.console import Console

    return Console(file=human(args), quiet=bool(getattr(args, "quiet", False)), highlight=False)


def say(args: argparse.Namespace, text: str = "") -> None:
    """Print one line of human output (nothing with ``-q``)."""
    if not getattr(args, "quiet", False):
        print(text, file=human(args), flush=True)


def write_json(args: argparse.Namespace, doc: Any, *, private: bool = False) -> None:
    """Write ``doc`` where ``--json`` says (nothing when it was not given). ``private``: a report that counts or
    scores one party's edits (DESIGN §1), so the file is 0600 whatever the umask."""
    dest = getattr(args, "json", None)
    if not dest:
        return
    text = json.dumps(doc, indent=2, default=_jsonable) + "\n"
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from secure_collab.files import private_dir, write_private

    path = Path(dest)
    if private:
        private_dir(path.parent, tighten=False)  # missing parents 0700; an existing directory is the user's
        write_private(path, text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return {"bytes": len(obj)}
    if isinstance(obj, set | frozenset | tuple):
        return sorted(obj) if isinstance(obj, set | frozenset) else list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
