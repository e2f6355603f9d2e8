"""`secure-collab session init|show`: write a complete session.toml from the model; show what sites compare."""

from __future__ import annotations

import argparse

from secure_collab.cli._output import add_json_option

HELP = "write a complete, commented session.toml from the model (init), or show its digest and keys (show)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli.malmen import add_backend_arguments
    from secure_collab.cli.stats import parse_layers
    from secure_collab.session_file import PRECISION_BITS, SessionChoices

    d = SessionChoices(parties=())
    sub = parser.add_subparsers(dest="session_command", metavar="ACTION")
    sub.required = True
    init = sub.add_parser("init", help="write session.toml: dimensions, weights digest and templates from the model",
                          description="Write a complete, commented session.toml. Everything derivable comes from "
                                      "the model: d_k, d_v, layers, λ, the weights digest and the context templates.")
    init.add_argument("--model", default="smollm2-135m",
                      help="base model: smollm2-135m, tiny-gpt2, tiny-llama, a directory or a hub id")
    init.add_argument("--parties", default=None,
                      help="comma-separated party names, e.g. a,b,c (default: the roster's parties)")
    init.add_argument("--roster", default=d.paths["roster"],
                      help="roster of every site's public keys (`secure-collab keys roster`), relative to the "
                           "current directory")
    init.add_argument("--roster-sha256", default=None,
                      help="the roster digest the sites agreed on; refuse a roster file with another (default: "
                           "pin the given roster's digest, which `keys check` lets each site verify)")
    init.add_argument("--out", default="session.toml", help="where to write the session file")
    init.add_argument("--id", default=None, help="session id (default: session-DATE-RANDOM)")
    init.add_argument("--mode", choices=("shares", "ckks", "plain"), default=d.mode,
                      help="protection of the statistics (plain: none, for tests only)")
    init.add_argument("--variant", choices=("sequential", "oneshot"), default=None,
                      help="MEMIT variant (default sequential; MALMEN is oneshot)")
    add_backend_arguments(init, default=d.backend, digest=False, pinned=True)
    init.add_argument("--rounds", type=int, default=d.rounds, help="rounds the requests are split over")
    init.add_argument("--layers", type=parse_layers, default=None,
                      help="edited layers, e.g. 3-7 (default: the model's tuned layers)")
    init.add_argument("--lambda", dest="lam", type=float, default=None,
                      help="λ, weight of the covariance (default: the model's tuned value)")
    init.add_argument("--min-parties", type=int, default=d.min_parties, help="fewest parties in any sum")
    init.add_argument("--defence", default=d.defence,
                      help="release defences, joined with '+': none, camouflage:S (the parties hide their keys "
                           "among public decoys), decoys:R (R secret public decoy edits per edit, counted in N), "
                           "rank:K (the solver releases ΔW of rank K), noise:Z (the parties "
                           "clip and add discrete Gaussian noise; delta:D its δ); docs/privacy.md, docs/dp.md")
    init.add_argument("--release", choices=("weights", "served"), default=d.release,
                      help="weights: every party receives ΔW; served: only the solver's host applies it and answers "
                           "each party's encrypted queries within --query-budget (docs/network.md)")
    init.add_argument("--query-budget", type=int, default=d.query_budget,
                      help="served: forward passes each party may ask the served model for")
    init.add_argument("--value-bound", type=float, default=d.value_bound,
                      help="declared max |entry| of one party's statistic")
    init.add_argument("--key-norm-bound", type=float, default=d.key_norm_bound,
                      help="declared max ‖k‖ of one key; with noise:Z the clipping norm κ (SmolLM2: 16; docs/dp.md)")
    init.add_argument("--residual-norm-bound", type=float, default=d.residual_norm_bound,
                      help="declared max ‖r‖ of one residual; with noise:Z the clipping norm ρ (SmolLM2: 32)")
    init.add_argument("--precision-bits", type=int, default=PRECISION_BITS,
                      help="ckks only: bits of precision below the value bound")
    init.add_argument("--bind", default=d.bind, help="where the coordinator listens")
    init.add_argument("--endpoint", default=d.endpoint, help="where the solver and parties reach the coordinator")
    init.add_argument("--join-timeout-s", type=float, default=d.join_timeout_s,
                      help="coordinator's wait for every site to join")
    init.add_argument("--stage-timeout-s", type=float, default=d.stage_timeout_s,
                      help="longest one party may take for one step's statistics")
    init.add_argument("--in-turn", action=argparse.BooleanOptionalAction, default=False,
                      help="ask parties for statistics one at a time (parties sharing one machine)")
    init.add_argument("--dtype", default=d.dtype, help="model dtype in every role: auto, float32, float64")
    init.add_argument("--cache-dir", default=None, help="cache root (default: $SECURE_COLLAB_CACHE or ~/.cache)")
    init.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    init.add_argument("--force", action="store_true", help="overwrite an existing --out")
    add_json_option(init)
    show = sub.add_parser("show", help="print the session's digest, model, weights digest and roster keys")
    show.add_argument("--config", default="session.toml", help="session file")
    add_json_option(show)


def run(args: argparse.Namespace) -> int:
    return _init(args) if args.session_command == "init" else _show(args)


