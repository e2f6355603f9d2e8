"""The `secure-collab` command line: one sub-command per module, dispatched through a fixed table.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules import heavy libraries (torch, transformers, tenseal) inside ``run`` so that ``--help`` is fast.

Every command also takes ``-v/--verbose``, ``-q/--quiet`` and ``--debug`` (before or after its name).
Logging is configured here, once. A mistake the user can fix (a missing file, a bad configuration, a port in
use, an unknown model, Ctrl-C) ends in one line on stderr and exit code 2; ``--debug`` adds the traceback.

Other installed packages add commands through the ``secure_collab.commands`` entry-point group (name ->
module with the same three members): attacks/ registers ``attack`` and ``audit`` that way, so the core never
names it. A plugin cannot replace a built-in command.
"""

from __future__ import annotations

import argparse
import errno
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
    "bench": "bench",
    "keys": "keys",
    "session": "session",
    "ledger": "ledger",
    "status": "status",
    "coordinator": "coordinator",
    "solver": "solver",
    "party": "party",
    "query": "query",
    "apply": "apply",
    "malmen": "malmen",
}
EXIT_USER_ERROR = 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to every option that has a default and does not state it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("(default" in text.lower() or default is None or default is False or default is argparse.SUPPRESS
                or action.required
                or not action.option_strings or isinstance(action, argparse._HelpAction | argparse._VersionAction)):
            return text
        shown = (",".join(map(str, default)) or "none") if isinstance(default, list | tuple) else default
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def add_common(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """-v/-q/--debug; on sub-commands they default to SUPPRESS so either position works. A plugin command that
    defines one of these options itself keeps its own (argparse refuses a second definition)."""
    keep: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    taken = parser._option_string_actions
    group = parser.add_argument_group("output")

    def add(*flags: str, **kwargs: Any) -> None:
        free = [f for f in flags if f not in taken]
        if len(free) == len(flags):
            group.add_argument(*free, **kwargs)

    add("-v", "--verbose", action="count", help="more log output (-vv: libraries too)",
        **({"default": 0} if top else keep))
    add("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars", **keep)
    add("--debug", action="store_true", help="show the traceback of an error", **keep)


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for s in subs for p in dict.fromkeys(s.choices.values()) for leaf in _leaves(p)]


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


def build_parser(entry_points: Iterable[Any] | None = None, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``only`` (a built-in command's name): that command alone, so that running it imports
    no other command's module and no plugin (a coordinator's process then loads nothing of the parties' or solver's
    code, or of attacks/)."""
    from secure_collab import __version__

    parser = argparse.ArgumentParser(
        prog="secure-collab", formatter_class=HelpFormatter,
        description="Collaborative MEMIT knowledge editing with protected (CKKS / secret-shared) statistics.",
    )
    parser.add_argument("--version", action="version", version=f"secure-collab {__version__}")
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubParser)
    sub.required = True
    names = [only] if only in COMMANDS else list(COMMANDS)
    modules = {name: importlib.import_module(f"secure_collab.cli.{COMMANDS[name]}") for name in names}
    if only not in COMMANDS:
        modules.update(plugin_commands(entry_points))
    for name, module in modules.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
        for leaf in _leaves(p):
            add_common(leaf)
    return parser


class _SubParser(argparse.ArgumentParser):
    """Nested sub-commands (``keys new``, ``ledger show``) get the same help formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", _SubParser)
        return super().add_subparsers(**kwargs)


# OSErrors a user causes and can fix (a read-only file system, a full disk, a name too long, a file in the way)
_USER_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EEXIST, errno.EACCES,
                          errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EPERM})


def user_message(exc: BaseException) -> str | None:
    """One line for an error the user can fix; None for anything else (a bug: its traceback is wanted)."""
    import tomllib

    from secure_collab.errors import UserError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, UserError | tomllib.TOMLDecodeError):
        text = str(exc)
    elif isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError) or (
            isinstance(exc, OSError) and exc.errno in _USER_ERRNOS):
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    else:
        return None
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


def main(argv: Sequence[str] | None = None, entry_points: Iterable[Any] | None = None) -> int:
    from secure_collab.progress import configure_logging

    args_in = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_in if not a.startswith("-")), None)  # the common options take no value
    parser = build_parser(entry_points, only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # what the user typed, for result files
    configure_logging(-1 if args.quiet else args.verbose)
    try:
        code = int(args._module.run(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit ("Exception ignored", code 120)
        return code
    except BrokenPipeError:  # `secure-collab ledger show | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes it
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        message = user_message(exc)
        if message is None:
            raise
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"secure-collab {args.command}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
