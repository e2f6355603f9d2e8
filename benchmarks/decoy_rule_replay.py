"""How many of the `defences` sweep's decoys fall below the floor, with and without the tried second stage: a replay.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/decoy_rule_replay.py --ratios 1 3 9 --sessions 10 \
        --json benchmarks/results/decoy_rule_replay.json

For each session and party of a `secure-collab defences` sweep (its defaults: the report set's records split into
10 parties × 3 edits per session, each party's generator ``random.Random(f"{seed}/{session}/{party}")``, draws on the
public model as it is at the round's start), ``decoys.draw_decoys`` is run twice on the same scores: as the rule is
(the surest of the scanned candidates where too few pass the floor) and with the tried second stage on the public
``SURE_PROMPTS`` (not the default: secure_collab/editing/decoys.py says why). Per party: whether the two draw the
same decoys, how many decoys the second stage took, and how many are below the floor under each.
"""

from __future__ import annotations

import argparse
import random
import sys

import torch


def main() -> None:
    from attacks.cli.defences import add_layout_arguments
    from attacks.experiment import load_report_set
    from attacks.views import split
    from secure_collab.cli._output import write_json
    from secure_collab.editing.decoys import CONFIDENCE, SURE_PROMPTS, answer_confidence, draw_decoys
    from secure_collab.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_layout_arguments(ap)  # the sweep's sessions
    ap.add_argument("--ratios", type=int, nargs="+", default=[1, 3, 9], help="decoys per real edit")
    ap.add_argument("--sessions", type=int, default=10, help="sessions")
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
                staged = draw_decoys(random.Random(gen), ratio, own, score=score, floor=CONFIDENCE, sure=SURE_PROMPTS)
                rule = draw_decoys(random.Random(gen), ratio, own, score=score, floor=CONFIDENCE)
                own_prompts = {r.prompt for r in own}

                def below(drawn):
                    return sum(memo[(n, p)] < CONFIDENCE for n, p in zip(drawn[0], drawn[1], strict=True))

                rows.append({"ratio": ratio, "session": s, "party": k, "same": staged == rule,
                             "second_stage": sum(p not in own_prompts for p in staged[1]),
                             "below_floor_second_stage": below(staged), "below_floor_rule": below(rule)})
            done = [r for r in rows if r["ratio"] == ratio and r["session"] == s]
            print(f"decoys:{ratio} session {s}: {sum(not r['same'] for r in done)} of {len(done)} parties draw "
                  f"otherwise; below the floor {sum(r['below_floor_rule'] for r in done)} by the rule, "
                  f"{sum(r['below_floor_second_stage'] for r in done)} with the second stage", file=sys.stderr,
                  flush=True)
    out = {"model": args.model, "requests": args.requests, "seed": args.seed, "floor": CONFIDENCE, "rows": rows,
           "by_ratio": {str(r): {"parties": sum(x["ratio"] == r for x in rows),
                                 "drawn_otherwise": sum(x["ratio"] == r and not x["same"] for x in rows),
                                 "sessions_changed": sorted({x["session"] for x in rows
                                                             if x["ratio"] == r and not x["same"]}),
                                 "below_floor_rule": sum(x["below_floor_rule"] for x in rows if x["ratio"] == r),
                                 "below_floor_second_stage": sum(x["below_floor_second_stage"] for x in rows
                                                                 if x["ratio"] == r)}
                          for r in args.ratios}}
    write_json(args, out)


if __name__ == "__main__":
    main()
