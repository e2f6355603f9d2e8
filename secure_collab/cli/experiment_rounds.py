"""`secure-collab experiment forgetting|overlap|conflict`: the multi-party, multi-round experiments (registered by
``cli/experiment.py`` beside ``merge``).

A thin shell over ``secure_collab.experiments``: each writes its table (results.md), plot (PNG) and JSON to
--out, and the JSON to --json if asked ('-' for stdout). Work is cached under the cache directory and resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from secure_collab.cli._output import add_json_option, human
from secure_collab.cli._output import write_json as write_args_json


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_round_experiments(sub: Any) -> None:
    """The three sub-commands (a parser's ``add_subparsers`` object); each sets ``_experiment_run``."""
    from secure_collab.cli import HelpFormatter as fmt  # states a default once, and only a real one
    f = sub.add_parser("forgetting", formatter_class=fmt,
                       help="efficacy of round-1 edits after each later round, one curve per update rule",
                       description="R rounds x P parties x E new edits per round; every update rule from the same "
                                   "unedited model; targets re-optimised each round on the model as it then is.")
    _common(f, requests_default=None)
    f.add_argument("--rounds", type=int, default=4)
    f.add_argument("--parties", type=int, default=3)
    f.add_argument("--edits-per-party", type=int, default=4, help="new edits per party per round")
    f.add_argument("--rules", type=_names, default=("memit-static", "memit-dynamic", "alphaedit"),
                   help="update rules, comma-separated")
    f.set_defaults(_experiment_run=run_forgetting_cli)

    o = sub.add_parser("overlap", formatter_class=fmt,
                       help="one edit held by k parties, with and without dedupe, against one copy",
                       description="P parties with E requests each, one more request copied to k of them (k = 2..P); "
                                   "ΔW with dedupe against ΔW with one copy, and the known-fact check.")
    _common(o, requests_default=None)
    o.add_argument("--parties", type=int, default=3)
    o.add_argument("--edits-per-party", type=int, default=2)
    o.add_argument("--known", type=int, default=4, help="true facts for the known-fact check")
    o.add_argument("--known-residual", type=float, default=0.02, help="the known-fact threshold to report")
    o.add_argument("--update-rule", choices=("memit-static", "memit-dynamic", "alphaedit"), default="memit-static")
    o.set_defaults(_experiment_run=run_overlap_cli)

    c = sub.add_parser("conflict", formatter_class=fmt,
                       help="two parties, two objects for one fact: unresolved, resolved, augmented, across rounds",
                       description="Party A wants a record's target_new, party B another object of the same relation.")
    _common(c, requests_default=None)
    c.add_argument("--facts", type=int, default=8, help="conflicting facts")
    c.add_argument("--augment", type=int, default=2, help="augmented requests per fact the winner adds")
    c.add_argument("--rules", type=_names, default=("memit-static", "memit-dynamic"),
                   help="update rules of the cross-round case (empty: skip it)")
    c.add_argument("--update-rule", choices=("memit-static", "memit-dynamic", "alphaedit"), default="memit-static",
                   help="the rule of the one-round cases")
    c.set_defaults(_experiment_run=run_conflict_cli)


def _common(p: argparse.ArgumentParser, requests_default: str | None) -> None:
    from secure_collab.cli.stats import parse_layers

    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny-gpt2, tiny-llama, a dir or hub id")
    p.add_argument("--requests", default=requests_default, required=requests_default is None,
                   help="request file (CounterFact, MEND CounterFact, zsRE, JSONL) or 'bundled'")
    p.add_argument("--format", default=None, help="request format (default: detected)")
    p.add_argument("--start", type=int, default=0, help="skip this many records first (e.g. those tuned on)")
    p.add_argument("--variant", choices=("sequential", "oneshot"), default=None, help="default: the model's")
    p.add_argument("--layers", type=parse_layers, default=None, help="edited layers (default: the model's)")
    p.add_argument("--lambda", dest="lam", type=float, default=None, help="λ of memit-* (default: the model's)")
    p.add_argument("--past-weight", type=float, default=None, help="λ_past of memit-dynamic (default: the model's)")
    p.add_argument("--nullspace-threshold", type=float, default=None,
                   help="alphaedit: eigenvalues of C below this span the null space (default: the model's)")
    p.add_argument("--alphaedit-l2", type=float, default=None, help="alphaedit: ridge term (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="target optimisation steps (default: the model's)")
    p.add_argument("--tokens", type=int, default=None, help="covariance token budget (default: the model's)")
    p.add_argument("--dtype", default="auto", help="auto (float64 for tiny models, else float32), float32, float64")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (set it when sharing cores) (default: torch's own)")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $SECURE_COLLAB_CACHE or ~/.cache)")
    p.add_argument("--out", required=True, help="output directory (results.md, a PNG plot, results.json)")
    add_json_option(p)


def fail(args: argparse.Namespace, msg: str) -> int:
    print(f"secure-collab experiment {args.experiment}: {msg}", file=sys.stderr)
    return 2


def setup(args: argparse.Namespace, n_records: int) -> Any:
    """Load requests, model, hyper-parameters, covariances and templates; returns a namespace (or an int: failed)."""
    import torch
    from rich.console import Console

    from secure_collab.cli.edit import load_request_set
    from secure_collab.covariance import layer_covariances
    from secure_collab.editing.hparams import auto_request_batch, default_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers

    console = Console(file=human(args), quiet=bool(getattr(args, "quiet", False)))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # n_records == 0: every record after --start (the experiment picks what it needs)
        limit = args.start + n_records if n_records else None
        records = load_request_set(args.requests, args.format, limit)[args.start:]
    except (OSError, ValueError) as exc:
        return fail(args, str(exc))
    if len(records) < n_records:
        return fail(args, f"{n_records} requests needed, {len(records)} left after --start {args.start}")
    with console.status(f"loading {args.model}"):
        lm = load_model(args.model, device=args.device, cache=args.cache_dir, dtype=args.dtype)
    hp = default_hparams(args.model, n_layers(lm.model, lm.spec)).with_(request_batch=auto_request_batch(
        lm.device.type))
    changes = {"layers": tuple(args.layers) if args.layers else None, "mom2_update_weight": args.lam,
               "mom2_past_weight": args.past_weight, "nullspace_threshold": args.nullspace_threshold,
               "alphaedit_l2": args.alphaedit_l2, "v_num_grad_steps": args.steps, "mom2_tokens": args.tokens,
               "variant": args.variant}
    try:
        hp = hp.with_(**{k: v for k, v in changes.items() if v is not None})
    except ValueError as exc:
        return fail(args, str(exc))
    covs = layer_covariances(lm, hp.layers, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len, cache=args.cache_dir,
                             progress=not getattr(args, "quiet", False))
    covs = {k: v.to(lm.device) for k, v in covs.items()}
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, args.cache_dir)
    console.print(f"{args.model}: layers {list(hp.layers)}, λ={hp.mom2_update_weight:g}, λ_past="
                  f"{hp.rule.past_weight:g}, alphaedit threshold {hp.nullspace_threshold:g} L2 {hp.alphaedit_l2:g}, "
                  f"C from {hp.mom2_tokens} tokens; {len(records)} requests (records {args.start}-"
                  f"{args.start + len(records) - 1} of {args.requests})")
    return argparse.Namespace(console=console, records=records, lm=lm, hp=hp, covs=covs, templates=templates)


def finish(args: argparse.Namespace, result: dict[str, Any], table: str, plot: Any, t0: float) -> None:
    from secure_collab.experiments.common import write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result["setup"] = {"model": args.model, "requests": args.requests, "start": args.start,
                       "seconds": round(time.perf_counter() - t0, 1),
                       "command": "secure-collab " + " ".join(sys.argv[1:])}
    (out / "results.md").write_text(table)
    plot(out)
    write_json(result, out / "results.json")
    write_args_json(args, result)


def run_forgetting_cli(args: argparse.Namespace) -> int:
    from secure_collab.experiments.forgetting import ForgettingPlan, run_forgetting
    from secure_collab.experiments.rounds_report import forgetting_table, plot_forgetting

    try:
        plan = ForgettingPlan(args.rounds, args.parties, args.edits_per_party, args.rules)
    except ValueError as exc:
        return fail(args, str(exc))
    return _experiment(args, plan.needed, lambda env: run_forgetting(
        env.lm, env.records, env.hp, env.covs, env.templates, plan, cache=args.cache_dir, say=env.console.log),
        forgetting_table, plot_forgetting, "forgetting.png")


def run_overlap_cli(args: argparse.Namespace) -> int:
    from secure_collab.experiments.overlap import run_overlap
    from secure_collab.experiments.rounds_report import overlap_table, plot_overlap

    return _experiment(args, 1 + args.parties * args.edits_per_party + args.known, lambda env: run_overlap(
        env.lm, env.records, env.hp.with_(update_rule=args.update_rule), env.covs, env.templates,
        parties=args.parties, edits_per_party=args.edits_per_party, known=args.known,
        known_residual=args.known_residual, cache=args.cache_dir, say=env.console.log),
        overlap_table, plot_overlap, "overlap.png")


def run_conflict_cli(args: argparse.Namespace) -> int:
    from secure_collab.experiments.conflict import run_conflict
    from secure_collab.experiments.rounds_report import conflict_table, plot_conflict

    return _experiment(args, 0, lambda env: run_conflict(
        env.lm, env.records, env.hp.with_(update_rule=args.update_rule), env.covs, env.templates,
        facts=args.facts, augment=args.augment, rules=args.rules, cache=args.cache_dir, say=env.console.log),
        conflict_table, plot_conflict, "conflict.png")


def _experiment(args: argparse.Namespace, n_records: int, run: Callable[[argparse.Namespace], dict[str, Any]],
                table_of: Callable[[dict[str, Any]], str], plot: Callable[[dict[str, Any], Path], Any],
                png: str) -> int:
    """Set up (``n_records`` requests after --start; 0: all), run, print the table, write table, plot and JSON."""
    t0 = time.perf_counter()
    env = setup(args, n_records)
    if isinstance(env, int):
        return env
    try:
        result = run(env)
    except ValueError as exc:  # e.g. a null-space threshold below every eigenvalue of C
        return fail(args, str(exc))
    table = table_of(result)
    env.console.print(table)
    finish(args, result, table, lambda out: plot(result, out / png), t0)
    return 0
