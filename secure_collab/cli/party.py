"""`secure-collab party --config F --name a --requests R`: one institution's side of a session."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runtime import is in engine_callbacks: building the command line loads no party code
    from parties.runner import PartyEngine

HELP = "take part in a session: send protected statistics, verify and apply each signed update"
# = parties.workers.DEFAULT_WORKER_TIMEOUT_S (tested), not imported: building the command line loads no party code
DEFAULT_WORKER_TIMEOUT_S = 3600.0
METRICS = ("efficacy", "generalization", "specificity", "score")
__all__ = ["HELP", "add_arguments", "engine_callbacks", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._roles import add_role_options

    add_role_options(parser)
    parser.add_argument("--name", required=True, help="this party's roster name")
    parser.add_argument("--requests", required=True, action="append", metavar="FILE",
                        help="this party's edit requests (CounterFact, zsRE, MQuAKE or JSONL). Over several rounds: "
                             "repeat it once per round (file r is round r), or give one file whose records carry a "
                             "'round' field (else its requests are split into contiguous blocks, one per round)")
    parser.add_argument("--save", metavar="DIR", default=None,
                        help="write the edited model (from_pretrained loads it) and patch.safetensors here "
                             "(default: not saved)")
    parser.add_argument("--patch", metavar="FILE", default=None,
                        help="write the applied ΔW here (safetensors; `secure-collab apply` reads it) "
                             "(default: not written)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when present), cpu, cuda:0, ... (default: auto; with --workers, auto and "
                             "cuda give each worker its own GPU, cuda:LOCAL_RANK)")
    parser.add_argument("--device-map", default=None, metavar="MAP",
                        help="spread a model larger than one device over this host's GPUs with accelerate's "
                             "device_map (auto, balanced, sequential); one process only (default: off, the whole "
                             "model on --device)")
    parser.add_argument("--workers", type=int, default=1, metavar="W",
                        help="compute this party's targets and statistics in W processes on this host (torch."
                             "distributed: gloo on a CPU, NCCL on GPUs); the sums equal one process's within float64 "
                             "round-off. Under torchrun leave it at 1 (WORLD_SIZE says how many) (default: 1)")
    parser.add_argument("--worker-timeout", type=float, default=DEFAULT_WORKER_TIMEOUT_S, metavar="S",
                        help="with several workers: how long one waits for the others' share of targets or "
                             "statistics before the party fails (a worker that dies fails it at once) "
                             f"(default: {DEFAULT_WORKER_TIMEOUT_S:g})")
    parser.add_argument("--served-eval", action="store_true",
                        help="served release: measure this party's efficacy through queries to the served model "
                             "(two forward passes of its query budget per request); without it the report says its "
                             "edits were not evaluated")


def engine_callbacks(config: Any, name: str, args: argparse.Namespace, group: Any = None) -> PartyEngine:
    """Load the model and this party's requests; return the engine's callbacks for the network loop. ``group``:
    worker 0's ``parties.workers.WorkerGroup`` when the party runs as several processes."""
    from pathlib import Path

    from parties.runner import PartyEngine
    from parties.workers import LeadEditor

    editor = make_editor(config, args, group)
    lead = editor if group is None else LeadEditor(editor, group)

    def finish(result: Any) -> dict:
        if config.session.served:  # no ΔW here: nothing to save, the model is the base model
            return editor.finish_served(result.served)
        return editor.finish(save=Path(args.save) if args.save else None,
                             patch=Path(args.patch) if args.patch else None, release_sha256=result.applied)

    served_queries = editor.served_queries if config.session.served and getattr(args, "served_eval", False) else None
    return PartyEngine(lead.compute_statistics, lead.apply_delta, finish, lead, served_queries)


def make_editor(config: Any, args: argparse.Namespace, group: Any = None) -> Any:
    """This party's editing engine over its requests (on this worker's share, with ``group``)."""
    from pathlib import Path

    from parties.runner import party_editor
    from secure_collab.data.formats import load_requests
    from secure_collab.editing.session import requests_by_round
    from secure_collab.errors import ConfigError

    if not args.requests:
        raise ConfigError("--requests is required: this party's edit requests")
    files = [load_requests(path) for path in args.requests]
    try:
        rounds = requests_by_round(files, config.session.rounds)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    options: dict[str, Any] = {}
    if group is not None:
        from parties.workers import worker_device

        options["shard"] = group.shard
        device = worker_device(args.device, group.launch.local_rank)
    else:
        device = args.device
    if getattr(args, "device_map", None):
        options["device_map"] = args.device_map
    return party_editor(config, [r for f in files for r in f], device=device,
                        cache=Path(args.cache_dir) if args.cache_dir else None, allow_download=args.allow_download,
                        progress=not args.quiet and (group is None or group.launch.rank == 0), rounds=rounds,
                        **options)


