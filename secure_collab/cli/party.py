"""`secure-collab party --config F --name a --requests R`: one institution's side of a session."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runtime import happens in run(): --help stays fast
    from parties.client import ApplyDelta, ComputeStatistics

HELP = "take part in a session: send protected statistics, verify and apply each signed update"


@dataclass(frozen=True)
class PartyEngine:
    """What the editing engine gives the party runtime (see parties.client for the contracts)."""

    compute_statistics: ComputeStatistics  # (round, layer) -> {"G": (d_k, d_k), "B": (d_v, d_k)}
    apply_delta: ApplyDelta  # (layer, ΔW (d_v, d_k) float64), already verified
    finish: Callable[[Any], dict] | None = None  # (PartyResult) -> report (evaluation, saving the model)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="session configuration (TOML)")
    parser.add_argument("--name", required=True, help="this party's roster name")
    parser.add_argument("--requests", help="this party's edit requests (JSON / JSONL)")
    parser.add_argument("--save", help="directory to save the edited model to")
    parser.add_argument("--threads", type=int, default=0, help="math threads for this process (0: default)")
    parser.add_argument("--json", help="write the party's report here")
    parser.add_argument("--patch", help="write the applied ΔW per (round, layer) here (safetensors)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    parser.add_argument("--cache-dir", default=None, help="cache of converted models and templates")


def engine_callbacks(config: Any, name: str, args: argparse.Namespace) -> PartyEngine:
    """Load the model and this party's requests; return the engine's callbacks for the network loop."""
    from pathlib import Path

    from parties.engine import PartyEditor
    from secure_collab.data.formats import load_requests

    if not args.requests:
        raise SystemExit("party: --requests is required (this party's edit requests)")
    requests = load_requests(args.requests)
    editor = PartyEditor(config.session, requests, device=args.device,
                         cache=Path(args.cache_dir) if args.cache_dir else None,
                         log=lambda msg: print(f"party {name}: {msg}", flush=True))

    def finish(_result: Any) -> dict:
        return editor.finish(save=Path(args.save) if args.save else None,
                             patch=Path(args.patch) if args.patch else None)

    return PartyEngine(editor.compute_statistics, editor.apply_delta, finish)


def run(args: argparse.Namespace) -> int:
    import json

    from parties import run_party
    from secure_collab.cli._roles import load_scheme, set_threads
    from secure_collab.config import load_config

    set_threads(args.threads)
    config = load_config(args.config)
    engine = engine_callbacks(config, args.name, args)
    result = run_party(config, args.name, load_scheme(config.session.mode), engine.compute_statistics,
                       engine.apply_delta)
    report = {"party": args.name, "ok": result.ok, "reason": result.reason, "bytes_sent": result.bytes_sent,
              "seconds": round(result.seconds, 3), "refusals": result.refusals,
              "applied": {f"{r}/{lay}": sha for (r, lay), sha in sorted(result.applied.items())}}
    if engine.finish is not None and result.ok:
        report.update(engine.finish(result))
    if args.json:  # the report counts this party's edits: private (DESIGN §1)
        from secure_collab.files import open_private

        with open_private(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(f"party {args.name}: {'done' if result.ok else 'FAILED'}: {result.reason}; "
          f"{result.bytes_sent} bytes sent in {result.seconds:.1f} s")
    return 0 if result.ok else 1
