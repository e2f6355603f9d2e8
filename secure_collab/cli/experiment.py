"""`secure-collab experiment merge|forgetting|overlap|conflict`. merge: the merge grid of CollabEdit's Fig. 1 (a
thin shell over ``secure_collab.experiments.merge``): methods × variants × edit counts over P parties, cached per cell,
resumable; the multi-round experiments are in ``experiment_rounds``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HELP = ("run experiments: merge (collab vs Global-Edit vs TA / SA / TIES over edit counts, CollabEdit's Fig. 1), "
        "forgetting over rounds, overlap (dedupe), conflict (resolution)")


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    sub.required = True
    from secure_collab.cli import HelpFormatter

    m = sub.add_parser("merge", help="collab vs Global-Edit vs naive merges over edit counts (Fig. 1)",
                       description=__doc__, formatter_class=HelpFormatter)
    add_merge_arguments(m)
    from secure_collab.cli.experiment_rounds import add_round_experiments

    add_round_experiments(sub)


def add_merge_arguments(m: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option
    from secure_collab.cli.malmen import add_backend_arguments
    from secure_collab.cli.stats import parse_layers

    m.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny-gpt2, tiny-llama, a dir or hub id")
    m.add_argument("--requests", required=True, help="request file (CounterFact, MEND CounterFact, zsRE, JSONL) "
                                                     "or 'bundled'")
    m.add_argument("--format", default=None, help="request format (default: detected)")
    m.add_argument("--start", type=int, default=0, help="skip this many records first (e.g. those tuned on)")
    m.add_argument("--exclude-case-ids", action="append", default=[], metavar="FILE",
                   help="drop the requests whose case_id is in FILE (after --start; e.g. a hypernetwork's training "
                        "and validation records, so that the grid runs on records neither trained nor tuned on); "
                        "repeat for several files")
    m.add_argument("--parties", type=int, default=10)
    m.add_argument("--edits", type=_ints, default=(10, 30, 100), help="edit counts (all parties together)")
    m.add_argument("--methods", type=_names, default=("global", "collab", "ta", "sa", "ties"),
                   help="global, collab, ta, sa, ties, ta-lockstep, sa-lockstep, ties-lockstep")
    m.add_argument("--variant", type=_names, default=None, help="sequential, oneshot or both: sequential,oneshot "
                                                                 "(default: sequential; MALMEN: oneshot, its only one)")
    add_backend_arguments(m)
    m.add_argument("--metrics", choices=("auto", "counterfact", "zsre"), default="auto",
                   help="auto: zsRE metrics for zsRE requests, else CounterFact's")
    m.add_argument("--eval-per-party", type=int, default=0, metavar="K",
                   help="measure the metrics on each party's first K edits only (the same records for every method "
                        "and variant; z_reach and ΔW use all); 0: on every edit")
    m.add_argument("--holders", type=int, default=1, metavar="H",
                   help="parties holding each fact (dedupe off): party p holds blocks p..p+H-1 (mod parties) of "
                        "the distinct facts, so Global-Edit edits H x N requests")
    m.add_argument("--cached-only", action="store_true",
                   help="write the results of the cells already finished (e.g. of a grid cut short), compute none")
    m.add_argument("--layers", type=parse_layers, default=None, help="edited layers (default: the model's)")
    m.add_argument("--lambda", dest="lam", type=float, default=None, help="λ (default: the model's)")
    m.add_argument("--tokens", type=int, default=None, help="covariance token budget (default: the model's)")
    m.add_argument("--fluency-sample", type=_ints, default=(10, 2), metavar="REQUESTS,PROMPTS",
                   help="fluency on the first REQUESTS requests' first PROMPTS generation prompts")
    m.add_argument("--dtype", default="auto", help="auto (float64 for tiny models, else float32), float32, float64")
    m.add_argument("--device", default="auto")
    m.add_argument("--threads", type=int, default=None,
                   help="torch threads (set it when sharing cores) (default: torch's own)")
    m.add_argument("--cache-dir", default=None, help="cache root (default: $SECURE_COLLAB_CACHE or ~/.cache)")
    m.add_argument("--out", required=True, help="output directory: cells/ (the cache), results.csv, results.md, "
                                                "fig1.png, results.json")
    m.add_argument("--title", default=None, help="figure title (default: one naming the grid)")
    add_json_option(m)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_experiment_run", None) is not None:  # forgetting | overlap | conflict
        return int(args._experiment_run(args))
    import torch

    from secure_collab.cli.malmen import resolve_hypernet

    resolve_hypernet(args)
    from rich.console import Console

    from secure_collab.cli.edit import load_request_set
    from secure_collab.covariance import covariance_entries
    from secure_collab.editing.hparams import VARIANTS, auto_request_batch, default_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.errors import UserError
    from secure_collab.experiments.merge import Context, MergeGrid, detect_metrics, run_merge_grid
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers

    def fail(msg: str) -> int:
        raise UserError(msg)  # one line: secure-collab experiment: error: ...

    quiet = bool(getattr(args, "quiet", False))
    console = Console(stderr=True, quiet=quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    malmen = args.backend == "malmen"
    if malmen != bool(args.hypernet):
        return fail("--hypernet DIR goes with --backend malmen (and only with it)")
    memit_only = [flag for attr, flag in (("lam", "--lambda"), ("tokens", "--tokens"))
                  if getattr(args, attr) is not None]
    if malmen and memit_only:
        return fail(f"{', '.join(memit_only)}: MEMIT options, not used by --backend malmen")
    variant = args.variant or (("oneshot",) if malmen else ("sequential",))
    variants = ("sequential", "oneshot") if variant == ("both",) else variant
    if malmen and tuple(variants) != ("oneshot",):
        return fail("--backend malmen is oneshot only (every row from the unedited model): give --variant oneshot")
    if any(v not in VARIANTS for v in variants):
        return fail(f"--variant must be among {', '.join(VARIANTS)} (or both), got {','.join(variants)}")
    if len(args.fluency_sample) != 2:
        return fail("--fluency-sample takes two numbers, REQUESTS,PROMPTS")
    try:
        excluded = _case_ids(args.exclude_case_ids)
        records = load_request_set(args.requests, args.format, None if excluded else args.start + max(args.edits))
        records = [r for r in records[args.start:] if r.case_id not in excluded][:max(args.edits)]
        args._records = records
    except (OSError, ValueError) as e:
        return fail(str(e))
    if len(records) < max(args.edits):
        return fail(f"{max(args.edits)} edits asked for, {len(records)} requests after --start {args.start}"
                    + (f" and --exclude-case-ids ({len(excluded)} ids)" if excluded else ""))
    metrics = detect_metrics(records) if args.metrics == "auto" else args.metrics
    try:
        grid = MergeGrid(edits=tuple(sorted(set(args.edits))), parties=args.parties, methods=args.methods,
                         variants=tuple(variants), metrics=metrics, fluency_requests=args.fluency_sample[0],
                         fluency_prompts=args.fluency_sample[1], eval_per_party=args.eval_per_party,
                         cached_only=args.cached_only, holders=args.holders)
    except ValueError as e:
        return fail(str(e))
    t0 = time.perf_counter()
    with console.status(f"loading {args.model}"):
        lm = load_model(args.model, device=args.device, cache=args.cache_dir, dtype=args.dtype)
    hp = default_hparams(args.model, n_layers(lm.model, lm.spec)).with_(request_batch=auto_request_batch(
        lm.device.type))
    if malmen:
        return _malmen_grid(args, lm, hp, records, grid, console, t0)
    for attr, name in (("layers", "layers"), ("lam", "mom2_update_weight"), ("tokens", "mom2_tokens")):
        if getattr(args, attr) is not None:
            hp = hp.with_(**{name: tuple(args.layers) if attr == "layers" else getattr(args, attr)})
    console.print(f"{args.model}: layers {list(hp.layers)}, λ={hp.mom2_update_weight:g}, C from {hp.mom2_tokens} "
                  f"tokens; {len(records)} requests from {args.requests} (records {args.start}-"
                  f"{args.start + len(records) - 1}), {args.parties} parties, edits {list(grid.edits)}, "
                  f"{metrics} metrics")
    entries = covariance_entries(lm, hp.layers, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len,
                                 cache=args.cache_dir, progress=not quiet)
    covs = {k: e.cov.to(lm.device) for k, e in entries.items()}
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, args.cache_dir)
    ctx = Context(lm, records, hp, covs, templates, cov_digest="-".join(e.key.digest()[:16] for e in entries.values()),
                  cache=args.cache_dir, say=console.log)
    result = run_merge_grid(ctx, grid, Path(args.out))
    return _write_results(args, result, {"hparams": hp.to_dict()}, f"λ={hp.mom2_update_weight:g}", lm, grid,
                          console, t0)


def _case_ids(files: list[str]) -> set[str]:
    """Every case_id in ``files`` (request files of any format; skipped records count too when they have one)."""
    from secure_collab.data.formats import load_requests

    return {r.case_id for f in files for r in load_requests(f, skip_invalid=True) if r.case_id is not None}


def _malmen_grid(args: argparse.Namespace, lm: Any, hp: Any, records: list, grid: Any, console: Any,
                 t0: float) -> int:
    """The grid with MALMEN's edit (``experiments.merge.Context.hypernet``): no covariance, templates or targets."""
    from secure_collab.editing.malmen.net import load_hypernet
    from secure_collab.errors import UserError
    from secure_collab.experiments.merge import Context, run_merge_grid

    try:
        net = load_hypernet(Path(args.hypernet), args.hypernet_digest, next(lm.model.parameters()).dtype, lm.device,
                            lm.source_digest)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if args.layers is not None and tuple(args.layers) != tuple(net.hp.layers):
        raise UserError(f"--layers {args.layers}: the hypernetwork edits layers {list(net.hp.layers)}")
    digest = net.digest()
    console.print(f"{args.model}: MALMEN layers {list(net.hp.layers)}, hypernetwork {digest[:16]}…; {len(records)} "
                  f"requests from {args.requests}, {args.parties} parties, edits {list(grid.edits)}, "
                  f"{grid.metrics} metrics")
    ctx = Context(lm, records, hp, {}, [], cov_digest="", cache=args.cache_dir, say=console.log, hypernet=net)
    try:
        result = run_merge_grid(ctx, grid, Path(args.out))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return _write_results(args, result, {"backend": "malmen", "hypernet_digest": digest, "hparams": net.hp.to_dict()},
                          f"MALMEN {digest[:8]}", lm, grid, console, t0)


