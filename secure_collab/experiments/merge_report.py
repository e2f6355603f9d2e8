"""Write a merge grid's results: results.csv, a markdown table, and the paper's Fig. 1 as PNG (Score and greedy
generation efficacy against the number of edits, one line per method, one column per variant)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secure_collab.experiments.merge import ROW_FIELDS

METRIC_COLUMNS = ("efficacy", "generalization", "specificity", "locality", "score", "gen_efficacy",
                  "gen_generalization", "fluency")


def _per_party(r: dict) -> str:
    counts = r.get("edits_per_party") or []
    return "" if not counts else (str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2e}" if v != 0 and abs(v) < 1e-3 else f"{v:.{digits}f}"
    return str(v)


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROW_FIELDS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**{k: r.get(k) for k in ROW_FIELDS}, "edits_per_party": _per_party(r)})


def _setup_lines(setup: dict | None) -> list[str]:
    """What the table was measured on, in words (λ and the covariance budget included)."""
    if not setup:
        return []
    hp = setup.get("hparams", {})
    k = setup.get("eval_per_party") or 0
    on = "every edited record" if not k else f"each party's first {k} edited records (the same for every method)"
    first, last = setup.get("records", [None, None])
    holders = setup.get("holders") or 1
    held = "" if holders == 1 else f", every fact held by {holders} parties (dedupe off)"
    how = (f"MALMEN, hypernetwork {str(setup.get('hypernet_digest'))[:16]}… (ridge e^λ_l, oneshot)"
           if setup.get("backend") == "malmen" else
           f"λ = {hp.get('mom2_update_weight'):g}, C from {hp.get('mom2_tokens'):,} tokens")
    excluded = setup.get("exclude_case_ids") or []
    span = (f"records {first}-{last}" if not excluded else
            f"the first {len(setup.get('case_ids') or [])} records from {first} whose case_id is in none of "
            f"{', '.join(Path(str(f)).name for f in excluded)}")
    return [f"{setup.get('model')}, {Path(str(setup.get('requests'))).name} {span}, "
            f"{setup.get('parties')} parties{held}, layers {hp.get('layers')}, {how}; metrics on {on}; "
            "[intervals]: 95 % bootstrap over the evaluated records.", "",
            f"Command: `{setup.get('command')}`", ""]


def _with_ci(r: dict, k: str, digits: int) -> str:
    ci = r.get(f"{k}_ci")
    return _fmt(r.get(k), digits) + ("" if not ci else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]")


def _signed(ci: Sequence[float] | None, digits: int) -> str:
    return "–" if ci is None else f"{ci[0]:+.{digits}f} [{ci[1]:+.{digits}f}, {ci[2]:+.{digits}f}]"


def advantage_lines(result: dict) -> list[str]:
    """collab against each naive merge on the same records: paired differences with intervals, and the smallest
    edit count where collab beats it (≥ 0.10 nearer z* in z-reach, or ≥ 1 nat of target or paraphrase margin)."""
    adv = result.get("advantage") or []
    if not adv:
        return []
    lines = ["| variant | method | edits | reach gap: it − collab, of abs(1 − z) | target margin: collab − it (nats) "
             "| paraphrase margin: collab − it | collab beats it |", "|---|---|---|---|---|---|---|"]
    for a in adv:
        lines.append(f"| {a['variant']} | {a['method']} | {a['edits']} | {_signed(a.get('reach'), 3)} | "
                     f"{_signed(a.get('target'), 2)} | {_signed(a.get('paraphrase'), 2)} | "
                     f"{'yes' if a['beats'] else 'no'} |")
    lines.append("")
    for variant in dict.fromkeys(a["variant"] for a in adv):
        for method in dict.fromkeys(a["method"] for a in adv if a["variant"] == variant):
            cells = [a for a in adv if a["variant"] == variant and a["method"] == method]
            hit = next((a["edits"] for a in cells if a["beats"]), None)
            lines.append(f"- collab beats {method} ({variant}) " + (
                f"from {hit} edits" if hit is not None else
                f"at no size measured (largest {max(a['edits'] for a in cells)})"))
    return lines


def markdown(result: dict, metrics: str) -> str:
    """The table (one row per cell, pre-edit first per edit count), the margins table with intervals, collab's
    advantage over each naive merge, and the 10-point-drop lines."""
    third = "locality" if metrics == "zsre" else "specificity"
    cols = ["efficacy", "generalization", third, "score", "gen_efficacy", "gen_generalization", "fluency"]
    head = ["variant", "edits (per party)", "method", *cols, "ΔW vs global", "z reach"]
    lines = [*_setup_lines(result.get("setup")), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    pre = {p["edits"]: p for p in result.get("pre", [])}
    seen_pre = set()
    for r in sorted(result["rows"], key=lambda r: (r["variant"] != "sequential", r["variant"], r["edits"])):
        if (r["variant"], r["edits"]) not in seen_pre and r["edits"] in pre:
            seen_pre.add((r["variant"], r["edits"]))
            p = pre[r["edits"]]
            lines.append(f"| {r['variant']} | {r['edits']} ({_per_party(r)}) | *unedited* | "
                         + " | ".join(_fmt(p.get(c)) for c in cols) + " | | |")
        lines.append(f"| {r['variant']} | {r['edits']} ({_per_party(r)}) | {r['method']} | "
                     + " | ".join(_fmt(r.get(c)) for c in cols)
                     + f" | {_fmt(r.get('delta_rel_diff_vs_global'))} | {_fmt(r.get('z_reach'), 2)} |")
    cont = [r for r in result["rows"] if r.get("target_margin") is not None or r.get("z_reach_ci")]
    if cont:
        lines += ["", "| variant | edits | method | target margin | paraphrase margin | neighbourhood margin | "
                  "z reach |", "|---|---|---|---|---|---|---|"]
        for r in sorted(cont, key=lambda r: (r["variant"] != "sequential", r["variant"], r["edits"])):
            lines.append(f"| {r['variant']} | {r['edits']} | {r['method']} | {_with_ci(r, 'target_margin', 2)} | "
                         f"{_with_ci(r, 'paraphrase_margin', 2)} | {_with_ci(r, 'neighbourhood_margin', 2)} | "
                         f"{_with_ci(r, 'z_reach', 2)} |")
    adv = advantage_lines(result)
    if adv:
        lines += ["", *adv]
    drops = []
    for d in result.get("falls_10_points", []):
        if d["edits"] is None:
            drops.append(f"- {d['method']} ({d['variant']}): never 10 points of Score below collab, up to "
                         f"{d['largest_measured']} edits measured")
        else:
            drops.append(f"- {d['method']} ({d['variant']}): 10 points of Score below collab at {d['edits']} edits "
                         f"(up to {d['edits_per_party_max']} per party)")
    return "\n".join(lines) + ("\n\n" + "\n".join(drops) if drops else "") + "\n"


def plot_fig1(result: dict, path: Path, title: str) -> None:
    """Score and gen_efficacy (rows) against edits (log axis), one column per variant, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    variants = sorted({r["variant"] for r in rows}, key=lambda v: (v != "sequential", v))
    fig, axes = plt.subplots(2, len(variants), figsize=(5.2 * len(variants), 7.5), squeeze=False, sharex=True)
    for col, variant in enumerate(variants):
        for row, metric in enumerate(("score", "gen_efficacy")):
            ax = axes[row][col]
            for method in dict.fromkeys(r["method"] for r in rows):
                pts = sorted((r["edits"], r[metric]) for r in rows if r["method"] == method
                             and r["variant"] == variant and r.get(metric) is not None)
                if pts:
                    style = "--" if method.endswith("-lockstep") else "-"
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=method)
            pre = sorted((p["edits"], p.get(metric)) for p in result.get("pre", []) if p.get(metric) is not None)
            if pre:
                ax.plot([p[0] for p in pre], [p[1] for p in pre], ":", color="grey", label="unedited")
            ax.set_xscale("log")
            ticks = sorted({r["edits"] for r in rows})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{variant}: {metric.replace('_', ' ')}")
            ax.set_xlabel("edits (all parties)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
