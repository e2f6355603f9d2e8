"""The defence tables of docs/privacy.md from `secure-collab defences` results (markdown on stdout).

    python benchmarks/defences_summary.py benchmarks/results/defences/smollm2 benchmarks/results/defences/smollm2-served

With --plot OUT.png, one frontier of every defence in the directories given (the first directory's row wins where
two hold the same defence; give directories of one variant only: a served sweep runs oneshot).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _ci(row: dict, key: str) -> str:
    lo, hi = row[f"{key}_ci"]
    return f"{row[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", help="output directories of `secure-collab defences`")
    ap.add_argument("--plot", default=None, metavar="OUT.png",
                    help="one frontier plot of every defence in DIRS, and OUT-cost.png (default: none)")
    args = ap.parse_args()
    combined: list[dict] = []
    for d in args.dirs:
        doc = json.loads((Path(d) / "results.json").read_text())
        meta, rows = doc["meta"], doc["results"]
        have = {r["defence"] for r in combined}
        combined += [r for r in rows if r["defence"] not in have]
        print(f"\n### {d}: {meta['sessions']} sessions × {meta['parties']} parties × {meta['per_party']} edits, "
              f"{meta['n_candidates']} candidates, λ = {meta['lambda']:g}, {meta.get('variant', 'sequential')}\n")
        print("| defence | sessions | efficacy | generalization | specificity | damage KL (public) | "
              "damage KL (decoys) | decoys whose top-1 changed |")
        print("|---|---|---|---|---|---|---|---|")
        seen = set()
        for r in rows:
            if r["defence"] in seen:
                continue
            seen.add(r["defence"])
            dec = "-" if r["damage_kl_decoys"] is None else f"{r['damage_kl_decoys']:.3f}"
            changed = (f"{r['decoys_changed_total']} of {round(r['decoys'] * r['sessions'])}"
                       if r.get("decoys") else "-")
            print(f"| {r['defence']} | {r['sessions']} | {_ci(r, 'efficacy')} | {_ci(r, 'generalization')} | "
                  f"{_ci(r, 'specificity')} | {_ci(r, 'damage_kl')} | {dec} | {changed} |")
        print("\n| defence | attack | recall@m [95 % CI over sessions] | recall@5m | FLOPs per candidate | queries |")
        print("|---|---|---|---|---|---|")
        for r in sorted(rows, key=lambda r: (r["defence"], -r["recall_m"])):
            q = r.get("queries_per_candidate", 0)
            print(f"| {r['defence']} | {r['attack']} | {_ci(r, 'recall_m')} | {_ci(r, 'recall_5m')} | "
                  f"{r.get('flops_per_candidate', 0):.2e} | {q:.3g}"
                  + (f" ({r['queries_per_checked_candidate']} per checked candidate)"
                     if r.get("queries_per_checked_candidate") else "") + " |")
        for r in rows:
            if r.get("query_budget"):
                print(f"\nQuery budget ({r['defence']}, {r['attack']}, {r['queries_per_candidate']} queries per "
                      f"candidate, no prior over the candidates):\n")
                print("| queries per party | recall@m [95 % CI] |")
                print("|---|---|")
                for q, v in sorted(r["query_budget"].items(), key=lambda kv: int(kv[0])):
                    lo, hi = v["recall_m_ci"]
                    print(f"| {int(q):,} | {v['recall_m']:.3f} [{lo:.3f}, {hi:.3f}] |")
                print(f"\nLargest budget with recall@m < 0.1: {r['budget_below_0.1']}")
    if args.plot:
        from attacks.plots import defence_frontier, recall_against_cost

        out = Path(args.plot)
        defence_frontier(combined, out)
        recall_against_cost(combined, out.with_name(out.stem + "-cost.png"))
        print(f"\nwrote {out} and {out.with_name(out.stem + '-cost.png')}")


if __name__ == "__main__":
    main()
