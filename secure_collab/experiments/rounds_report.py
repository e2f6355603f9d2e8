"""Tables (markdown) and plots (matplotlib PNG) of the round experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _margin(m: dict[str, Any]) -> float | None:
    """The edit-prompt margin (``target_margin``; results written before it was named so call it ``margin``)."""
    return m.get("target_margin", m.get("margin"))


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forgetting_table(res: dict[str, Any]) -> str:
    lines = ["| rule | round | round-1 efficacy | round-1 margin | round-1 generalization | this round's efficacy | "
             "all edits so far: efficacy | specificity | ‖ΔW K₁‖ vs round 1's |",
             "|---|---|---|---|---|---|---|---|---|"]
    pre = res["pre_first_round"]
    lines.append(f"| (unedited) | 0 | {_fmt(pre['efficacy'])} | {_fmt(_margin(pre))} | "
                 f"{_fmt(pre['generalization'])} | - | - | {_fmt(pre['specificity'])} | - |")
    for row in res["rounds"]:
        lines.append(f"| {row['rule']} | {row['round']} | {_fmt(row['first_round']['efficacy'])} | "
                     f"{_fmt(_margin(row['first_round']))} | {_fmt(row['first_round']['generalization'])} | "
                     f"{_fmt(row['this_round']['efficacy'])} | {_fmt(row['so_far']['efficacy'])} | "
                     f"{_fmt(row['so_far']['specificity'])} | {_fmt(row.get('disturbance'))} |")
    return "\n".join(lines) + "\n"


def plot_forgetting(res: dict[str, Any], path: Path, title: str | None = None) -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = (("first_round", "efficacy", "round-1 edits: efficacy"),
              ("first_round", "target_margin", "round-1 edits: NLL(true) − NLL(new)"),
              ("this_round", "efficacy", "the round's own edits: efficacy"),
              ("", "disturbance", "‖ΔW_r K₁‖ / ‖ΔW_1 K₁‖ (round-1 keys)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.6))
    pre = res["pre_first_round"]
    for ax, (group, metric, label) in zip(axes, panels, strict=True):
        for rule in res["plan"]["rules"]:
            rows = sorted((r for r in res["rounds"] if r["rule"] == rule), key=lambda r: r["round"])
            xs = [r["round"] for r in rows]
            ys = [(r[group] if group else r).get(metric) for r in rows]
            if group == "first_round":
                xs, ys = [0, *xs], [pre.get(metric), *ys]
            ax.plot(xs, ys, marker="o", label=rule)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("after round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric in ("efficacy", "generalization"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction")
    axes[0].legend(fontsize=8)
    plan = res["plan"]
    fig.suptitle(title or f"{res['model']}: {plan['rounds']} rounds x {plan['parties']} parties x "
                          f"{plan['edits_per_party']} edits ({res['variant']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def overlap_table(res: dict[str, Any]) -> str:
    lines = [f"dedupe_delta_rel_diff = {res['dedupe_delta_rel_diff']:.3e}, no_dedupe_delta_rel_diff = "
             f"{res['no_dedupe_delta_rel_diff']:.3e} (max over copies and layers, against one copy)", "",
             "| copies | weight per copy | ΔW vs one copy, dedupe | without dedupe | "
             "duplicated edit's margin, dedupe | without | others' specificity, dedupe | without |",
             "|---|---|---|---|---|---|---|---|"]
    once = res["once"]
    lines.append(f"| 1 | - | - | - | {_fmt(_margin(once['duplicated_edit']))} | - | "
                 f"{_fmt(once['others']['specificity'])} | - |")
    for r in res["rows"]:
        w, wo = r["with_dedupe"], r["without_dedupe"]
        share = "1/" + "/".join(map(str, r.get("holders", []))) if r.get("holders") else "-"
        lines.append(f"| {r['copies']} | {share} | {r['dedupe_delta_rel_diff']:.2e} | "
                     f"{r['no_dedupe_delta_rel_diff']:.2e} | {_fmt(_margin(w['duplicated_edit']))} | "
                     f"{_fmt(_margin(wo['duplicated_edit']))} | {_fmt(w['others']['specificity'])} | "
                     f"{_fmt(wo['others']['specificity'])} |")
    k = res["known"]
    lines += ["", f"Known-fact check at known_residual = {k['known_residual']:g}: withheld "
                  f"{k['withheld']['true_facts']}/{k['of']['true_facts']} true facts and "
                  f"{k['withheld']['counterfactual']}/{k['of']['counterfactual']} counterfactual edits."]
    return "\n".join(lines) + "\n"


def plot_overlap(res: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ks = [r["copies"] for r in res["rows"]]
    floor = 1e-17  # exact zeros on a log axis
    ax.semilogy(ks, [max(r["no_dedupe_delta_rel_diff"], floor) for r in res["rows"]], marker="o", label="no dedupe")
    exact = all(r["dedupe_delta_rel_diff"] == 0 for r in res["rows"])
    ax.semilogy(ks, [max(r["dedupe_delta_rel_diff"], floor) for r in res["rows"]], marker="s",
                label="dedupe (exactly 0, drawn at 1e-17)" if exact else "dedupe")
    ax.set_xlabel("parties holding the same edit")
    ax.set_ylabel("‖ΔW − ΔW(one copy)‖ / ‖ΔW(one copy)‖")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{res['model']}: overlap", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def conflict_table(res: dict[str, Any]) -> str:
    lines = ["| case | o_A (winner) on the edit prompt | o_B | true object | o_A on paraphrases |",
             "|---|---|---|---|---|"]
    cases = [("before", res["before"]), ("unresolved (both applied)", res["unresolved"]),
             ("resolved, plain", res["plain"]), (f"resolved, augmented (+{res['augment']})", res["augmented"])]
    for rule, c in res["cross_round"].items():
        cases += [(f"{rule}: B in round 1, A overrides, plain", c["plain"]),
                  (f"{rule}: B in round 1, A overrides, augmented", c["augmented"])]
    for name, c in cases:
        e = c["edit_prompt"]
        lines.append(f"| {name} | {_fmt(e['a'])} | {_fmt(e['b'])} | {_fmt(e['true'])} | "
                     f"{_fmt(c['paraphrases']['a'])} |")
    return "\n".join(lines) + "\n"


def plot_conflict(res: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    table = [("before", res["before"]), ("unresolved", res["unresolved"]), ("plain", res["plain"]),
             ("augmented", res["augmented"])]
    for rule, c in res["cross_round"].items():
        table += [(f"{rule}\nround 2, plain", c["plain"]), (f"{rule}\nround 2, augm.", c["augmented"])]
    fig, ax = plt.subplots(figsize=(1.3 * len(table) + 2, 3.8))
    bottom = [0.0] * len(table)
    for key, label in (("a", "o_A (winner)"), ("b", "o_B"), ("true", "true object")):
        vals = [c["edit_prompt"][key] for _, c in table]
        ax.bar(range(len(table)), vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(table)), [n for n, _ in table], fontsize=7)
    ax.set_ylabel("where the answer lands (edit prompt)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{res['model']}: {res['facts']} conflicting facts", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
