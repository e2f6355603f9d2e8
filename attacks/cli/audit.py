"""`secure-collab audit`: one self-contained HTML page on what each role of a finished session saw and leaks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write the privacy audit of a finished session (ledger + measured attacks) as one self-contained HTML page"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option

    p.add_argument("--ledger", required=True, help="the coordinator's SQLite ledger of the session")
    p.add_argument("--html", required=True, metavar="OUT", help="where to write the page")
    p.add_argument("--requests", nargs="*", default=[],
                   help="the session's request files (ground truth) (default: none)")
    p.add_argument("--session", default=None,
                   help="the session to audit (default: the only one; required when the ledger holds several)")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="directory of `secure-collab attack --json` results to include (default: none)")
    add_json_option(p)  # the verdicts


def run(args: argparse.Namespace) -> int:
    from attacks.audit import load_results, read_ledger, render, verdicts
    from secure_collab.cli._output import write_json
    from secure_collab.data.formats import load_requests

    try:
        rec = read_ledger(Path(args.ledger), args.session)
        per_file = {Path(f): load_requests(f) for f in args.requests}
        requests = [r for rs in per_file.values() for r in rs]
        for f, rs in per_file.items():  # requests-<party>.jsonl, as the demo and attacks.session write them
            name = f.name.split(".")[0].removeprefix("requests-")
            if name in rec.roster:
                rec.edits[name] = len(rs)
        if args.results and not Path(args.results).is_dir():
            raise FileNotFoundError(f"results directory {args.results} not found")
        results = load_results(Path(args.results) if args.results else None)
    except (FileNotFoundError, ValueError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    page = render(rec, results, requests)
    out = Path(args.html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    v = {role: {"level": x.level, "verdict": x.reason, "figure": x.figure, "setting": x.setting}
         for role, x in verdicts(rec, results).items()}
    write_json(args, {"session": rec.session["session_id"], "html": str(out), "verdicts": v})
    print(f"audit: {out} ({len(page) / 1e3:.0f} kB); " + "; ".join(f"{r}: {x['level']}" for r, x in v.items()),
          file=sys.stderr)
    return 0
