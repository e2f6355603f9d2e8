"""Covariance token budget × λ sweep (Global-Edit, sequential) on tuning records; writes a JSON and a markdown table.

    python benchmarks/budget_sweep.py --model smollm2-135m --requests ../shared/data/counterfact.json \
        --records 0:40 --budgets 20000,100000,300000,all --lambdas 100,300,1000,3000,10000 --threads 1

C_l for every budget comes from one pass over the corpus (a budget's moment is a snapshot of the running sum,
each cached under its own key). Targets come from the engine's target cache (optimised once per request).
Each (budget, λ) is a Global-Edit of all the tuning records, evaluated with MEMIT's probability metrics and the
greedy generation metrics; the model is restored between configurations. "all" is the whole corpus.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from secure_collab.cli.edit import load_request_set
from secure_collab.covariance import covariance_budget_entries
from secure_collab.editing.hparams import auto_request_batch, default_hparams
from secure_collab.editing.memit import restore, run_edit, snapshot
from secure_collab.editing.target_cache import cached_targets
from secure_collab.editing.templates import context_templates
from secure_collab.evaluation import evaluate, generation_metrics
from secure_collab.models import load_model
from secure_collab.models.specs import n_layers

ALL = 10**8  # a budget larger than the corpus: every token of it


def measure(lm, requests) -> dict:
    e = evaluate(lm, requests).summary()
    g = generation_metrics(lm.model, lm.tokenizer, requests).summary()
    return {**{k: e[k] for k in ("efficacy", "generalization", "specificity", "score")},
            "gen_efficacy": g["gen_efficacy"], "gen_generalization": g["gen_generalization"]}


def pick(rows: list[dict], budget_slack: float = 0.01, plateau: float = 0.005) -> tuple[int | str, float]:
    """The rule, fixed before the runs: the smallest budget whose best Score is within ``budget_slack`` of the best
    over all budgets; at it, the middle (lower middle) of the λ values whose Score is within ``plateau`` of the
    best there."""
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    best = {b: max(r["score"] for r in rows if r["budget"] == b) for b in budgets}
    top = max(best.values())
    chosen = next(b for b in budgets if best[b] >= top - budget_slack)
    near = sorted(r["lambda"] for r in rows if r["budget"] == chosen and r["score"] >= best[chosen] - plateau)
    return chosen, near[(len(near) - 1) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", default="../shared/data/counterfact.json")
    ap.add_argument("--records", default="0:40", help="START:STOP record indices tuned on")
    ap.add_argument("--budgets", default="20000,100000,300000,all")
    ap.add_argument("--lambdas", default="100,300,1000,3000,10000")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="benchmarks/results/budget_sweep.json")
    ap.add_argument("--markdown", default="benchmarks/results/budget_sweep.md")
    ap.add_argument("--pick", action="store_true", help="print 'TOKENS LAMBDA' chosen from --json by the rule")
    args = ap.parse_args()
    if args.pick:
        budget, lam = pick(json.loads(Path(args.json).read_text())["rows"])
        print(ALL if budget == "all" else budget, f"{lam:g}")
        return
    torch.set_num_threads(args.threads)
    start, stop = (int(x) for x in args.records.split(":"))
    requests = load_request_set(args.requests, None, stop)[start:]
    budgets = [ALL if b == "all" else int(b) for b in args.budgets.split(",")]
    lambdas = [float(x) for x in args.lambdas.split(",")]
    lm = load_model(args.model)
    base = default_hparams(args.model, n_layers(lm.model, lm.spec)).with_(request_batch=auto_request_batch(
        lm.device.type), variant="sequential")
    t = time.perf_counter()
    entries = covariance_budget_entries(lm, base.layers, budgets, max_seq_len=base.mom2_max_len)
    print(f"covariances for {budgets} in {time.perf_counter() - t:.0f} s", flush=True)
    templates = context_templates(lm, base.n_templates, base.template_length, base.template_seed)
    t = time.perf_counter()
    targets = cached_targets(lm, requests, base, templates, progress=True)
    print(f"targets in {time.perf_counter() - t:.0f} s", flush=True)
    pre = measure(lm, requests)
    print(json.dumps({"pre": pre}), flush=True)
    saved = snapshot(lm, base.layers)
    rows = []
    for b in budgets:
        covs = {layer: e.cov for layer, e in entries[b].items()}
        used = next(iter(entries[b].values())).tokens_used
        for lam in lambdas:
            t = time.perf_counter()
            try:
                run_edit(lm, [requests], base.with_(mom2_update_weight=lam, mom2_tokens=b), covs, "global",
                         templates, targets=[targets])
                row = {"budget": "all" if b == ALL else b, "tokens_used": used, "lambda": lam, **measure(lm, requests)}
            finally:
                restore(lm, saved)
            row["seconds"] = time.perf_counter() - t
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"model": args.model, "requests": args.requests, "records": [start, stop],
                                           "hparams": base.to_dict(), "pre": pre, "rows": rows}, indent=1) + "\n")
    cols = ["efficacy", "generalization", "specificity", "score", "gen_efficacy", "gen_generalization"]
    lines = ["| C tokens | λ | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols),
             "| (unedited) | | " + " | ".join(f"{pre[c]:.3f}" for c in cols) + " |"]
    lines += [f"| {r['tokens_used']:,} | {r['lambda']:g} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |"
              for r in rows]
    Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
