"""The defence tables of docs/privacy.md from `secure-collab defences` results (markdown on stdout).

    python benchmarks/defences_summary.py benchmarks/results/defences/smollm2 benchmarks/results/defences/smollm2-served

With --plot OUT.png, one frontier of every defence in the directories given (the first directory's row wins where
two hold the same defence; give directories of one variant only: a served sweep runs oneshot).

With --envelope OUT.png, recall against cost: for each defence, the best recall@m any measured attack reaches at a
cost per candidate up to x (x in multiples of the undefended span attack's forward FLOPs), with the bar of 30× and
recall@m 0.5; rows merged per (defence, attack), the first directory's winning; an attack run on fewer sessions than
the defence's others is drawn hollow and left out of the envelope.

    python benchmarks/defences_summary.py --envelope benchmarks/results/defences/recall-against-cost.png \
        benchmarks/results/defences/smollm2-floor-cascade benchmarks/results/defences/smollm2 \
        benchmarks/results/defences/smollm2-camouflage-cascade benchmarks/results/defences/smollm2-camouflage \
        benchmarks/results/defences/smollm2-decoys-repair benchmarks/results/defences/smollm2-camouflage-templates
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
    ap.add_argument("--envelope", default=None, metavar="OUT.png",
                    help="recall against cost per candidate, the best attack per defence (default: none)")
    args = ap.parse_args()
    combined: list[dict] = []
    pairs: dict[tuple[str, str], dict] = {}
    for d in args.dirs:
        doc = json.loads((Path(d) / "results.json").read_text())
        meta, rows = doc["meta"], doc["results"]
        have = {r["defence"] for r in combined}
        combined += [r for r in rows if r["defence"] not in have]
        for r in rows:
            pairs.setdefault((r["defence"], r["attack"]), r)
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
    if args.envelope:
        envelope(list(pairs.values()), Path(args.envelope))
        print(f"\nwrote {args.envelope}")


BAR = 30.0  # issue 20's bar: the cheapest attack with recall@m >= 0.5 costs >= 30x the span attack per candidate


def envelope(rows: list[dict], out: Path, span: str = "subspace@first") -> Path:
    """Best recall@m at a cost per candidate up to x, per defence (see the module's docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(r for r in rows if r["defence"] == "none" and r["attack"] == span)["flops_per_candidate"]
    order = ["none", "camouflage:1", "camouflage:3", "camouflage:9", "decoys:1", "decoys:3", "decoys:9", "rank:10"]
    defences = [d for d in order if any(r["defence"] == d for r in rows)]
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for k, d in enumerate(defences):
        sel = [r for r in rows if r["defence"] == d and r.get("flops_per_candidate")]
        full = max(r["sessions"] for r in sel)
        util = next(r for r in sel if r["sessions"] == full)
        colour = plt.cm.tab10(k % 10)
        pts = sorted((r["flops_per_candidate"] / base, r["recall_m"]) for r in sel if r["sessions"] == full)
        xs, ys, best = [], [], 0.0
        for x, y in pts:
            best = max(best, y)
            xs.append(x)
            ys.append(best)
        label = (f"{d} ({full} sessions; efficacy {util['efficacy']:.2f}, damage KL {util['damage_kl']:.3f})")
        ax.step(xs + [100.0], ys + [ys[-1]], where="post", color=colour, label=label)
        ax.scatter(*zip(*pts, strict=True), color=colour, s=14)
        for r in sel:
            if r["sessions"] < full:
                ax.scatter([r["flops_per_candidate"] / base], [r["recall_m"]], facecolors="none", edgecolors=colour,
                           s=40, label=f"{d}: {r['attack']} ({r['sessions']} session{'s' * (r['sessions'] > 1)})")
    ax.axvline(BAR, color="red", ls=":", lw=1)
    ax.axhline(0.5, color="red", ls=":", lw=1)
    ax.axhline(rows[0]["chance_m"], color="grey", ls="--", lw=0.8)
    ax.text(BAR * 1.05, 0.02, "30x: the bar", color="red", fontsize=8)
    ax.set(xscale="log", xlim=(0.8, 100), ylim=(0, 1.02),
           xlabel="cost per candidate (forward FLOPs, x the span attack)",
           ylabel="best recall@m at that cost (mean over sessions)",
           title="What an attacker gets for its cost per candidate, per release defence (SmolLM2, 10 x 3 edits)")
    ax.legend(fontsize=6.5, loc="center right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    main()
