"""Sweep λ (mom2_update_weight) and the edited layers for a model; writes docs/lambda_sweep.md and a JSON.

Targets z* depend only on the request and the last edited layer, so they are optimised once per layer set and
reused across λ. Each configuration is a Global-Edit (one machine, all requests), evaluated with MEMIT's metrics.

    python benchmarks/lambda_sweep.py --model smollm2-135m --limit 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from secure_collab.cli.edit import load_request_set
from secure_collab.cli.stats import parse_layers
from secure_collab.covariance import layer_covariances
from secure_collab.editing.hparams import default_hparams
from secure_collab.editing.memit import restore, run_edit, snapshot
from secure_collab.editing.targets import compute_targets
from secure_collab.editing.templates import context_templates
from secure_collab.evaluation import evaluate
from secure_collab.models import load_model
from secure_collab.models.specs import n_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", default="../shared/data/counterfact.json")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--lambdas", default="100,300,1000,3000,15000")
    ap.add_argument("--layer-sets", default="3-7;2-6;5-9")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default="benchmarks/results/lambda_sweep.json")
    ap.add_argument("--markdown", default="docs/lambda_sweep.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    requests = load_request_set(args.requests, None, args.limit)
    lm = load_model(args.model)
    base = default_hparams(args.model, n_layers(lm.model, lm.spec))
    pre = evaluate(lm, requests).summary()
    rows = []
    for layer_text in args.layer_sets.split(";"):
        hp = base.with_(layers=tuple(parse_layers(layer_text)))
        covs = layer_covariances(lm, hp.layers, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len)
        templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed)
        t = time.perf_counter()
        targets = compute_targets(lm, requests, hp, templates, progress=True)
        t_targets = time.perf_counter() - t
        saved = snapshot(lm, hp.layers)
        for lam in (float(x) for x in args.lambdas.split(",")):
            h = hp.with_(mom2_update_weight=lam)
            run_edit(lm, [requests], h, covs, "global", templates, targets=[targets])
            post = evaluate(lm, requests).summary()
            restore(lm, saved)
            row = {"layers": layer_text, "lambda": lam, **{k: post[k] for k in
                   ("efficacy", "generalization", "specificity", "score")},
                   "target_seconds_per_edit": t_targets / len(requests)}
            rows.append(row)
            print(json.dumps(row))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"model": args.model, "edits": len(requests), "pre": pre,
                                           "rows": rows}, indent=2))
    lines = [f"# λ and layer sweep: {args.model}, {len(requests)} CounterFact edits (Global-Edit)", "",
             f"Command: `python benchmarks/lambda_sweep.py --model {args.model} --limit {args.limit}`", "",
             f"Before the edit: efficacy {pre['efficacy']:.3f}, generalization {pre['generalization']:.3f}, "
             f"specificity {pre['specificity']:.3f}, score {pre['score']:.3f}.", "",
             "| layers | λ | efficacy | generalization | specificity | score |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['layers']} | {r['lambda']:g} | {r['efficacy']:.3f} | {r['generalization']:.3f} | "
              f"{r['specificity']:.3f} | {r['score']:.3f} |" for r in rows]
    Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