def _write_results(args: argparse.Namespace, result: dict, how: dict, label: str, lm: Any, grid: Any, console: Any,
                   t0: float) -> int:
    """results.csv, results.md, fig1.png, results.json (and --json) of a finished grid."""
    from secure_collab.cli._output import human, write_json
    from secure_collab.experiments.merge_report import markdown, plot_fig1, write_csv

    out, metrics, quiet = Path(args.out), grid.metrics, bool(getattr(args, "quiet", False))
    result["setup"] = {"model": args.model, "requests": args.requests, "start": args.start,
                       "records": [args.start, args.start + max(grid.edits) - 1], "parties": args.parties,
                       "exclude_case_ids": list(getattr(args, "exclude_case_ids", [])),
                       "case_ids": [r.case_id for r in getattr(args, "_records", [])],
                       "metrics": metrics, "eval_per_party": grid.eval_per_party, "holders": grid.holders,
                       **how,
                       "seconds": time.perf_counter() - t0,
                       "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
                       "command": "secure-collab " + " ".join(getattr(args, "_argv", sys.argv[1:]))}
    write_csv(result["rows"], out / "results.csv")
    (out / "results.md").write_text(markdown(result, metrics))
    span = (f"records {args.start}-{args.start + max(grid.edits) - 1}" if not getattr(args, "exclude_case_ids", None)
            else f"{max(grid.edits)} held-out records from {args.start}")
    title = (f"{args.model}, {Path(args.requests).name} {span}, {args.parties} parties, {label}"
             if args.title is None else args.title)
    plot_fig1(result, out / "fig1.png", title)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    write_json(args, result)
    if not quiet:
        print(markdown(result, metrics), file=human(args))
    console.print(f"wrote {out}/results.csv, results.md, fig1.png, results.json in {time.perf_counter() - t0:.0f} s")
    return 0
