"""`secure-collab edit --rounds R [--update-rule RULE]`: the single-machine simulation of a multi-round session.

The requests are split into rounds (their ``round`` field, else contiguous blocks), each round among the
parties. Every round's targets are optimised on the model as it then is (cached per model state), the parties'
statistics are combined by the method and solved by the update rule with the cross-round state, and the update
is compared with the Global-Edit of the same rounds (one machine, each round's requests together).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def run_rounds_edit(args: argparse.Namespace, requests: list, console: Any, t_start: float) -> int:
    from secure_collab.cli._edit_common import build_hparams, save_edited
    from secure_collab.cli._output import write_json
    from secure_collab.covariance import layer_covariances
    from secure_collab.editing.memit import rel_diff_per_layer, restore, snapshot, split_parties
    from secure_collab.editing.rounds import ROUND_METHODS, run_rounds
    from secure_collab.editing.session import requests_by_round
    from secure_collab.editing.target_cache import cached_targets
    from secure_collab.editing.templates import context_templates, templates_digest
    from secure_collab.errors import ConfigError
    from secure_collab.evaluation import evaluate
    from secure_collab.experiments.common import metrics
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers

    def fail(msg: str) -> int:  # a user mistake: one line (the CLI prints ConfigError's message alone)
        raise ConfigError(msg)

    if args.method not in ROUND_METHODS:
        return fail(f"--method {args.method} is not available over rounds; one of {', '.join(ROUND_METHODS)}")
    if args.rounds < 1:
        return fail("--rounds must be >= 1")
    try:
        by_round = requests_by_round([requests], args.rounds)
    except ValueError as exc:
        return fail(str(exc))
    if any(len(rnd) < args.parties for rnd in by_round):
        return fail(f"every round needs at least --parties={args.parties} requests; rounds have "
                    f"{[len(rnd) for rnd in by_round]}")
    rounds = [split_parties(rnd, args.parties) for rnd in by_round]
    with console.status(f"loading {args.model}"):
        lm = load_model(args.model, device=args.device, cache=args.cache_dir, dtype=args.dtype,
                        allow_download=args.allow_download)
    try:
        hp = build_hparams(args, args.model, n_layers(lm.model, lm.spec), lm.device.type)
    except ValueError as exc:
        return fail(str(exc))
    console.print(f"model {args.model} on {lm.device}, layers {list(hp.layers)}, update rule {hp.update_rule}, "
                  f"{args.rounds} rounds x {args.parties} parties ({[len(r) for r in by_round]} requests), "
                  f"method {args.method}, {hp.variant}")
    t = time.perf_counter()
    covs = layer_covariances(lm, hp.layers, corpus=args.corpus, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len,
                             cache=args.cache_dir, progress=not args.quiet)
    covs = {k: v.to(lm.device) for k, v in covs.items()}
    t_cov = time.perf_counter() - t
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, args.cache_dir)
    flat = [q for rnd in by_round for q in rnd]
    with console.status("evaluating before the edit"):
        pre = evaluate(lm, flat)
    saved = snapshot(lm, hp.layers)

    def targets(lm_: Any, reqs: list, hp_: Any, tpl: list[str]) -> Any:
        return cached_targets(lm_, reqs, hp_, tpl, cache=args.cache_dir)

    reference = None
    try:
        if args.method != "global" and not args.no_compare:
            console.log("Global-Edit reference (each round's requests on one machine)")
            reference = run_rounds(lm, rounds, hp, covs, templates, method="global", targets=targets,
                                   say=console.log)
            restore(lm, saved)
        t = time.perf_counter()
        outcome = run_rounds(lm, rounds, hp, covs, templates, method=args.method, targets=targets, say=console.log)
        t_edit = time.perf_counter() - t
    except ValueError as exc:  # e.g. no eigenvalue of C below the null-space threshold
        restore(lm, saved)
        return fail(str(exc))
    if args.method == "global":
        reference = outcome
    with console.status("evaluating after the last round"):
        post = evaluate(lm, flat)
    diffs = None if reference is None else [rel_diff_per_layer(o.deltas, g.deltas)
                                            for o, g in zip(outcome, reference, strict=True)]
    bounds = [0]
    for rnd in by_round:
        bounds.append(bounds[-1] + len(rnd))
    keys = ("efficacy", "generalization", "specificity", "score")
    result = {
        "method": args.method, "variant": hp.variant, "update_rule": hp.update_rule, "rounds": args.rounds,
        "parties": args.parties, "edits": len(flat), **{k: post.summary()[k] for k in keys},
        "pre": {k: pre.summary()[k] for k in keys},
        "per_round_after_last": [{"round": r, "edits": bounds[r + 1] - bounds[r],
                                  **metrics(post.details[bounds[r]:bounds[r + 1]])} for r in range(args.rounds)],
        "delta_rel_diff_vs_global": None if diffs is None else max(max(d.values()) for d in diffs),
        "delta_rel_diff_per_round_layer": None if diffs is None else [{str(k): v for k, v in d.items()}
                                                                      for d in diffs],
        "seconds": time.perf_counter() - t_start, "edit_seconds": t_edit, "covariance_seconds": t_cov,
        "model": args.model, "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
        "device": str(lm.device), "hparams": hp.to_dict(), "templates_digest": templates_digest(templates),
        "delta_norm": [{str(k): float(v.norm()) for k, v in o.deltas.items()} for o in outcome],
        "counts": post.counts, "skipped": post.skipped,
    }
    if args.save:
        total = {lay: sum(o.deltas[lay] for o in outcome if lay in o.deltas) for lay in hp.layers}
        save_edited(lm, total, Path(args.save), result)
        result["saved_model"] = str(Path(args.save).resolve())
    _show(console, result)
    write_json(args, result)
    return 0


def _show(console: Any, r: dict) -> None:
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table(title=f"{r['method']} / {r['variant']} / {r['update_rule']}: {r['edits']} edits, {r['rounds']} "
                        f"rounds x {r['parties']} parties")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after the last round", justify="right")
    for k in ("efficacy", "generalization", "specificity", "score"):
        table.add_row(k, fmt(r["pre"][k]), fmt(r[k]))
    for row in r["per_round_after_last"]:
        table.add_row(f"round {row['round']} edits: efficacy", "", fmt(row["efficacy"]))
    console.print(table)
    d = r["delta_rel_diff_vs_global"]
    console.print(f"ΔW vs Global-Edit: {'-' if d is None else f'{d:.2e}'} (max relative Frobenius over rounds and "
                  f"layers); {r['seconds']:.1f} s")
