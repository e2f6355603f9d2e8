"""Choose AlphaEdit's hyper-parameters for a model on tuning records, by a rule fixed before looking.

Setting: 2 rounds x 3 parties x 4 edits of CounterFact records [start, start + 24) (the forgetting experiment
reports on other records). Grid: nullspace_threshold x L2. Rule: the largest harmonic mean of (round-1 edits'
efficacy after round 2, round 2's own efficacy, specificity of all edits), ties to the larger threshold (more
of the key space left free). memit-static and memit-dynamic run on the same setting for reference.

    python benchmarks/alphaedit_tune.py --requests ../shared/data/counterfact.json \
        --out benchmarks/results/alphaedit_tune.json

Resumable: every cell goes through the forgetting experiment's cache.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--thresholds", default="5e-3,1e-2,2e-2")
    ap.add_argument("--l2", default="1,10")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the memit-static/dynamic reference cells (the forgetting run compares the rules)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from secure_collab.covariance import layer_covariances
    from secure_collab.data.formats import load_requests
    from secure_collab.editing.hparams import auto_request_batch, default_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.evaluation import harmonic_mean
    from secure_collab.experiments.forgetting import ForgettingPlan, run_forgetting
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers

    t0 = time.perf_counter()
    plan = ForgettingPlan(rounds=2, parties=3, edits_per_party=4, rules=("alphaedit",))
    records = load_requests(args.requests)[args.start:args.start + plan.needed]
    lm = load_model(args.model)
    hp = default_hparams(args.model, n_layers(lm.model, lm.spec)).with_(request_batch=auto_request_batch("cpu"))
    covs = layer_covariances(lm, hp.layers, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len, progress=False)
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed)

    def cell(rules: tuple[str, ...], **changes: float) -> dict:
        res = run_forgetting(lm, records, hp.with_(**changes), covs, templates,
                             ForgettingPlan(2, 3, 4, rules), say=lambda m: print(m, flush=True))
        out = {}
        for rule in rules:
            last = next(r for r in res["rounds"] if r["rule"] == rule and r["round"] == 2)
            parts = [last["first_round"]["efficacy"], last["this_round"]["efficacy"], last["so_far"]["specificity"]]
            out[rule] = {"retention": parts[0], "plasticity": parts[1], "specificity": parts[2],
                         "score": harmonic_mean(parts), "rounds": [r for r in res["rounds"] if r["rule"] == rule]}
        return out

    grid = []
    for thr in (float(x) for x in args.thresholds.split(",")):
        for l2 in (float(x) for x in args.l2.split(",")):
            row = cell(("alphaedit",), nullspace_threshold=thr, alphaedit_l2=l2)["alphaedit"]
            grid.append({"nullspace_threshold": thr, "alphaedit_l2": l2, **row})
            print(f"threshold {thr:g} L2 {l2:g}: score {row['score']:.3f} (retention {row['retention']:.3f}, "
                  f"plasticity {row['plasticity']:.3f}, specificity {row['specificity']:.3f})", flush=True)
    best = max(grid, key=lambda g: (g["score"], g["nullspace_threshold"]))
    reference = None if args.no_reference else cell(("memit-static", "memit-dynamic"))
    result = {"model": args.model, "requests": args.requests, "records": [args.start, args.start + plan.needed - 1],
              "rule": "max harmonic mean of (retention, plasticity, specificity) after round 2; ties: larger threshold",
              "chosen": {"nullspace_threshold": best["nullspace_threshold"], "alphaedit_l2": best["alphaedit_l2"]},
              "grid": grid, "reference": reference, "covariance_tokens": hp.mom2_tokens,
              "seconds": round(time.perf_counter() - t0, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("chosen", result["chosen"], flush=True)


if __name__ == "__main__":
    main()
