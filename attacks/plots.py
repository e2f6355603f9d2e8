"""CollabEdit's Fig. 5 for a view: judge similarity against m (with the random-pair line), recall against m."""

from __future__ import annotations

from pathlib import Path


def fig5(rows: list[dict], view: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    text = [r for r in rows if r.get("judge_similarity") is not None]
    if text:
        ms = [r["m"] for r in text]
        a1.errorbar(ms, [r["judge_similarity"] for r in text], yerr=_err(text, "judge_similarity"), marker="o",
                    capsize=3, label="inverter")
        if any(r.get("nn_judge_similarity") is not None for r in text):
            a1.errorbar(ms, [r["nn_judge_similarity"] for r in text], yerr=_err(text, "nn_judge_similarity"),
                        marker="s", capsize=3, label="nearest neighbour")
        base = [(r["m"], r["random_baseline"]) for r in text if r.get("random_baseline") is not None]
        if base:
            a1.plot([b[0] for b in base], [b[1] for b in base], color="grey", ls="--",
                    label="random public texts, same matching")
        a1.legend(fontsize=8)
    else:
        a1.text(0.5, 0.5, "no text attack in this run", ha="center", va="center", transform=a1.transAxes)
    a1.set(xscale="log", xlabel="m (sequences in the statistic)", ylabel="judge similarity (MiniLM cosine)",
           title=f"{view}: recovered text vs. true prompt")
    for attack in sorted({r["attack"] for r in rows if r.get("subject_top1") is not None}):
        sel = sorted((r for r in rows if r["attack"] == attack and r.get("subject_top1") is not None),
                     key=lambda r: r["m"])
        a2.errorbar([r["m"] for r in sel], [r["subject_top1"] for r in sel], yerr=_err(sel, "subject_top1"),
                    marker="o", capsize=3, label=f"{r['view']} {attack}" if (r := sel[0]) else attack)
    chance = sorted({(r["m"], r["chance_top1"]) for r in rows if r.get("chance_top1") is not None})
    if chance:
        a2.plot([c[0] for c in chance], [c[1] for c in chance], color="grey", ls="--", label="chance (m/N)")
        a2.legend(fontsize=8)
    a2.set(xscale="log", yscale="symlog", ylim=(0, 1.05), xlabel="m", ylabel="subject recall@m",
           title=f"{view}: edited subjects recovered")
    a2.set_yscale("linear")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _err(rows: list[dict], key: str):
    lo, hi = [], []
    for r in rows:
        ci = r.get(f"{key}_ci") or [r[key], r[key]]
        lo.append(max(0.0, r[key] - ci[0]))
        hi.append(max(0.0, ci[1] - r[key]))
    return [lo, hi]


def defence_frontier(rows: list[dict], out: Path) -> Path:
    """Per defence, the best attack's recall@m and @5m (intervals over sessions) against efficacy and damage KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best: dict[str, dict] = {}
    for r in rows:
        if r["defence"] not in best or r["recall_m"] > best[r["defence"]]["recall_m"]:
            best[r["defence"]] = r
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in sorted(best.items()):
        for ax, x in ((a1, "efficacy"), (a2, "damage_kl")):
            ax.errorbar([r[x]], [r["recall_m"]], yerr=_err([r], "recall_m"), marker="o", capsize=3,
                        label=f"{name} ({r['attack']})")
            ax.scatter([r[x]], [r["recall_5m"]], marker="x", color="grey")
    for ax, label in ((a1, "efficacy (edits that land)"), (a2, "damage: mean next-token KL on public subjects")):
        ax.axhline(next(iter(best.values()))["chance_m"] if best else 0, color="grey", ls="--", lw=0.8)
        ax.set(xlabel=label, ylabel="best attack's recall@m (x: recall@5m)", ylim=(0, 1.05))
    a1.legend(fontsize=7)
    a1.set_title("release defences: what leaks vs what the edit keeps")
    a2.set_title("... vs what it costs the model elsewhere")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def recall_against_cost(rows: list[dict], out: Path) -> Path:
    """Every attack's recall@m against its cost per candidate (forward FLOPs), one panel per defence: what an
    attacker with a given budget per candidate gets (a real candidate list may hold millions of entities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    defences = sorted({r["defence"] for r in rows})
    fig, axes = plt.subplots(1, len(defences), figsize=(3.6 * len(defences), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], defences, strict=True):
        sel = [r for r in rows if r["defence"] == name and r.get("flops_per_candidate")]
        attacks = sorted({r["attack"] for r in rows})
        for r in sel:
            ax.errorbar([r["flops_per_candidate"]], [r["recall_m"]], yerr=_err([r], "recall_m"), marker="o",
                        capsize=2, label=r["attack"], color=plt.cm.tab20(attacks.index(r["attack"]) % 20))
        if sel:
            ax.axhline(sel[0]["chance_m"], color="grey", ls="--", lw=0.8)
        ax.axhline(0.5, color="red", ls=":", lw=0.8)
        ax.set(xscale="log", xlabel="forward FLOPs per candidate", title=name, ylim=(0, 1.05))
    axes[0][0].set_ylabel("recall@m (95 % CI over sessions)")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def budget_plot(rows: list[dict], out: Path) -> Path | None:
    """A served release: the black-box attack's recall@m against the per-party query budget."""
    sel = [r for r in rows if r.get("query_budget")]
    if not sel:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for r in sel:
        qs = sorted(r["query_budget"], key=int)
        pts = [r["query_budget"][q] for q in qs]
        ax.errorbar([int(q) for q in qs], [p["recall_m"] for p in pts],
                    yerr=_err([{"v": p["recall_m"], "v_ci": p["recall_m_ci"]} for p in pts], "v"), marker="o",
                    capsize=2, label=f"{r['defence']}: {r['attack']}")
    ax.axhline(0.1, color="red", ls=":", lw=0.8, label="0.1")
    ax.axhline(sel[0]["chance_m"], color="grey", ls="--", lw=0.8, label="chance m/N")
    ax.set(xscale="log", xlabel="queries per party (served release)", ylabel="recall@m", ylim=(0, 1.05),
           title="black box under a query budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
