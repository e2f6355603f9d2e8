"""The privacy audit of a finished session: what each role saw, measured leakage per view, a verdict per role.

Inputs: the coordinator's ledger (sessions, roster, messages, hand-offs, releases), the roles' records found
beside it (a party's report JSON, ``edits.json``), optionally the session's request files and a directory of
``secure-collab attack`` JSON results. Output: one self-contained HTML page (styles inline, plots as PNG data
URIs, no script, nothing fetched).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attacks.wire import byte_uniformity, ledger_traffic, metadata_attack
from secure_collab import ledger


@dataclass
class SessionRecord:
    session: dict[str, Any]
    roster: list[str]
    messages: list[dict[str, Any]]
    handoffs: list[dict[str, Any]]
    releases: list[dict[str, Any]]
    traffic: dict[str, Any]
    edits: dict[str, int] = field(default_factory=dict)  # party -> edit count, when the records tell
    policy: dict[str, Any] = field(default_factory=dict)  # the joining event's defence, release, query_budget
    queries: dict[str, int] = field(default_factory=dict)  # served: party -> forward passes of budget it used


def read_ledger(path: Path, session: str | None = None) -> SessionRecord:
    """The record of one session; ``session`` is required when the ledger holds several (none is guessed)."""
    try:
        held = [r["session_id"] for r in ledger.read_ledger(path, ("sessions",))["sessions"]]
    except ledger.NotALedger as exc:
        raise ValueError(str(exc)) from None
    if not held:
        raise ValueError(f"ledger {path} holds no session")
    if session is None and len(held) > 1:
        raise ValueError(f"ledger {path} holds {len(held)} sessions ({', '.join(held)}): choose one with --session")
    if session is not None and session not in held:
        raise ValueError(f"ledger {path} holds no session {session!r}; it holds {', '.join(held)}")
    sid = session or held[0]
    tables = ledger.read_ledger(path, ("sessions", "roster", "messages", "handoffs", "releases", "stages",
                                       "queries"), session=sid)
    parties = [r["name"] for r in tables["roster"] if r["name"] not in ("solver", "coordinator")]
    rec = SessionRecord(tables["sessions"][0], parties, tables["messages"], tables["handoffs"], tables["releases"],
                        ledger_traffic(path, sid))
    rec.edits = _edit_counts(path)
    joining = [r for r in tables["stages"] if r["event"] == "joining"]
    if joining:
        try:
            detail = json.loads(joining[0]["detail"])
        except ValueError:
            detail = {}
        if isinstance(detail, dict):  # a ledger older than the release policies records a bare deadline
            rec.policy = {k: detail[k] for k in ("defence", "release", "query_budget") if k in detail}
    for q in tables["queries"]:  # `used`: the party's budget used after that query, as the solver counted it
        rec.queries[q["party"]] = max(rec.queries.get(q["party"], 0), int(q["used"]))
    return rec


def _edit_counts(ledger: Path) -> dict[str, int]:
    """edits.json beside the ledger (attacks.session), or the parties' report JSONs of a demo work directory."""
    here = ledger.parent / "edits.json"
    if here.is_file():
        return {str(k): int(v) for k, v in json.loads(here.read_text()).items()}
    out = {}
    for rep in sorted(ledger.parent.parent.glob("report-*.json")):
        data = json.loads(rep.read_text())
        if isinstance(data.get("edits"), int):
            out[rep.stem.removeprefix("report-")] = data["edits"]
    return out


def release_in_clear(rec: SessionRecord) -> bool | None:
    """Does a stored release (what the coordinator relays) decode as a plain float64 ΔW? None: no release."""
    import msgpack

    from secure_collab.ledger import _unpack_frames

    for rel in rec.releases:
        try:
            header = msgpack.unpackb(rel["header"], raw=False)
            frames = _unpack_frames(rel["frames"])
            body = header.get("body", {})
            shape, dtype = body.get("shape"), body.get("dtype")
            if not frames or not shape or dtype not in ("float64", "<f8"):
                return False
            arr = np.frombuffer(frames[0], dtype="<f8")
            return bool(arr.size == int(np.prod(shape)) and np.isfinite(arr).all())
        except Exception:  # an unreadable release is not a readable one
            return False
    return None


