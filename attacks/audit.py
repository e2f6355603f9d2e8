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


def read_ledger(path: Path) -> SessionRecord:
    try:
        tables = ledger.read_ledger(path, ("sessions", "roster", "messages", "handoffs", "releases"))
    except ledger.NotALedger as exc:
        raise ValueError(str(exc)) from None
    sessions = tables["sessions"]
    if not sessions:
        raise ValueError(f"ledger {path} holds no session")
    parties = [r["name"] for r in tables["roster"] if r["name"] not in ("solver", "coordinator")]
    rec = SessionRecord(sessions[-1], parties, tables["messages"], tables["handoffs"], tables["releases"],
                        ledger_traffic(path))
    rec.edits = _edit_counts(path)
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


def traffic_figure(rec: SessionRecord) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parties = sorted(rec.traffic)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    a1.bar(parties, [rec.traffic[p]["bytes"] / 1e6 for p in parties], color="#4477aa")
    a1.set(title="what the coordinator received: bytes per party", ylabel="MB")
    for i, p in enumerate(parties):
        lat = rec.traffic[p]["latency"]
        a2.scatter([i] * len(lat), lat, color="#cc6677", s=14)
    a2.set_xticks(range(len(parties)), [f"{p}\n({rec.edits[p]} edits)" if p in rec.edits else p for p in parties])
    a2.set(title="time from request to contribution", ylabel="seconds", yscale="log")
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
        source = f"{p.name} ({meta.get('model', '?')}, {Path(str(meta.get('requests', '?'))).name})"
        for r in data.get("results", []) if isinstance(data, dict) else []:
            if isinstance(r, dict) and "view" in r:
                out.setdefault(r["view"], []).append({**r, "source": source})
    return out


def _best(rows: list[dict], attack: str | None = None) -> dict | None:
    sel = [r for r in rows if r.get("subject_top1") is not None and (attack is None or r["attack"] == attack)]
    return max(sel, key=lambda r: r["m"]) if sel else None


def verdicts(rec: SessionRecord, results: dict[str, list[dict]]) -> dict[str, tuple[str, str]]:
    """role -> (level, plain-language verdict); level is 'ok', 'warn' or 'leak'."""
    mode = rec.session.get("mode", "?")
    meta = metadata_attack(rec.traffic, rec.edits) if rec.edits else None
    sizes = sorted({s for t in rec.traffic.values() for s in t["sizes"]})
    coord = [f"It relayed {sum(t['contribs'] for t in rec.traffic.values())} protected contributions ({mode})."]
    level = "ok"
    wire = results.get("wire", [])
    if wire:
        worst = max(r["subject_top1"] for r in wire)
        pmin = min(r["binomial_p_vs_chance"] for r in wire)
        coord.append(f"Attacks on those bytes did no better than chance (best recall {worst:.3f}, "
                     f"smallest p-value against chance {pmin:.2f}).")
    per_party = {tuple(sorted(set(t["sizes"]))) for t in rec.traffic.values()}
    if len(per_party) == 1:
        coord.append("Every party's messages had the same sizes, whatever it edited.")
    else:
        coord.append(f"Message sizes vary by {max(sizes) - min(sizes)} bytes at most between contributions "
                     f"(ciphertext serialisation); see the size attack for whether they follow the edits.")
    if meta and meta.get("spearman_latency", 0) > 0.5:
        level = "warn"
        coord.append(f"Its timing does, though: the delay between its request and each party's answer follows the "
                     f"party's edit count (Spearman ρ = {meta['spearman_latency']:.2f}), so it can tell who edited "
                     f"the most.")
    clear = release_in_clear(rec)
    if clear:
        level = "leak"
        coord.append("The releases it relays are readable ΔW matrices, so it holds every party's view of the "
                     "update as well (see the parties' verdict).")
    solver = ["It opened only aggregates over at least "
              f"{min((len(json.loads(h['parties'])) for h in rec.handoffs), default=0)} parties."]
    slevel = "warn"
    agg = _best(results.get("aggregate", []), "subspace")
    if agg:
        slevel = "leak" if agg["subject_top1"] > 10 * agg["chance_top1"] else "warn"
        solver.append(f"The aggregate Σ K Kᵀ spans every edited key: ranking public candidates recovered "
                      f"{agg['subject_top1']:.0%} of the {agg['m']} edited subjects (chance {agg['chance_top1']:.2%}).")
    else:
        solver.append("The aggregate spans every edited key; no measured figure was given (--results).")
    parties = ["Each party applies ΔW, which carries every party's edits."]
    plevel = "warn"
    delta, floor = _best(results.get("delta", []), "subspace"), _best(results.get("model", []))
    if delta:
        plevel = "leak" if delta["subject_top1"] > 10 * delta["chance_top1"] else "warn"
        parties.append(f"From ΔW and the public covariance, {delta['subject_top1']:.0%} of the {delta['m']} "
                       f"edited subjects were recovered (chance {delta['chance_top1']:.2%})")
        if floor:
            parties[-1] += f"; black-box queries to the edited model find {floor['subject_top1']:.0%}."
        else:
            parties[-1] += "."
    return {"coordinator": (level, " ".join(coord)), "solver": (slevel, " ".join(solver)),
            "parties": (plevel, " ".join(parties))}