def _init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secure_collab.cli.malmen import resolve_hypernet

    resolve_hypernet(args)
    from secure_collab.cli._output import write_json
    from secure_collab.errors import ConfigError
    from secure_collab.keys import load_roster
    from secure_collab.models import load_model
    from secure_collab.names import NAME_RULE, is_name, shown
    from secure_collab.session_file import (
        SessionChoices,
        describe,
        parse_parties,
        session_document,
        write_session,
    )

    if args.id is not None and not is_name(args.id):  # before anything is read or written
        raise ConfigError(f"bad session id {shown(args.id)}: use {NAME_RULE} (it names the solver's state directory)")
    out = Path(args.out)
    roster_path = Path(args.roster)  # as typed: relative to the current directory, like every other path argument
    if not roster_path.is_file():
        raise ConfigError(f"no roster at {roster_path.resolve()} (--roster {args.roster} read from the current "
                          f"directory {Path.cwd()}): assemble it first with `secure-collab keys roster`")
    import os

    # the session file names it relative to itself (every path in it resolves against the file's directory)
    roster_in_file = Path(os.path.relpath(roster_path.resolve(), out.resolve().parent)).as_posix()
    roster = load_roster(roster_path)
    if args.roster_sha256 and args.roster_sha256 != roster.digest():
        raise ConfigError(f"the roster {roster_path} has digest {roster.digest()}, not the agreed "
                          f"{args.roster_sha256}: check its fingerprints with `secure-collab keys check`")
    parties = parse_parties(args.parties) if args.parties else tuple(sorted(roster.parties))
    if set(parties) != set(roster.parties):
        raise ConfigError(f"--parties {','.join(parties)} differ from the roster's {','.join(sorted(roster.parties))}")
    if not 1 <= args.min_parties <= len(parties):
        raise ConfigError(f"--min-parties must be between 1 and the number of parties ({len(parties)})")
    malmen = args.backend == "malmen"
    if malmen and args.variant == "sequential":
        raise ConfigError("--variant sequential: a MALMEN session is oneshot (every row from the unedited model)")
    variant = args.variant or ("oneshot" if malmen else "sequential")
    paths = {"keys": "keys", "roster": roster_in_file, "ledger": "ledger.sqlite", "solver_state": "solver-state"}
    if args.hypernet:  # relative to the session file, like the roster
        paths["hypernet"] = Path(os.path.relpath(Path(args.hypernet).resolve(), out.resolve().parent)).as_posix()
    choices = SessionChoices(
        parties=parties, roster_sha256=roster.digest(), mode=args.mode, variant=variant, rounds=args.rounds,
        layers=tuple(args.layers) if args.layers else None, lam=args.lam, min_parties=args.min_parties,
        value_bound=args.value_bound, key_norm_bound=args.key_norm_bound,
        residual_norm_bound=args.residual_norm_bound,
        precision_bits=args.precision_bits if args.mode == "ckks" else None, session_id=args.id, dtype=args.dtype,
        bind=args.bind, endpoint=args.endpoint, join_timeout_s=args.join_timeout_s,
        stage_timeout_s=args.stage_timeout_s, request_in_turn=args.in_turn, defence=args.defence,
        release=args.release, query_budget=args.query_budget, backend=args.backend,
        hypernet=Path(args.hypernet) if args.hypernet else None, paths=paths)
    lm = load_model(args.model, device="cpu", cache=args.cache_dir, dtype=args.dtype,
                    allow_download=args.allow_download)
    doc = session_document(lm, args.model, choices, cache=args.cache_dir)
    config = write_session(out, doc, force=args.force, title=f"{args.model}, parties {', '.join(parties)}")
    info = {"path": str(out.resolve()), **describe(config)}
    _print(args, info)
    write_json(args, info)
    return 0


def _show(args: argparse.Namespace) -> int:
    from secure_collab.cli._output import write_json
    from secure_collab.config import load_config
    from secure_collab.session_file import describe

    config = load_config(args.config)
    info = {"path": str(args.config), **describe(config)}
    _print(args, info)
    write_json(args, info)
    return 0


def _print(args: argparse.Namespace, info: dict) -> None:
    from secure_collab.cli._output import say

    say(args, f"session {info['session']} ({info['path']})")
    say(args, f"  config digest   {info['config_digest']}   <- every site must see the same")
    say(args, f"  model           {info['model']}, weights sha256 {info['weights_digest'] or '(unchecked)'}")
    say(args, f"  {info['mode']}, {info['variant']}, layers {info['layers']}, d_k {info['d_k']}, d_v {info['d_v']}, "
              f"min_parties {info['min_parties']}, defence {info['defence']}, release {info['release']}"
              + (f" (query budget {info['query_budget']} per party)" if info["query_budget"] is not None else ""))
    if info.get("backend") == "malmen":
        say(args, f"  backend         malmen, hypernetwork sha256 {info['hypernet_digest']}   <- pinned")
    dp = info.get("dp")
    if dp is not None:  # noise:Z: what its (ε, δ) is, per release and over the session
        say(args, f"  noise           σ {dp['sigma_per_party']:.4g} per party ({dp['sigma_total']:.4g} over "
                  f"min_parties), sensitivity {dp['sensitivity']:.4g} (κ {dp['key_norm_bound']:g}, "
                  f"ρ {dp['residual_norm_bound']:g})")
        say(args, f"  (ε, δ)          ({dp['epsilon']:.4g}, {dp['delta']:g}) over {dp['releases']} releases; "
                  f"({dp['epsilon_per_release']:.4g}, {dp['delta']:g}) per release (docs/dp.md)")
    say(args, f"  roster sha256   {info['roster_sha256']}   <- pinned; fingerprints:")
    for who, fp in info["fingerprints"].items():
        say(args, f"    {who:<20} {fp}")
    say(args, f"  coordinator     binds {info['coordinator_bind']}, reached at {info['coordinator_endpoint']}")
