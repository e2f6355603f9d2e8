"""`secure-collab defences`: the defence grid over independent sessions, every attack on the release against it.

For each session (parties × per-party edits, disjoint records of the report set) and each defence of --grid, the
collaborative edit is simulated with the defence (``run_edit(..., defence=)``, as the networked session applies
it), its utility and damage measured, and every attack of ``attacks.defence_sweep`` run on the release. Each
(session, defence) is written to OUT/session-S-DEFENCE.json as it finishes: an interrupted run resumes. The JSON
``results`` rows hold, per (defence, attack), recall@m and @5m with 95 % intervals over sessions, the cost per
candidate, efficacy, generalization, specificity, damage_kl and epsilon (the (ε, δ) of noise:Z over the edited layers
at its delta, with --key-norm-bound and --residual-norm-bound as κ and ρ; null for a defence without noise). The
plot is the frontier: the best attack's recall@m against efficacy and damage per defence.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from attacks.bounds import KEY_NORM_BOUND, RESIDUAL_NORM_BOUND

HELP = "sweep release defences over sessions: every attack's recall against utility and damage (resumable)"


def _grid(text: str) -> list[str]:
    from secure_collab.editing.defences import DefenceError, parse_defence

    out = []
    for part in text.split(","):
        try:
            out.append(parse_defence(part).spec())
        except DefenceError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return out


def add_layout_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep's sessions: model, report set, parties, edits per party and seed (also for the scripts in
    benchmarks/ that replay its sessions)."""
    p.add_argument("--model", default="smollm2-135m", help="public model (default: %(default)s)")
    p.add_argument("--requests", default="benchmarks/results/defences/requests.json",
                   help="report set; session s edits records [s*m, (s+1)*m) (default: %(default)s)")
    p.add_argument("--limit", type=int, default=300, help="records in the report set (default: %(default)s)")
    p.add_argument("--parties", type=int, default=10, help="parties per session (default: %(default)s)")
    p.add_argument("--per-party", type=int, default=3, help="edits per party (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the candidates and decoy draws (default: %(default)s)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option

    add_layout_arguments(p)
    p.add_argument("--offset", type=int, default=0, help="skip this many records (default: %(default)s)")
    p.add_argument("--sessions", type=int, default=10, help="independent sessions (default: %(default)s)")
    p.add_argument("--first-session", type=int, default=0,
                   help="run sessions from this one on (another process may run the ones before it; the summary "
                        "holds every session of --sessions on disk) (default: %(default)s)")
    p.add_argument("--grid", type=_grid, default=["none", "camouflage:1", "camouflage:3", "rank:20"],
                   help="comma-separated defences (default: none,camouflage:1,camouflage:3,rank:20)")
    p.add_argument("--variant", choices=("sequential", "oneshot"), default="sequential",
                   help="the session's variant (a served release runs oneshot) (default: %(default)s)")
    p.add_argument("--key-norm-bound", type=float, default=KEY_NORM_BOUND,
                   help="κ of noise:Z: each key is clipped to ‖k‖ ≤ κ (default %(default)s: SmolLM2's keys at "
                        "layers 3-7 measured 1.9-15.1)")
    p.add_argument("--residual-norm-bound", type=float, default=RESIDUAL_NORM_BOUND,
                   help="ρ of noise:Z: each residual is clipped to ‖r‖ ≤ ρ (default %(default)s: SmolLM2's first-layer "
                        "residuals measured 18-24)")
    p.add_argument("--model-floor", action="store_true",
                   help="also run the black-box attack (2 full forward passes per candidate per session)")
    p.add_argument("--floor-templates", default=None, metavar="RECORDS",
                   help="also run the black box with relation prompts: one prompt per relation of this record file "
                        "(its records outside the report set; ../shared/data/counterfact.json: 34), one full forward "
                        "pass per template per candidate per session (default: off)")
    p.add_argument("--floor-cascade-only", action="store_true",
                   help="with --floor-templates and --model-floor: the templates on the 2-prompt screen's 5m best "
                        "candidates only (the cascade row), not on every candidate (default: every candidate)")
    p.add_argument("--floor-reverse", action="store_true",
                   help="walk the template floor's cached chunks from the end: a second process with the same "
                        "arguments shares each session's work (default: off)")
    p.add_argument("--distractor-records", nargs="*", default=[], help="record files whose subjects join the "
                   "candidates (e.g. ../shared/data/zsre_mend_train_1k.json)")
    p.add_argument("--damage-subjects", type=int, default=200,
                   help="public titles the damage KL is measured on (default: %(default)s)")
    p.add_argument("--out", required=True, help="directory for the per-session results (resumable)")
    p.add_argument("--cache-dir", default=None, help="model and covariance cache (default: ~/.cache/secure-collab)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--cached-only", action="store_true",
                   help="run nothing: summarise the (session, defence) runs already in --out (each defence's rows "
                        "say how many sessions they hold)")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="the frontier plot (default: OUT/frontier.png)")
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    from attacks import defence_sweep as ds
    from attacks.experiment import build_experiment
    from secure_collab.cli._output import write_json
    from secure_collab.editing.defences import parse_defence

    say = (lambda _m: None) if args.quiet else (lambda m: print(f"[defences] {m}", flush=True))
    for name in ("key_norm_bound", "residual_norm_bound"):
        if not 0 < getattr(args, name) < float("inf"):
            print(f"defences: --{name.replace('_', '-')} must be a finite number > 0", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    need = args.sessions * args.parties * args.per_party
    if need > args.limit:
        print(f"defences: {args.sessions} sessions × {args.parties * args.per_party} edits need {need} records; "
              f"--limit is {args.limit}", file=sys.stderr)
        return 2
    if not 0 <= args.first_session < args.sessions:
        print(f"defences: --first-session must be in [0, {args.sessions})", file=sys.stderr)
        return 2
    floor_records = None
    if args.floor_templates:
        from secure_collab.data.formats import load_requests

        try:
            floor_records = load_requests(args.floor_templates)
        except (OSError, ValueError) as exc:
            print(f"defences: --floor-templates {args.floor_templates}: {exc}", file=sys.stderr)
            return 2
    ns = argparse.Namespace(**vars(args), candidates=None, trials=0)
    exp = build_experiment(ns, say)
    templates: list[str] = []
    if floor_records is not None:
        from attacks.candidates import relation_templates

        templates = relation_templates(floor_records, exp.requests)
        if not templates or any("{}" not in t for t in templates):
            print(f"defences: --floor-templates {args.floor_templates}: no relation prompts with a subject slot",
                  file=sys.stderr)
            return 2
        say(f"template floor: {len(templates)} relation prompts from {args.floor_templates}")
    if args.floor_cascade_only and not (templates and args.model_floor):
        print("defences: --floor-cascade-only needs --floor-templates and --model-floor", file=sys.stderr)
        return 2
    sw = ds.Sweep(exp, args.parties, args.per_party, damage_subjects=args.damage_subjects,
                  model_floor=args.model_floor, floor_templates=templates, floor_reverse=args.floor_reverse,
                  floor_full=not args.floor_cascade_only,
                  seed=args.seed, say=say, key_norm_bound=args.key_norm_bound,
                  residual_norm_bound=args.residual_norm_bound)
    done = ds.load_done(out)
    t0 = time.time()
    todo = [(s, d) for s in range(args.first_session, args.sessions) for d in args.grid if (s, d) not in done]
    if args.cached_only:
        say(f"{len(done)} runs cached in {out}; --cached-only: {len(todo)} not run")
        todo = []
    say(f"{len(done)} runs cached in {out}, {len(todo)} to go")
    for i, (s, d) in enumerate(todo):
        path = out / f"session-{s}-{d.replace(':', '_').replace('+', '-')}.json"
        if path.is_file():  # another process of the same sweep (--first-session) got here first
            done[(s, d)] = json.loads(path.read_text())
            continue
        r = ds.run_session(sw, s, parse_defence(d))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(r, indent=1) + "\n")
        tmp.replace(path)
        done[(s, d)] = r
        best = max(r["attacks"].items(), key=lambda kv: kv[1]["recall_m"])
        left = (time.time() - t0) / (i + 1) * (len(todo) - i - 1)
        say(f"[{i + 1}/{len(todo)}] session {s} {d}: efficacy {r['efficacy']:.3f}, damage {r['damage_kl']:.4f}, "
            f"best attack {best[0]} recall@m {best[1]['recall_m']:.3f}; about {left / 60:.0f} min left")
    done.update(ds.load_done(out))  # what another process of the same sweep finished meanwhile
    results = [done[(s, d)] for s in range(args.sessions) for d in args.grid if (s, d) in done]
    rows = ds.summarise(results, ds.costs(sw), sw.m / exp.n, {d: sw.epsilon(parse_defence(d)) for d in args.grid})
    doc = {"meta": {"model": args.model, "requests": args.requests, "offset": args.offset, "limit": args.limit,
                    "sessions": args.sessions, "cached_only": args.cached_only, "parties": args.parties,
                    "per_party": args.per_party,
                    "grid": args.grid, "n_candidates": exp.n, "layers": list(exp.setup.hp.layers),
                    "lambda": exp.setup.hp.mom2_update_weight, "seed": args.seed, "variant": args.variant,
                    "key_norm_bound": args.key_norm_bound, "residual_norm_bound": args.residual_norm_bound,
                    "floor_templates": templates, "floor_cascade_only": args.floor_cascade_only},
           "results": rows}
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    from attacks.plots import budget_plot, defence_frontier, recall_against_cost

    plot = Path(args.plot) if args.plot else out / "frontier.png"
    defence_frontier(rows, plot)
    recall_against_cost(rows, plot.with_name(plot.stem + "-cost.png"))
    budget_plot(rows, plot.with_name(plot.stem + "-budget.png"))
    if not args.quiet:
        for row in rows:
            print(f"{row['defence']:<22} {row['attack']:<15} recall@m {row['recall_m']:.3f} "
                  f"[{row['recall_m_ci'][0]:.3f}, {row['recall_m_ci'][1]:.3f}]  @5m {row['recall_5m']:.3f}  "
                  f"efficacy {row['efficacy']:.3f}  damage {row['damage_kl']:.4f}")
        print(f"wrote {out / 'results.json'} and {plot}")
    write_json(args, doc)
    return 0
