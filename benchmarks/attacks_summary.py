"""Summarise benchmarks/results/attacks/*.json: one markdown table per view and a combined recall/similarity plot.

python benchmarks/attacks_summary.py   # prints markdown, writes benchmarks/results/attacks/summary.png
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "attacks"


def fmt(x, ci=None) -> str:
    if x is None:
        return "-"
    s = f"{x:.3f}" if isinstance(x, float) else str(x)
    return f"{s} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else s


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for p in sorted(OUT.glob("*.json")):
        data = json.loads(p.read_text())
        for r in data.get("results", []):
            r["_file"] = p.name
            rows.append(r)
        if "inverter_validation" in data.get("meta", {}):
            v = data["meta"]["inverter_validation"]
            inv, nn = v["inverter"], v["nearest"]
            print(
                f"inverter validation ({p.name}): inverter {fmt(inv['judge_similarity'], inv['judge_similarity_ci'])}"
                f" F1 {inv['token_f1']:.3f}; nearest {fmt(nn['judge_similarity'], nn['judge_similarity_ci'])}"
                f" F1 {nn['token_f1']:.3f}"
            )
    print(
        "| file | view | attack | m | n | subject_top1 (recall@m) [95% CI] | subject_top5 | chance_top1 "
        "| object_top1 | judge (inverter) | judge (NN) | random pairs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['_file']} | {r['view']}{'/' + r['mode'] if r.get('mode') else ''} | {r['attack']} | {r['m']} "
            f"| {r['n']} | "
            f"{fmt(r.get('subject_top1'), r.get('subject_top1_ci'))} | {fmt(r.get('subject_top5'))} | "
            f"{fmt(r.get('chance_top1'))} | {fmt(r.get('object_top1'), r.get('object_top1_ci'))} | "
            f"{fmt(r.get('judge_similarity'), r.get('judge_similarity_ci'))} | {fmt(r.get('nn_judge_similarity'))} | "
            f"{fmt(r.get('random_baseline'))} |"
        )
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for (view, attack), style in {
        ("keys", "subspace"): "o-",
        ("gram", "subspace"): "s--",
        ("gram", "spectral"): "^:",
        ("aggregate", "subspace"): "d-",
        ("stats", "subspace"): "v-",
    }.items():
        sel = sorted(
            (r for r in rows if r["view"] == view and r["attack"] == attack and r.get("subject_top1") is not None),
            key=lambda r: r["m"],
        )
        if sel:
            a1.plot([r["m"] for r in sel], [r["subject_top1"] for r in sel], style, label=f"{view} {attack}")
    for view, marker in (("delta", "*"), ("model", "X"), ("wire", "P")):
        sel = [
            r
            for r in rows
            if r["view"] == view and r.get("subject_top1") is not None and r["attack"] != "subspace-minus-own"
        ]
        if sel:
            a1.scatter(
                [r["m"] for r in sel], [r["subject_top1"] for r in sel], marker=marker, s=90, label=view, zorder=3
            )
    ch = sorted({(r["m"], r["chance_top1"]) for r in rows if r.get("chance_top1") and r["view"] == "keys"})
    if ch:
        a1.plot([c[0] for c in ch], [c[1] for c in ch], color="grey", ls="--", label="chance m/N")
    a1.set(
        xscale="log",
        xlabel="m (edits in the view)",
        ylabel="subject recall@m",
        title="subject recovery",
        ylim=(-0.02, 1.02),
    )
    a1.legend(fontsize=7)
    for view, style in (("keys", "o-"), ("gram", "s--"), ("aggregate", "d-")):
        sel = sorted((r for r in rows if r["view"] == view and r["attack"] == "inverter"), key=lambda r: r["m"])
        if sel:  # judge similarity above the random baseline under the same pairing (0: no better than chance)
            ms = [r["m"] for r in sel]
            a2.plot(ms, [r["judge_similarity"] - r["random_baseline"] for r in sel], style, label=f"{view} inverter")
            a2.plot(ms, [r["nn_judge_similarity"] - r["random_baseline"] for r in sel], style, alpha=0.45,
                    label=f"{view} nearest neighbour")
    a2.axhline(0.0, color="grey", ls="--", label="random public texts")
    a2.set(
        xscale="log", xlabel="m (sequences in the statistic)", ylabel="judge similarity − random baseline",
        title="text recovery (Fig. 5)",
    )
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "summary.png", dpi=110)


if __name__ == "__main__":
    main()