# ------------------------------------------------------------------------------------------------- figures

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def timeline_figure(rec: SessionRecord) -> str:
    """Every message each party (and the solver) sent to the coordinator, over the session's time; dot area
    follows the message's size. Rows that look alike are what a privacy officer wants to see."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inbound = [m for m in rec.messages if m["direction"] == "in" and m["outcome"] == "accepted"]
    peers = [*sorted({m["peer"] for m in inbound if m["peer"] != "solver"}), "solver"]
    t0 = min((m["time"] for m in inbound), default=0.0)
    big = max((m["bytes"] for m in inbound), default=1) or 1
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(10, 0.5 * len(peers) + 1.6), width_ratios=(3, 1), sharey=True)
    for i, peer in enumerate(peers):
        mine = [m for m in inbound if m["peer"] == peer]
        ax.scatter([m["time"] - t0 for m in mine], [i] * len(mine), s=[8 + 150 * m["bytes"] / big for m in mine],
                   color="#4477aa" if peer != "solver" else "#999999", alpha=0.6)
        bars.barh(i, sum(m["bytes"] for m in mine) / 1e6, color="#4477aa" if peer != "solver" else "#999999")
    labels = [f"{p} ({rec.edits[p]} edits)" if p in rec.edits else p for p in peers]
    ax.set_yticks(range(len(peers)), labels)
    ax.set(xlabel="seconds since the first message", title="messages sent to the coordinator (dot size: bytes)")
    bars.set(xlabel="MB sent", title="total per sender")
    fig.tight_layout()
    return _png(fig)


def results_figure(rows: list[dict], view: str) -> str:
    """Fig. 5 of the view's rows as a PNG data URI."""
    import tempfile

    from attacks.plots import fig5

    with tempfile.TemporaryDirectory() as d:
        data = fig5(rows, view, Path(d) / "fig.png").read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


# ------------------------------------------------------------------------------------------------- verdicts

def load_results(directory: Path | None) -> dict[str, list[dict]]:
    """view -> rows, from every attack JSON in ``directory``."""
    out: dict[str, list[dict]] = {}
    if directory is None:
        return out
    for p in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        meta = data.get("meta", {}) if isinstance(data, dict) else {}
        about = [str(meta["model"])] if meta.get("model") else []
        about += [Path(str(meta["requests"])).name] if meta.get("requests") else []
        source = p.name + (f" ({', '.join(about)})" if about else "")
        for r in data.get("results", []) if isinstance(data, dict) else []:
            if isinstance(r, dict) and "view" in r:
                out.setdefault(r["view"], []).append({**r, "source": source})
    return out


def _best(rows: list[dict], attack: str | None = None) -> dict | None:
    sel = [r for r in rows if r.get("subject_top1") is not None and (attack is None or r["attack"] == attack)]
    return max(sel, key=lambda r: r["m"]) if sel else None


@dataclass(frozen=True)
class Verdict:
    """One role's verdict, in the four parts a privacy officer reads."""

    level: str  # ok | warn | leak
    reason: str  # one plain sentence: what this role could learn
    figure: str  # the measured figure behind it, and where it was measured
    setting: str  # the setting that lowers it (or why none does)


# the documented figures a verdict names when no --results were given (docs/privacy.md, SmolLM2, CounterFact)
DOC_WIRE = ("attacks on the protected bytes named 0 of 4 edited subjects, no better than a random guess "
            "(docs/privacy.md, view 'wire', shares and ckks)")
DOC_STATS = "93.8-100 % of 1-8 edited subjects named from one party's statistics (docs/privacy.md, view 'stats')"
DOC_AGGREGATE = ("93 % of 30 edited subjects named from the sum over 10 parties, chance 0.9 % (docs/privacy.md, "
                 "view 'aggregate')")
DOC_DELTA = ("93 % of the other parties' 27 edited subjects named from ΔW, chance 0.8 %; black-box use of the "
             "edited model names 47 % (docs/privacy.md, views 'delta' and 'model')")

DOC_DEFENCES = ("with camouflage, decoy edits or rank truncation of ΔW, adaptive attacks still name most edited "
                "subjects, and noise that hides them destroys the edits (docs/privacy.md, 'Defences of the release')")
DOC_SERVED = ("the black box under a query budget: docs/privacy.md, 'Defences of the release', the served "
              "release's budget table")


def _measured(row: dict, what: str) -> str:
    return (f"{row['subject_top1']:.0%} of {row['m']} edited subjects named from {what}, chance "
            f"{row['chance_top1']:.2%} (measured: {row.get('source', '--results')})")


