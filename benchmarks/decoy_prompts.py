"""How often the model is sure of its answer on a subject-first relation prompt: the second stage of the decoy rule.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/decoy_prompts.py --titles 300 --seed 11 \
        --json benchmarks/results/decoy_prompts.json

For ``--titles`` public titles (the decoy sampler's pool, drawn with ``--seed``) and each subject-first relation
prompt (CounterFact's most used prompt per relation, from ``--records``, and ``decoys.SURE_PROMPTS``), the share of
titles on which the model's top-1 next token has p >= the floor (0.9, the default of ``decoys:R@P``) and >= 0.7, and
the most common top-1 token; then the share of titles with at least one of ``SURE_PROMPTS`` at the floor, which is
what the second stage of ``decoys.draw_decoys`` needs. ``SURE_PROMPTS`` was chosen on --seed 7; other seeds are
titles it was not chosen on.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time

import torch


def relation_prompts(path: str) -> list[str]:
    """CounterFact's most used prompt per relation, those with the subject first."""
    with open(path) as f:
        records = json.load(f)
    counts: dict[str, collections.Counter[str]] = {}
    for r in records:
        rw = r["requested_rewrite"]
        counts.setdefault(rw["relation_id"], collections.Counter())[rw["prompt"]] += 1
    best = [c.most_common(1)[0][0] for _, c in sorted(counts.items())]
    return [p for p in best if p.startswith("{}")]


def main() -> None:
    from secure_collab.cli._output import write_json
    from secure_collab.data.requests import Request
    from secure_collab.editing.decoys import CONFIDENCE, SURE_PROMPTS, _next_token_logprobs
    from secure_collab.editing.defences import decoy_subjects
    from secure_collab.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="public model")
    ap.add_argument("--titles", type=int, default=300, help="public titles drawn")
    ap.add_argument("--seed", type=int, default=11, help="seed of the titles' draw (SURE_PROMPTS was chosen on 7)")
    ap.add_argument("--records", default="../shared/data/counterfact.json", help="CounterFact records")
    ap.add_argument("--sure-only", action="store_true", help="measure SURE_PROMPTS only")
    ap.add_argument("--json", default=None, help="write the figures here ('-': stdout)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lm = load_model(args.model)
    titles = decoy_subjects(random.Random(args.seed), args.titles)
    prompts = list(SURE_PROMPTS) + ([] if args.sure_only else
                                    [p for p in relation_prompts(args.records) if p not in SURE_PROMPTS])
    rows, best = [], torch.zeros(len(titles), dtype=torch.float64)
    t0 = time.monotonic()
    for p in prompts:
        lps = torch.cat(list(_next_token_logprobs(lm, [Request(subject=t, prompt=p, target_new="-") for t in titles])))
        top = lps.max(-1)
        prob = top.values.exp()
        if p in SURE_PROMPTS:
            best = torch.maximum(best, prob)
        common = collections.Counter(lm.tokenizer.decode([int(i)]) for i in top.indices).most_common(1)[0]
        rows.append({"prompt": p, "sure": p in SURE_PROMPTS, "at_floor": float((prob >= CONFIDENCE).double().mean()),
                     "at_0.7": float((prob >= 0.7).double().mean()), "top1_most_common": common[0],
                     "top1_most_common_share": common[1] / len(titles)})
        print(f"{rows[-1]['at_floor']:.3f} {rows[-1]['at_0.7']:.3f} {p!r} (top-1 mostly {common[0]!r}) "
              f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    out = {"model": args.model, "titles": len(titles), "seed": args.seed, "floor": CONFIDENCE, "prompts": rows,
           "any_sure_prompt_at_floor": float((best >= CONFIDENCE).double().mean())}
    print(f"titles with a SURE_PROMPTS answer at p >= {CONFIDENCE}: {out['any_sure_prompt_at_floor']:.3f}",
          file=sys.stderr)
    write_json(args, out)


if __name__ == "__main__":
    main()
