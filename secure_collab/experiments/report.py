"""Tables (markdown) and plots (matplotlib PNG) of the round experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forgetting_table(res: dict[str, Any]) -> str:
    lines = ["| rule | round | round-1 efficacy | round-1 generalization | this round's efficacy | "
             "all edits so far: efficacy | specificity |", "|---|---|---|---|---|---|---|"]
    pre = res["pre_first_round"]
    lines.append(f"| (unedited) | 0 | {_fmt(pre['efficacy'])} | {_fmt(pre['generalization'])} | - | - | "
                 f"{_fmt(pre['specificity'])} |")
    for row in res["rounds"]:
        lines.append(f"| {row['rule']} | {row['round']} | {_fmt(row['first_round']['efficacy'])} | "
                     f"{_fmt(row['first_round']['generalization'])} | {_fmt(row['this_round']['efficacy'])} | "
                     f"{_fmt(row['so_far']['efficacy'])} | {_fmt(row['so_far']['specificity'])} |")
    return "\n".join(lines) + "\n"


def plot_forgetting(res: dict[str, Any], path: Path, title: str | None = None) -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = (("first_round", "efficacy", "round-1 edits: efficacy"),
              ("first_round", "generalization", "round-1 edits: generalization"),
              ("this_round", "efficacy", "the round's own edits: efficacy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True)
    pre = res["pre_first_round"]
    for ax, (group, metric, label) in zip(axes, panels, strict=True):
        for rule in res["plan"]["rules"]:
            rows = sorted((r for r in res["rounds"] if r["rule"] == rule), key=lambda r: r["round"])
            xs = [r["round"] for r in rows]
            ys = [r[group][metric] for r in rows]
            if group == "first_round":
                xs, ys = [0, *xs], [pre[metric], *ys]
            ax.plot(xs, ys, marker="o", label=rule)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("after round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