def verdicts(rec: SessionRecord, results: dict[str, list[dict]]) -> dict[str, Verdict]:
    """role -> Verdict, for the coordinator, the solver and each party."""
    mode = rec.session.get("mode", "?")
    meta = metadata_attack(rec.traffic, rec.edits) if len(rec.edits) >= 2 else None
    out: dict[str, Verdict] = {}
    wire = [r for r in results.get("wire", []) if r.get("subject_top1") is not None]
    if mode == "plain":
        stats = _best(results.get("stats", []))
        out["coordinator"] = Verdict("leak", "It saw every party's statistics unprotected (plain mode), and the "
                                     "edited subjects can be read from them.",
                                     _measured(stats, "one party's statistics") if stats else DOC_STATS,
                                     "session.mode = shares or ckks (plain is for tests only)")
    elif release_in_clear(rec):
        out["coordinator"] = Verdict("leak", "The updates it relayed are readable ΔW matrices, so it learns what "
                                     "every party learns.", DOC_DELTA,
                                     "a current version: releases are sealed for the parties")
    elif meta and meta.get("spearman_latency", 0) > 0.5:
        out["coordinator"] = Verdict(
            "warn", "It cannot read the statistics, but how long each party takes to answer follows how many edits "
                    "it made, so it can tell who edited the most.",
            f"answer delay vs edit count: Spearman ρ = {meta['spearman_latency']:.2f} over {len(meta['parties'])} "
            "parties (this session's ledger)",
            "session.answer_pad_s above the time a party needs for max_edits_per_party (parties then answer no "
            "earlier than that)")
    else:
        best = max(wire, key=lambda r: (r["subject_top1"], r["m"])) if wire else None  # the worst, most edits
        figure = (f"attacks on the protected bytes named {best['subject_top1']:.0%} of {best['m']} edited "
                  f"subjects, chance {best['chance_top1']:.2%} (measured: {best.get('source', '--results')})"
                  if best else DOC_WIRE)
        out["coordinator"] = Verdict("ok", f"It saw only protected bytes ({mode}) whose content and sizes tell "
                                     "nothing about the edits.", figure,
                                     "none needed; keep session.mode shares or ckks, and set session.answer_pad_s "
                                     "if edit counts must stay hidden from its clock")
    n_min = min((len(json.loads(h["parties"])) for h in rec.handoffs), default=0)
    agg = _best(results.get("aggregate", []), "subspace")
    out["solver"] = Verdict("leak" if agg and agg["subject_top1"] > 10 * agg["chance_top1"] else "warn",
                            f"It opened only sums over at least {n_min} parties: a sum shows which subjects were "
                            "edited, not which party asked for which.",
                            _measured(agg, "the sum") if agg else DOC_AGGREGATE,
                            "session.min_parties (more parties in every sum hides who asked; no setting hides which "
                            "subjects, since the solver must solve for them)")
    delta, floor = _best(results.get("delta", []), "subspace"), _best(results.get("model", []))
    figure = _measured(delta, "ΔW") if delta else DOC_DELTA
    if delta and floor:
        figure += f"; black-box use of the edited model names {floor['subject_top1']:.0%}"
    defence = rec.policy.get("defence", "none")
    served = rec.policy.get("release") == "served"
    for p in rec.roster:
        edits = f" ({rec.edits[p]} edits)" if p in rec.edits else ""
        if served:
            budget = rec.policy.get("query_budget")
            out[f"party {p}"] = Verdict(
                "warn", f"Party {p}{edits} never held ΔW or the edited weights (served release); it could query "
                        f"the edited model for {budget} forward passes and used {rec.queries.get(p, 0)}: what it "
                        "learns of the others' edits is bounded by what that many queries reveal.",
                DOC_SERVED, "session.query_budget (lower: less to learn, and fewer questions a party can ask of "
                            "its own edits)")
            continue
        why = (f"Party {p}{edits} applies ΔW, which carries every party's edits: it can tell which subjects the "
               "others edited, not who edited them.")
        if defence != "none":
            why += (f" The session's release defence ({defence}) makes the cheapest attacks harder but not the "
                    "adaptive ones.")
        out[f"party {p}"] = Verdict("leak" if delta and delta["subject_top1"] > 10 * delta["chance_top1"] else "warn",
                                    why, figure if defence == "none" else DOC_DEFENCES,
                                    "session.release = served (parties query the edited model under a budget "
                                    "instead of holding ΔW); session.min_parties hides only who asked")
    return out


