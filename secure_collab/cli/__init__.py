"""The `secure-collab` command line: one sub-command per module, dispatched through a fixed table.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules import heavy libraries (torch, transformers, tenseal) inside ``run`` so that ``--help`` is fast.

Other installed packages add commands through the ``secure_collab.commands`` entry-point group (name ->
module with the same three members): attacks/ registers ``attack`` and ``audit`` that way, so the core never
names it. A plugin cannot replace a built-in command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

# name -> module under secure_collab.cli. Add a line here to add a command.
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "edit": "edit",
    "experiment": "experiment",
    "stats": "stats",
    "protection-check": "protection_check",
    "keys": "keys",
    "ledger": "ledger",
    "coordinator": "coordinator",
    "solver": "solver",
    "party": "party",
}


PLUGIN_GROUP = "secure_collab.commands"


def plugin_commands(entry_points: Iterable[Any] | None = None) -> dict[str, ModuleType]:
    """Command modules registered by installed packages (``entry_points`` given: those instead, for tests).

    A plugin that fails to import, lacks one of the three members or reuses a built-in name is skipped with a
    warning on stderr: one broken package must not take the whole command line down."""
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=PLUGIN_GROUP)
    found: dict[str, ModuleType] = {}
    for ep in entry_points:
        if ep.name in COMMANDS or ep.name in found:
            print(f"secure-collab: plugin command {ep.name!r} ignored (name taken)", file=sys.stderr)
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin: report it, keep the built-in commands working
            print(f"secure-collab: plugin command {ep.name!r} not loaded: {exc}", file=sys.stderr)
            continue
        if not all(hasattr(module, a) for a in ("HELP", "add_arguments", "run")):
            print(f"secure-collab: plugin command {ep.name!r} ignored (needs HELP, add_arguments, run)",
                  file=sys.stderr)
            continue
        found[ep.name] = module
    return found


def build_parser(entry_points: Iterable[Any] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secure-collab",
        description="Collaborative MEMIT knowledge editing with protected (CKKS / secret-shared) statistics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = {name: importlib.import_module(f"secure_collab.cli.{m}") for name, m in COMMANDS.items()}
    modules.update(plugin_commands(entry_points))
    for name, module in modules.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None, entry_points: Iterable[Any] | None = None) -> int:
    parser = build_parser(entry_points)
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # what the user typed, for result files
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