# ----------------------------------------------------------------------------------------------------- page

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}div.scroll{overflow-x:auto;font-size:.85em}.ok{background:#e3f4e1}.warn{background:#fdf1d6}.leak{background:#f9dcdc}
.verdict{padding:.8em 1em;margin:.6em 0;border-radius:6px}img{max-width:100%;border:1px solid #ddd}"""


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
             f"<p>Protection mode <b>{html.escape(s['mode'])}</b>; parties {html.escape(', '.join(rec.roster))}; "
             f"{len(rec.messages)} messages in the ledger; {len(rec.releases)} releases; configuration digest "
             f"<code>{html.escape(s['config_digest'][:16])}…</code>.</p>", "<h2>Verdict per role</h2>"]
    for role, (level, text) in v.items():
        parts.append(f"<div class='verdict {level}'><b>{role}</b> ({level}): {html.escape(text)}</div>")
    parts.append("<h2>What the coordinator saw</h2>")
    rows = [{"party": p, "edits": rec.edits.get(p), "contributions": t["contribs"], "bytes": t["bytes"],
             "message sizes (bytes)": ", ".join(str(x) for x in sorted(set(t["sizes"]))),
             "first latency (s)": t["latency"][0] if t["latency"] else None} for p, t in sorted(rec.traffic.items())]
    parts.append(_table(rows, list(rows[0]) if rows else ["party"]))
    parts.append(f"<img alt='figure: traffic per party' src='{traffic_figure(rec)}'>")
    if rec.releases:
        raw = b"".join(bytes(r["frames"]) for r in rec.releases)
        u = byte_uniformity(raw)
        parts.append(f"<p>Releases relayed: {len(rec.releases)}; readable as plain ΔW: "
                     f"<b>{release_in_clear(rec)}</b>; {html.escape(u['test'])} on their bytes: p = "
                     f"{u['p_value']:.3g}.</p>")
    parts.append("<h2>Measured leakage per view</h2>")
    if not results:
        parts.append("<p>No attack results were given (<code>--results DIR</code> with the JSON of "
                     "<code>secure-collab attack</code>).</p>")
    cols = ["source", "view", "attack", "mode", "m", "n", "subject_top1", "subject_top1_ci", "subject_top5",
            "chance_top1", "object_top1", "judge_similarity", "nn_judge_similarity", "random_baseline"]
    for view in ("keys", "gram", "stats", "aggregate", "delta", "model", "wire"):
        if view in results:
            parts.append(f"<h3>{view}</h3><p>Measured on: "
                         f"{html.escape(', '.join(sorted({r['source'] for r in results[view]})))}.</p>")
            used = [c for c in cols if any(r.get(c) is not None for r in results[view])]
            parts.append(_table(results[view], used))
            parts.append(f"<img alt='figure: {view}' src='{results_figure(results[view], view)}'>")
    if requests:
        parts.append(f"<h2>Requests of this session</h2><p>{len(requests)} edit requests were given to the "
                     f"audit (ground truth for scoring; never shown to any role).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