GLOSSARY = (
    ("ΔW", "the change to the model's weights that the solver computes and every party applies"),
    ("statistics", "what a party sends: sums over its edit requests that MEMIT needs (G = KKᵀ, B = RKᵀ)"),
    ("shares / ckks", "the two ways statistics are protected: split between two servers, or homomorphically "
                      "encrypted; plain means unprotected (tests only)"),
    ("named … of m edited subjects", "an attacker ranks thousands of public candidate subjects by how well each "
                                     "fits what it saw; the share of the m truly edited subjects it ranks on top"),
    ("chance", "the same share for a random ranking"),
    ("min_parties", "the solver opens no sum over fewer parties"),
    ("answer_pad_s", "parties answer no earlier than this, so answer times stop telling edit counts apart"),
    ("Spearman ρ", "how closely two rankings agree: 1 the same order, 0 unrelated"),
)


# ----------------------------------------------------------------------------------------------------- page

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}div.scroll{overflow-x:auto;font-size:.85em}.ok{background:#e3f4e1}.warn{background:#fdf1d6}.leak{background:#f9dcdc}
table.verdicts td,table.verdicts th{text-align:left;vertical-align:top}td.level{font-weight:bold}dt{font-weight:bold}
dd{margin:0 0 .4em 1.5em}img{max-width:100%;border:1px solid #ddd}details{margin-top:1.5em}"""


def _table(rows: list[dict], cols: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list) and v and all(isinstance(x, float) for x in v):
            return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"
        return html.escape("-" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def render(rec: SessionRecord, results: dict[str, list[dict]], requests: list | None = None) -> str:
    s = rec.session
    v = verdicts(rec, results)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Privacy audit: {html.escape(s['session_id'])}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>Privacy audit of session {html.escape(s['session_id'])}</h1>",
             f"<p>Protection <b>{html.escape(s['mode'])}</b>; parties {html.escape(', '.join(rec.roster))}; "
             f"{len(rec.messages)} messages in the coordinator's ledger; {len(rec.releases)} updates released.</p>",
             "<h2>Verdict per role</h2>",
             "<table class='verdicts'><tr><th>role</th><th>verdict</th><th>why</th><th>measured</th>"
             "<th>setting that lowers it</th></tr>"]
    for role, x in v.items():
        parts.append(f"<tr class='{x.level}' data-role='{html.escape(role)}'><td><b>{html.escape(role)}</b></td>"
                     f"<td class='level'>{x.level}</td><td class='reason'>{html.escape(x.reason)}</td>"
                     f"<td class='figure'>{html.escape(x.figure)}</td>"
                     f"<td class='setting'>{html.escape(x.setting)}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>The session over time</h2><p>Each dot is one message a party sent to the coordinator; rows "
                 "that look alike mean no party stands out by when or how much it sent.</p>")
    parts.append(f"<img alt='figure: timeline' src='{timeline_figure(rec)}'>")
    parts.append("<h2>Words used here</h2><dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(d)}</dd>"
                                                        for k, d in GLOSSARY) + "</dl>")
    parts.append("<details><summary>Statistics behind the verdicts</summary>")
    rows = [{"party": p, "edits": rec.edits.get(p), "contributions": t["contribs"], "bytes": t["bytes"],
             "message sizes (bytes)": ", ".join(str(x) for x in sorted(set(t["sizes"]))),
             "answer delays (s)": [round(x, 3) for x in t["latency"]]} for p, t in sorted(rec.traffic.items())]
    parts.append(_table(rows, list(rows[0]) if rows else ["party"]))
    if rec.releases:
        u = byte_uniformity(b"".join(bytes(r["frames"]) for r in rec.releases))
        parts.append(f"<p>Releases relayed: {len(rec.releases)}; readable as plain ΔW: "
                     f"{release_in_clear(rec)}; {html.escape(u['test'])} on their bytes: p = {u['p_value']:.3g}.</p>")
    cols = ["source", "view", "attack", "mode", "m", "n", "subject_top1", "subject_top1_ci", "subject_top5",
            "chance_top1", "object_top1", "judge_similarity", "nn_judge_similarity", "random_baseline"]
    if not results:
        parts.append("<p>No attack results were given (<code>--results DIR</code>): the verdicts name the figures "
                     "documented in docs/privacy.md.</p>")
    for view in ("keys", "gram", "stats", "aggregate", "delta", "model", "wire"):
        if view in results:
            used = [c for c in cols if any(r.get(c) is not None for r in results[view])]
            parts.append(f"<h3>{view}</h3>" + _table(results[view], used))
            parts.append(f"<img alt='figure: {view}' src='{results_figure(results[view], view)}'>")
    if requests:
        parts.append(f"<p>{len(requests)} edit requests were given to the audit (ground truth for scoring; never "
                     "shown to any role).</p>")
    parts.append("</details></body></html>")
    return "\n".join(parts)
