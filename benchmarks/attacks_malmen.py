"""What MALMEN's shared objects leak: subject and object recovery from each view, over independent sessions.

Report set: the records of --requests whose case_id is in none of the --exclude files (for CounterFact: the 200
records neither trained nor validated on by the hypernetwork). Session s edits report records [s·m, (s+1)·m) with
m = parties × per_party (sessions share no edit). Candidates: the report subjects + --distractors public distractors
(a seeded sample of ``attacks.candidates.candidate_subjects``' Wikipedia titles, country names and zsRE/MQuAKE
subjects). Attacks, attacker knowledge and views: ``attacks/malmen_session.py``'s docstring.

Resumable: stage 1 (views, objects, `exact` subject attacks) writes --out/session-<s>.json; stage 2 (`templates`)
computes every candidate's keys under every public template once (cached per template under --key-cache) and adds
its results to each session's JSON; then results.json and results.md are written from whatever sessions are done.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/attacks_malmen.py \\
        --hypernet runs/malmen-smollm2 --sessions 6 --out benchmarks/results/attacks_malmen --threads 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from attacks.candidates import public_templates
from attacks.malmen_session import (
    MalmenMeasure,
    TemplateScores,
    held_out_records,
    load_sessions,
    object_strings,
    session_core,
    subject_attacks_exact,
    summarise,
    template_split,
)

SHARED = Path("../shared/data")


def _say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def _excluded_ids(paths: list[str]) -> set[str]:
    ids: set[str] = set()
    for p in paths:
        for r in json.loads(Path(p).read_text()):
            ids.add(str(r["case_id"]))
    return ids


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def _fmt(v: float | None, ci: list[float] | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def markdown(rows: list[dict[str, Any]], config: dict[str, Any]) -> str:
    lines = [f"# MALMEN leakage ({config['model']}, {config['sessions_done']} sessions of {config['parties']} "
             f"parties × {config['per_party']} edits, N = {config['n_candidates']} candidates, "
             f"{config['n_templates']} public templates)", "",
             f"Command: `{config['command']}`", "",
             "## Subjects (recall@m and @5m, mean over sessions [95 % bootstrap over sessions])", "",
             "| prompt knowledge | view | attack | m | recall@m | recall@5m | chance m/N | chance 5m/N |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "subject":
            lines.append(f"| {r['knowledge']} | {r['view']} | {r['attack']} | {r['m']} | "
                         f"{_fmt(r['recall_m'], r['recall_m_ci'])} | {_fmt(r['recall_5m'], r['recall_5m_ci'])} | "
                         f"{r['chance_m']:.4f} | {r['chance_5m']:.4f} |")
    lines += ["", "## Objects", "",
              "| attack | edits (sessions) | candidates | top-1 / recall@m_obj | top-5 / recall@5m_obj |",
              "|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "object":
            continue
        if "top1" in r:
            lines.append(f"| {r['attack']} | {r['edits']} ({r['sessions']}) | {r['n_candidates']} | "
                         f"{_fmt(r['top1'], r['top1_ci'])} | {_fmt(r['top5'], r['top5_ci'])} |")
        else:
            lines.append(f"| {r['attack']} (m_obj = {r['m_obj']:.1f} per session) | ({r['sessions']}) | "
                         f"{r['n_candidates']} | {_fmt(r['recall_m'], r['recall_m_ci'])} | "
                         f"{_fmt(r['recall_5m'], r['recall_5m_ci'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--hypernet", required=True, help="a trained hypernetwork (its directory or a training run's)")
    ap.add_argument("--requests", default=str(SHARED / "counterfact.json"))
    ap.add_argument("--exclude", nargs="*", default=[str(SHARED / "counterfact_mend" / "counterfact-train.json"),
                                                     str(SHARED / "counterfact_mend" / "counterfact-val.json")],
                    help="record files whose case_ids are left out of the report set (the hypernetwork's training and "
                         "validation records)")
    ap.add_argument("--distractor-records", nargs="*",
                    default=[str(SHARED / "zsre_mend_train_1k.json"), str(SHARED / "mquake.json")])
    ap.add_argument("--distractors", type=int, default=300)
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--parties", type=int, default=10)
    ap.add_argument("--per-party", type=int, default=3)
    ap.add_argument("--no-templates", action="store_true", help="skip the `templates` knowledge (stage 2)")
    ap.add_argument("--templates-limit", type=int, default=None, help="only the first N templates (smoke tests)")
    ap.add_argument("--key-cache", default=None, help="cache of the template keys (default <cache>/attacks/"
                                                      "malmen-template-keys)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from attacks.candidates import candidate_subjects
    from secure_collab.cache import cache_dir
    from secure_collab.data.formats import load_requests
    from secure_collab.editing.malmen.net import load_hypernet
    from secure_collab.models import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model(args.model)
    hypernet = load_hypernet(Path(args.hypernet), dtype=next(lm.model.parameters()).dtype,
                             model_digest=lm.source_digest)
    requests = load_requests(args.requests)
    report = held_out_records(requests, _excluded_ids(args.exclude))
    everything = candidate_subjects(report, n_wiki=2000, other_records=[Path(p) for p in args.distractor_records],
                                    n_other=1000, seed=args.seed)
    n_rep = len({" ".join(r.subject.split()) for r in report})
    rest = everything[n_rep:]
    candidates = everything[:n_rep] + random.Random(f"{args.seed}/distractors").sample(rest, args.distractors)
    templates = public_templates(requests, report)[:args.templates_limit]
    key_cache = Path(args.key_cache) if args.key_cache else cache_dir() / "attacks" / "malmen-template-keys"
    me = MalmenMeasure(lm, hypernet, report, candidates, templates, object_strings(requests), args.parties,
                       args.per_party, args.seed, key_cache=key_cache, say=_say)
    _say(f"report set: {len(report)} records; {args.sessions} sessions of {me.m}; N = {len(candidates)} candidates "
         f"({n_rep} report subjects + {args.distractors} distractors); {len(templates)} public templates; "
         f"hypernetwork {hypernet.digest()[:12]}, layers {list(hypernet.hp.layers)}")
    config = {"model": args.model, "hypernet_digest": hypernet.digest(), "report_records": len(report),
              "parties": args.parties, "per_party": args.per_party, "m": me.m, "n_candidates": len(candidates),
              "n_report_subjects": n_rep, "n_distractors": args.distractors, "n_templates": len(templates),
              "layers": list(hypernet.hp.layers), "ridges": {str(la): hypernet.ridge(la) for la in hypernet.hp.layers},
              "seed": args.seed,
              "command": "python benchmarks/attacks_malmen.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    done = load_sessions(out)
    cores = {}
    for s in range(args.sessions):
        need_templates = not args.no_templates and not (done.get(s, {}).get("subjects", {}).get("templates"))
        if s in done and not need_templates:
            continue
        t0 = time.perf_counter()
        fresh: dict[str, Any] = {"session": s, "case_ids": [r.case_id for p in me.session(s) for r in p]}
        core = session_core(me, s, fresh)
        if s not in done:
            fresh["subjects"] = {"exact": subject_attacks_exact(me, s, core), "templates": None}
            fresh["seconds_stage1"] = time.perf_counter() - t0
            _write(out / f"session-{s}.json", fresh)
            done[s] = fresh
            ex = fresh["subjects"]["exact"]
            _say(f"session {s}: rows {sum(fresh['rows'])}, exact: delta span-all "
                 f"{ex['delta']['span-all']['recall_m']:.2f}, aggregate {ex['aggregate']['span-all']['recall_m']:.2f}; "
                 f"object target top-1 "
                 f"{sum(x == 0 for x in fresh['objects']['target']) / me.m:.2f}, d-aggregate "
                 f"{sum(x == 0 for x in fresh['objects']['d-aggregate']) / me.m:.2f} "
                 f"({time.perf_counter() - t0:.0f} s)")
        if need_templates:
            cores[s] = core
    if cores:
        scores = {s: TemplateScores() for s in cores}
        t0 = time.perf_counter()
        for i, template in enumerate(templates):
            keys = me.template_keys(template)
            for s, core in cores.items():
                scores[s].add(core, keys)
            if i % 10 == 9 or i == len(templates) - 1:
                el = time.perf_counter() - t0
                left = el / (i + 1) * (len(templates) - i - 1)
                _say(f"templates: {i + 1}/{len(templates)} ({el:.0f} s, about {left:.0f} s left)")
        for s, core in cores.items():
            done[s]["subjects"]["templates"] = scores[s].results(me, core)
            _write(out / f"session-{s}.json", done[s])
    sessions = [done[s] for s in sorted(done) if s < args.sessions]
    config["sessions_done"] = len(sessions)
    rows = summarise(sessions, len(candidates), me.m, args.per_party)
    split = {f"{v}/{a}": template_split(sessions, report, templates, v, a)
             for v, a in (("delta", "span-all"), ("delta", "norm-all"), ("aggregate", "span-all"))}
    _write(out / "results.json", {"config": config, "rows": rows, "template_split": split})
    md = markdown(rows, config)
    if any(g["edits"] for s in split.values() for g in s.values()):
        md += ("\n## `templates`: edits whose own prompt is a public template vs not (recall@m pooled over sessions, "
               "Wilson 95 %)\n\n| view/attack | group | edits | recall@m |\n|---|---|---|---|\n")
        for name, groups in split.items():
            for g, v in groups.items():
                md += f"| {name} | {g} | {v['edits']} | {_fmt(v['recall_m'], v['recall_m_ci'])} |\n"
    (out / "results.md").write_text(md)
    _say(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
