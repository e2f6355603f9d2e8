"""Which decoy draws of the `defences` sweep a change of the decoy rule's second stage changes: a replay.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/decoy_rule_replay.py --ratios 1 3 9 --sessions 10 \
        --json benchmarks/results/decoy_rule_replay.json

For each session and party of a `secure-collab defences` sweep (its defaults: the report set's records split into
10 parties × 3 edits per session, each party's generator ``random.Random(f"{seed}/{session}/{party}")``, draws on the
public model as it is at the round's start), ``decoys.draw_decoys`` is run twice on the same scores: with the public
``SURE_PROMPTS`` (the rule now) and without them (the rule before, the surest of the scanned candidates where too few
pass). Where the two give the same decoys, the sweep's runs of that ratio are the same under either rule; the others
are listed (how many decoys each party took from the second stage, and from below the floor under either rule).
"""

from __future__ import annotations

import argparse
import random
import sys

import torch


def main() -> None:
    from attacks.experiment import load_report_set
    from attacks.views import split
    from secure_collab.cli._output import write_json
    from secure_collab.editing.decoys import CONFIDENCE, answer_confidence, draw_decoys
    from secure_collab.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="public model")
    ap.add_argument("--requests", default="benchmarks/results/defences/requests.json", help="the sweep's report set")
    ap.add_argument("--limit", type=int, default=300, help="the sweep's --limit")
    ap.add_argument("--ratios", type=int, nargs="+", default=[1, 3, 9], help="decoys per real edit")
    ap.add_argument("--sessions", type=int, default=10, help="sessions")
    ap.add_argument("--parties", type=int, default=10, help="parties per session")
    ap.add_argument("--per-party", type=int, default=3, help="edits per party")
    ap.add_argument("--seed", type=int, default=0, help="the sweep's --seed")
    ap.add_argument("--json", default=None, help="write the result here ('-': stdout)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lm = load_model(args.model)
    m = args.parties * args.per_party
    records = load_report_set(args.requests, 0, args.limit)
    memo: dict[tuple[str, str], float] = {}

    def score(reqs):
        todo = [r for r in reqs if (r.subject, r.prompt) not in memo]
        for r, x in zip(todo, answer_confidence(lm, todo) if todo else [], strict=True):
            memo[(r.subject, r.prompt)] = x
        return [memo[(r.subject, r.prompt)] for r in reqs]

    rows = []
    for ratio in args.ratios:
        for s in range(args.sessions):
            for k, own in enumerate(split(list(records[s * m:(s + 1) * m]), args.parties)):
                gen = f"{args.seed}/{s}/{k}"
                now = draw_decoys(random.Random(gen), ratio, own, score=score, floor=CONFIDENCE)
                before = draw_decoys(random.Random(gen), ratio, own, score=score, floor=CONFIDENCE, sure=())
                own_prompts = {r.prompt for r in own}
                below_now = sum(memo[(n, p)] < CONFIDENCE for n, p in zip(now[0], now[1], strict=True))
                below_before = sum(memo[(n, p)] < CONFIDENCE for n, p in zip(before[0], before[1], strict=True))
                rows.append({"ratio": ratio, "session": s, "party": k, "same": now == before,
                             "second_stage": sum(p not in own_prompts for p in now[1]),
                             "below_floor_now": below_now, "below_floor_before": below_before})
            done = [r for r in rows if r["ratio"] == ratio and r["session"] == s]
            print(f"decoys:{ratio} session {s}: {sum(not r['same'] for r in done)} of {len(done)} parties draw "
                  f"otherwise; below the floor {sum(r['below_floor_before'] for r in done)} before, "
                  f"{sum(r['below_floor_now'] for r in done)} now", file=sys.stderr, flush=True)
    out = {"model": args.model, "requests": args.requests, "seed": args.seed, "floor": CONFIDENCE, "rows": rows,
           "by_ratio": {str(r): {"parties": sum(x["ratio"] == r for x in rows),
                                 "drawn_otherwise": sum(x["ratio"] == r and not x["same"] for x in rows),
                                 "sessions_changed": sorted({x["session"] for x in rows
                                                             if x["ratio"] == r and not x["same"]}),
                                 "below_floor_before": sum(x["below_floor_before"] for x in rows if x["ratio"] == r),
                                 "below_floor_now": sum(x["below_floor_now"] for x in rows if x["ratio"] == r)}
                          for r in args.ratios}}
    write_json(args, out)


if __name__ == "__main__":
    main()