def run(args: argparse.Namespace) -> int:
    from parties.runner import run_party_session
    from secure_collab.cli._output import write_json
    from secure_collab.cli._roles import load_scheme, rejoin_hint, require_secret, set_threads, stop_on_signals
    from secure_collab.config import load_config
    from secure_collab.errors import ConfigError

    set_threads(args.threads)
    config = load_config(args.config)
    if args.name not in config.roster.parties:
        raise ConfigError(f"party {args.name!r} is not in the roster (parties: "
                          f"{', '.join(sorted(config.roster.parties))})")
    launch = workers_launch(args, config)
    if launch is not None and launch.rank > 0:  # a worker: no network, no report; worker 0 has them
        return run_worker(args, config, launch)
    require_secret(config.paths.keys / f"party-{args.name}.key_secret", f"party {args.name}",
                   config.roster.parties[args.name])
    if config.session.served and (args.save or args.patch):
        raise ConfigError(f"session {config.session.id}'s release is served: no party receives ΔW, so there is no "
                          "edited model or patch to write (--save, --patch); ask the served model with "
                          "`secure-collab query`")
    check_outputs(args)  # before the model loads and the party joins: a bad path must not lose the session's work
    group = start_workers(args, config)
    try:
        engine = engine_callbacks(config, args.name, args, group)
        if group is not None:
            group.ready()
        with stop_on_signals(rejoin_hint(f"party {args.name}")) as stop:
            report = run_party_session(config, args.name, load_scheme(config.session.mode), engine, stop=stop)
        report["workers"] = 1 if group is None else group.launch.world
    finally:
        if group is not None:
            group.close()
    show(args, report)
    write_json(args, report, private=True)  # the report counts and scores this party's edits (DESIGN §1)
    if stop.is_set():
        raise KeyboardInterrupt
    return 0 if report["ok"] else 1


def workers_launch(args: argparse.Namespace, config: Any) -> Any:
    """The launch of a party over several processes (torchrun's environment), or None for one process; what it
    cannot do is refused here, before anything starts."""
    from parties.workers import Launch
    from secure_collab.errors import ConfigError

    launch = Launch.from_environment(getattr(args, "workers", 1))
    several = launch is not None or getattr(args, "workers", 1) > 1
    if several and getattr(args, "device_map", None):
        raise ConfigError("--device-map spreads one process over this host's GPUs; with several workers each "
                          "worker takes its own GPU (--device auto): give one of the two")
    if several and config.session.backend == "malmen":
        raise ConfigError("--workers: a MALMEN party computes its statistics in one process (one forward per edit, "
                          "fast already); run it without --workers")
    return launch


def start_workers(args: argparse.Namespace, config: Any) -> Any:
    """Worker 0: spawn the other workers (--workers W) or meet them (torchrun); None for a party of one process."""
    import sys

    from parties.workers import Launch, WorkerGroup, spawn_workers, worker_device

    launch = Launch.from_environment(args.workers)
    children: list[Any] = []
    if launch is None:
        if args.workers <= 1:
            return None
        launch, children = spawn_workers(list(getattr(args, "_argv", sys.argv[1:])), args.workers)
    return WorkerGroup.join(launch, worker_device(args.device, launch.local_rank), args.worker_timeout, children)


def run_worker(args: argparse.Namespace, config: Any, launch: Any) -> int:
    """Workers 1..W−1: the same editor on this worker's share; each call worker 0 makes, until it stops."""
    from parties.workers import WorkerGroup, serve, worker_device

    group = WorkerGroup.join(launch, worker_device(args.device, launch.local_rank), args.worker_timeout)
    try:
        editor = make_editor(config, args, group)
        group.ready()
        serve(editor, group, config.session.d_v, config.session.d_k)
    finally:
        group.close()
    return 0


def check_outputs(args: argparse.Namespace) -> None:
    from secure_collab.files import check_writable

    check_writable(args.patch, "--patch")
    check_writable(getattr(args, "json", None), "--json")
    check_writable(args.save, "--save", directory=True)


# why a metric has no value: MEMIT's CounterFact metrics need prompts a plain request file may not carry
WHY_NO_VALUE = {
    "efficacy": "not measured on these requests",
    "generalization": "the requests carry no paraphrase prompts",
    "specificity": "the requests carry no neighbourhood prompts",
    "score": "the harmonic mean of efficacy, generalization and specificity needs all three",
}


def show(args: argparse.Namespace, report: dict) -> None:
    """The party's metrics table (before → after, on its own requests) and one line on the session."""
    from rich.table import Table

    from secure_collab.cli._output import console

    out = console(args)
    if report.get("post"):
        table = Table(title=f"party {report['party']}: {report.get('edits', '?')} edits, session {report['session']}")
        for col in ("metric", "before", "after"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        missing = []
        for m in METRICS:
            pre, post = report["pre"].get(m), report["post"].get(m)
            if pre is None and post is None:
                missing.append(m)
            table.add_row(m, "-" if pre is None else f"{pre:.3f}", "-" if post is None else f"{post:.3f}")
        out.print(table)
        served = report.get("release") == "served"
        for m in missing:
            why = "a served release measures efficacy only, through queries" if served else WHY_NO_VALUE[m]
            out.print(f"  {m} -: {why}", markup=False)
    status = "done" if report["ok"] else "FAILED"
    held = (f"{len(report['noticed'])} steps released to the served model (no ΔW here)"
            if report.get("release") == "served" else f"{len(report['applied'])} ΔW applied")
    out.print(f"party {report['party']}: {status}: {report['reason']}; {held}, "
              f"{size(report['bytes_sent'])} sent in {report['seconds']:.1f} s", markup=False)
    if report.get("model"):
        out.print(f"  model: {report['model']}", markup=False)
    if report.get("decoys"):
        d = report["decoys"]
        out.print(f"  decoys: {d['answer_changed']} of {d['edits']} secret decoy subjects' top-1 answer changed by "
                  f"the joint edit after the repair round, which pushed back {d.get('repaired', 0)}"
                  + (" (cross-talk of other parties' edits; docs/privacy.md)" if d["answer_changed"] else ""),
                  markup=False)
    written = [f"{what}: {report[key]}" for what, key in (("patch", "patch"), ("edited model", "saved_model"))
               if report.get(key)]
    if written:
        out.print("  ".join(written), markup=False)


def size(n: float) -> str:
    """Bytes for a person: 82652370 -> '82.7 MB' (decimal units, as network traffic is counted)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
