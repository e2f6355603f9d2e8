"""One attack run as a library call: load the public setup, the report set and the candidates, dispatch per view."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class AttackError(ValueError):
    """A user mistake in the attack's arguments (one-line message)."""


def load_report_set(path: str, offset: int, limit: int) -> list:
    from secure_collab.data.bundled import bundled_requests
    from secure_collab.data.formats import load_requests

    reqs = bundled_requests(offset + limit) if path == "bundled" else load_requests(path, limit=offset + limit,
                                                                                    skip_invalid=True)
    reqs = reqs[offset:offset + limit]
    if not reqs:
        raise AttackError(f"{path}: no records after --offset {offset}")
    return reqs


def build_experiment(args: Namespace, say: Callable[[str], None]):
    from attacks.candidates import candidate_keys, candidate_subjects, read_candidates
    from attacks.runner import Experiment
    from attacks.views import public_setup

    torch.set_num_threads(max(1, args.threads))
    cache = Path(args.cache_dir) if args.cache_dir else None
    requests = load_report_set(args.requests, args.offset, args.limit)
    say(f"loading {args.model}")
    setup = public_setup(args.model, cache, variant=getattr(args, "variant", "sequential"))
    layer = setup.hp.layers[0]  # keys of the first edited layer come from the unedited model in both variants
    if args.candidates:
        names = read_candidates(args.candidates)
        missing = {r.subject for r in requests} - set(names)
        names = [r.subject for r in requests if r.subject in missing] + names
    else:
        names = candidate_subjects(requests, other_records=[Path(p) for p in args.distractor_records],
                                   seed=args.seed)
    say(f"{len(names)} candidate subjects; their keys at layer {layer}")
    cand = candidate_keys(setup, names, layer, say)
    # the sign of a spectral estimate: the side of the public keys' mean (99.7 % of SmolLM2's candidate keys lie
    # on it); the top eigenvector of C has an arbitrary sign and is no substitute
    mean_key = cand.mean(0)
    return Experiment(setup, requests, names, cand, layer, mean_key, say=say, seed=args.seed)


def run_attack(args: Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    from attacks import runner, session_views

    exp = build_experiment(args, say)
    objects = sorted({o for r in exp.requests for o in (r.target_new, r.target_true) if o})
    rows: list[dict] = []
    budget = args.trials
    if args.view in ("keys", "gram") or (args.view == "aggregate" and "target" not in args.attack):
        if "inverter" in args.attack:
            exp.inverter = _inverter(exp, args, say)
        if "inverter" in args.attack:
            from attacks.judge import default_judge

            exp.judge = default_judge()
        rows = runner.key_view_rows(exp, args.view, args.attack, args.m, args.parties,
                                    lambda m: runner.default_trials(m, budget))
    elif args.view == "stats":
        # the pool is the 10 × 3 session of the delta view, so the (expensive) targets are shared with it
        pool = [r for p in session_views.session_requests(exp, 10, 3) for r in p]
        rows = session_views.stats_rows(exp, pool, args.m, objects)
    elif args.view == "aggregate":
        for m in args.m:
            per = max(1, m // args.parties)
            parties = session_views.session_requests(exp, args.parties, per)
            rows += session_views.aggregate_rows(exp, parties, objects, with_targets=True)
    elif args.view in ("delta", "model"):
        for m in args.m:
            per = max(1, m // args.parties)
            parties = session_views.session_requests(exp, args.parties, per)
            got, _ = session_views.delta_rows(exp, parties, objects, getattr(args, "defence", None))
            rows += [r for r in got if args.view == "delta" or r["view"] == "model"]
    meta = {"model": args.model, "requests": args.requests, "offset": args.offset, "limit": args.limit,
            "layer": exp.layer, "n_candidates": exp.n, "view": args.view, "attack": args.attack,
            "parties": args.parties, "seed": args.seed,
            "defence": args.defence.spec() if getattr(args, "defence", None) is not None else "none"}
    if exp.inverter is not None:
        meta["inverter"] = {k: v for k, v in exp.inverter.meta.items() if not k.startswith("val_")}
        meta["inverter_validation"] = validate_inverter(exp.inverter, exp.judge)
    return {"meta": meta, "results": rows}


def validate_inverter(inv, judge, n: int = 500) -> dict[str, Any]:
    """Inverter vs nearest-neighbour retrieval on held-out public keys (sentences never trained on)."""
    import numpy as np

    from attacks import metrics

    keys, truth = inv.meta["val_keys"][:n], inv.meta["val_texts"][:n]
    out: dict[str, Any] = {"n": len(truth), "what": "held-out public sentences, last <= window tokens"}
    for name, texts in (("inverter", inv.invert(keys)), ("nearest", inv.nearest(keys))):
        sims = np.diag(judge.similarity(truth, texts))
        mean, lo, hi = metrics.bootstrap_ci(sims.tolist())
        f1 = float(np.mean([metrics.token_f1(a, b) for a, b in zip(texts, truth, strict=True)]))
        exact = float(np.mean([a.strip() == b.strip() for a, b in zip(texts, truth, strict=True)]))
        out[name] = {"judge_similarity": mean, "judge_similarity_ci": [lo, hi], "token_f1": f1, "exact": exact,
                     "examples": [{"true": t, "recovered": r} for t, r in list(zip(truth, texts, strict=True))[:5]]}
    out["inverter_beats_nearest"] = out["inverter"]["judge_similarity"] > out["nearest"]["judge_similarity"]
    return out


def _inverter(exp, args: Namespace, say):
    from dataclasses import replace

    from attacks.inverter import InverterConfig, train_inverter
    from secure_collab.data.corpus import open_corpus

    cfg = InverterConfig()
    if args.inverter_sentences:
        cfg = replace(cfg, n_sentences=args.inverter_sentences, n_val=min(cfg.n_val, args.inverter_sentences))
    if args.inverter_epochs:
        cfg = replace(cfg, epochs=args.inverter_epochs)
    return train_inverter(exp.setup.lm, exp.layer, exp.setup.templates, list(open_corpus().texts()), cfg,
                          exp.setup.cache, say)
