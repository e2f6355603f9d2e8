"""The `secure-collab` command line: one sub-command per module, dispatched through a fixed table.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules import heavy libraries (torch, transformers, tenseal) inside ``run`` so that ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> module under secure_collab.cli. Add a line here to add a command.
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "edit": "edit",
    "experiment": "experiment",
    "stats": "stats",
    "protection-check": "protection_check",
    "bench": "bench",
    "keys": "keys",
    "ledger": "ledger",
    "coordinator": "coordinator",
    "solver": "solver",
    "party": "party",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secure-collab",
        description="Collaborative MEMIT knowledge editing with protected (CKKS / secret-shared) statistics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"secure_collab.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
