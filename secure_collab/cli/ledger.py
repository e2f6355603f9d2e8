"""`secure-collab ledger show --ledger L [--json OUT]`: every message the coordinator accepted or refused."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "print the coordinator's ledger: one row per message with digest, size, time and outcome"

COLUMNS = ("time", "direction", "peer", "type", "round", "layer", "stat", "chunk", "attempt", "bytes",
           "digest", "outcome", "reason")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ledger_command", metavar="ACTION")
    sub.required = True
    from secure_collab.cli._output import add_json_option

    show = sub.add_parser("show", help="print the ledger")
    show.add_argument("--ledger", default=None,
                      help="path of the SQLite ledger (default: [paths] ledger of --config, relative to that file)")
    show.add_argument("--config", default="session.toml",
                      help="the coordinator's session file, to find its ledger when --ledger is not given")
    show.add_argument("--session", help="only this session (default: every session)")
    add_json_option(show)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secure_collab.cli._output import human, write_json
    from secure_collab.errors import ConfigError
    from secure_collab.ledger import NotALedger, read_ledger

    path = Path(args.ledger) if args.ledger else _ledger_of(Path(args.config))
    if not path.is_file():
        raise ConfigError(f"no ledger at {path}")
    # read-only: never touches the ledger; a ledger written before decisions existed reads as no decisions
    try:
        tables = read_ledger(path, ("sessions", "stages", "messages", "handoffs", "releases", "decisions",
                                    "queries"), session=args.session)
    except NotALedger as exc:
        raise ConfigError(str(exc)) from None
    if args.session is not None and not tables["sessions"]:
        held = [r["session_id"] for r in read_ledger(path, ("sessions",))["sessions"]]
        raise ConfigError(f"the ledger {path} holds no session {args.session!r}; it holds "
                          f"{', '.join(held) if held else 'no session yet'}")
    write_json(args, tables)
    out = human(args)
    if not args.json:  # the whole table only when no JSON was asked for; the summary always
        _print_table(tables["messages"], out)
    print(f"\n{len(tables['messages'])} messages, {len(tables['handoffs'])} hand-offs to the solver, "
          f"{len(tables['releases'])} releases", file=out)
    settings = _settings(tables["stages"])
    for session, detail in settings.items():
        eps, delta = detail.get("epsilon"), detail.get("delta")
        dp = (f", (ε, δ) = ({eps:.4g}, {delta:g}) over all its releases"  # noise:Z: the session's (ε, δ)
              if isinstance(eps, int | float) and isinstance(delta, int | float) else "")
        factor = detail.get("edits_counted_per_request")
        counted = (f"; the edit counts N include {factor - 1} secret decoy edits per real edit"
                   + ("" if detail.get("release") == "served" else
                      ", and a closing round pushes back the decoys the release weakened")
                   if isinstance(factor, int) and factor > 1 else "")
        print(f"session {session}: defence {detail['defence']}{dp}{counted}", file=out)
        if detail.get("backend") == "malmen":
            print(f"session {session}: backend malmen, hypernetwork sha256 {detail.get('hypernet_digest')}", file=out)
        if detail.get("release") == "served":
            print(f"session {session}: release served, query budget {detail.get('query_budget')}", file=out)
    for session, lines in _query_counts(tables["queries"], settings).items():
        print(f"session {session}: queries to the served model, by party (what they asked is never recorded):",
              file=out)
        for line in lines:
            print(line, file=out)
    print("stages:", file=out)
    for r in tables["stages"]:
        print(f"  {_time(r['time'])} round {r['round']} layers {r['layers']} attempt {r['attempt']}: "
              f"{r['event']} {r['detail']}", file=out)
    for r in tables["decisions"]:
        print(f"  {_time(r['time'])} round {r['round']} decision {r['decision_id'][:16]}: {r['kind']}", file=out)
    return 0


def _settings(stages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{session: the release defences (with the (ε, δ) of its noise when it has some) and release policy its
    coordinator recorded when the session (or its resumption) started}."""
    import json

    out = {}
    for r in stages:
        if r["event"] != "joining":
            continue
        try:
            detail = json.loads(r["detail"] or "{}")
        except ValueError:
            detail = {}
        detail = detail if isinstance(detail, dict) else {}
        if not isinstance(detail.get("defence"), str):
            detail["defence"] = "not recorded (a ledger from before defences)"
        out[r["session_id"]] = detail
    return out


def _query_counts(rows: list[dict[str, Any]], settings: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """{session: one line per party that queried its served model: queries, answered, refused (by why), the forward
    passes used of the budget (the solver's count in its last answer), and whether it said it was done}."""
    from collections import Counter

    out: dict[str, list[str]] = {}
    for session in sorted({r["session_id"] for r in rows}):
        budget = settings.get(session, {}).get("query_budget")
        lines = []
        for party in sorted({r["party"] for r in rows if r["session_id"] == session}):
            mine = [r for r in rows if r["session_id"] == session and r["party"] == party]
            answered = sum(r["outcome"] == "accepted" for r in mine)
            why = Counter(r["refusal"] for r in mine if r["outcome"] != "accepted")
            done = any(r["outcome"] == "accepted" and r["kind"] == "done" for r in mine)
            lines.append(f"  {party}: {len(mine)} queries, {answered} answered, {len(mine) - answered} refused"
                         + (f" ({', '.join(f'{k} {n}' for k, n in sorted(why.items()))})" if why else "")
                         + f", {max(r['used'] for r in mine)} forward passes used of {budget}" + (", done" * done))
        out[session] = lines
    return out


def _ledger_of(config: Any) -> Any:  # Path -> Path (pathlib imported lazily, as the CLI does)
    """The ledger a session file names (``[paths] ledger``, relative to the file)."""
    from secure_collab.config import load_config
    from secure_collab.errors import ConfigError

    if not config.is_file():
        raise ConfigError(f"no --ledger given and no session file at {config} (--config) to find it from")
    return load_config(config).paths.ledger


def _time(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]


def _print_table(rows: list[dict], out) -> None:
    shown = [{**r, "time": _time(r["time"]), "digest": r["digest"][:16]} for r in rows]
    cells = [[("" if r[c] is None else str(r[c])) for c in COLUMNS] for r in shown]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)), file=out)
