"""Which decoys change their answer, and why: each decoy of a `defences` sweep session, under its party's edit alone
and under the joint release.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/decoy_answers.py --ratio 9 --sessions 0 5 6 \
        --json benchmarks/results/decoy_answers.json

For each session (the sweep's defaults: the report set's records split into 10 parties × 3 edits per session, each
party's generator ``random.Random(f"{seed}/{session}/{party}")``), the collaborative edit with ``decoys:R`` is run
as ``secure-collab defences`` runs it (``attacks.views.delta_view``). Then, per party, its own edit alone (its real
edits and its decoys, the same draws, the public C and λ: what a party can compute before it sends anything) on the
unedited model. Per decoy: the answer probability it was drawn with, and its top-1 answer and that answer's
probability after its party's edit alone and after the joint release; whether it changed in either. Results are
cached per session beside --json (a rerun skips sessions on disk).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    from attacks.cli.defences import add_layout_arguments
    from attacks.experiment import load_report_set
    from attacks.session_views import _load
    from attacks.views import delta_view, public_setup, split, targets_for
    from secure_collab.cli._output import write_json
    from secure_collab.editing.decoys import CONFIDENCE, _next_token_logprobs
    from secure_collab.editing.defences import parse_defence
    from secure_collab.editing.memit import own_edit_logprobs, restore, snapshot
    from secure_collab.evaluation import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_layout_arguments(ap)  # the sweep's sessions
    ap.add_argument("--ratio", type=int, default=9, help="decoys per real edit")
    ap.add_argument("--defence", default=None, help="the defence to run (default: decoys:RATIO)")
    ap.add_argument("--sessions", type=int, nargs="+", default=[0], help="sessions to run")
    ap.add_argument("--joint-only", action="store_true",
                    help="skip each party's own edit alone (the joint release only: about half the time)")
    ap.add_argument("--json", default="-", help="write the result here ('-': stdout)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = args.defence or f"decoys:{args.ratio}"
    label = spec + ("-joint" if args.joint_only else "")
    defence = parse_defence(spec)
    setup = public_setup(args.model)
    lm, hp = setup.lm, setup.hp
    m = args.parties * args.per_party
    records = load_report_set(args.requests, 0, args.limit)
    cache = Path(args.json).with_suffix("") if args.json != "-" else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    def answers(reqs, ids):
        """(top-1 id, p(top-1), p(ids)) of each request's prompt on the model as it is now."""
        out = []
        lps = torch.cat(list(_next_token_logprobs(lm, reqs)))
        for lp, a in zip(lps, ids, strict=True):
            out.append((int(lp.argmax()), float(lp.max().exp()), float(lp[a].exp())))
        return out

    sessions = []
    for s in args.sessions:
        path = cache / f"session-{s}-{label.replace(':', '_').replace('@', '-')}.json" if cache else None
        if path is not None and path.is_file():
            sessions.append(json.loads(path.read_text()))
            continue
        t0 = time.time()
        parties = split(list(records[s * m:(s + 1) * m]), args.parties)
        targets = [targets_for(setup, p, lambda _m: None) for p in parties]
        rngs = [random.Random(f"{args.seed}/{s}/{k}") for k in range(args.parties)]
        dv = delta_view(setup, parties, targets, defence, rngs)
        flat = [(k, r, a) for k, d in enumerate(dv.decoys) for r, a in zip(d.requests, d.answers, strict=True)]
        reqs, ids = [r for _, r, _ in flat], [a for _, _, a in flat]
        before = answers(reqs, ids)
        saved = snapshot(lm, hp.layers)
        _load(lm, dv.edited)
        try:
            joint = answers(reqs, ids)
            ev = evaluate(lm, [r for p in parties for r in p]).summary()  # the real edits' utility
        finally:
            restore(lm, saved)
        alone: list[tuple[int, float, float]] = []
        for reqs_k, t, dec in zip(parties, targets, dv.decoys, strict=True):  # what each party can check alone
            if args.joint_only:
                alone += [(-1, float("nan"), float("nan"))] * len(dec)
                continue
            lps = own_edit_logprobs(lm, hp, setup.covs(), setup.templates, reqs_k, t.z, dec)
            alone += [(int(lp.argmax()), float(lp.max().exp()), float(lp[a].exp()))
                      for lp, a in zip(lps, dec.answers, strict=True)]
        rows = []
        for (k, r, a), b, j, o in zip(flat, before, joint, alone, strict=True):
            rows.append({"party": k, "subject": r.subject, "prompt": r.prompt, "answer": r.target_new,
                         "p_drawn": b[2], "below_floor": b[2] < CONFIDENCE,
                         "alone_top1_same": None if o[0] < 0 else o[0] == a, "p_alone": o[2],
                         "joint_top1_same": j[0] == a, "p_joint": j[2],
                         "joint_top1": lm.tokenizer.decode([j[0]]) if j[0] != a else None})
        own_prompts = [sorted({r.prompt for r in p}) for p in parties]
        result = {"session": s, "defence": spec, "decoys": len(rows),
                  "below_floor": sum(r["below_floor"] for r in rows),
                  "changed_alone": None if args.joint_only else sum(not r["alone_top1_same"] for r in rows),
                  "changed_joint": sum(not r["joint_top1_same"] for r in rows),
                  "repaired": sum(dv.repaired),  # pushed back by the repair round (in the joint release)
                  **{k: ev[k] for k in ("efficacy", "generalization", "specificity")},
                  "own_prompts": own_prompts, "rows": rows, "seconds": round(time.time() - t0, 1)}
        print(f"{spec} session {s}: {result['decoys']} decoys, {result['below_floor']} below the floor, "
              f"changed alone {result['changed_alone']}, jointly {result['changed_joint']} "
              f"({result['seconds']} s)", file=sys.stderr, flush=True)
        if path is not None:
            path.write_text(json.dumps(result, indent=1))
        sessions.append(result)
    keys = ("decoys", "below_floor", "changed_joint") + (() if args.joint_only else ("changed_alone",))
    write_json(args, {"model": args.model, "defence": spec, "floor": CONFIDENCE,
                      "sessions": sessions,
                      "total": {k: sum(x[k] for x in sessions) for k in keys}})


if __name__ == "__main__":
    main()
