"""Project the real-size bench rows (`secure-collab bench --only realsize`) to whole edits of other models and party
counts: bytes per party, coordinator and solver memory, wall time, for the path as it is (no streaming).

    PYTHONPATH=. .venv/bin/python benchmarks/realsize_projection.py ROWS_DIR [ROWS_DIR ...] [--json OUT]

ROWS_DIR: a ``<out>/realsize/rows`` directory of the bench. Every coefficient comes from a measured row and is printed
with the row it came from; the tables mark a cell "m" where a row measured that very figure and leave the rest
projected by the formulas below (one layer per step, parties asked in turn, one math thread per role):

- bytes per party = L · v(d_k, d_v) · (bytes per value of the mode, measured) + L · release bytes (8 d_v d_k, the ΔW
  message; measured bytes received per party per value of ΔW).
- coordinator peak = base + (k_c + k_p · P) · (one party's bytes for one step): k_p from two party counts at one size
  (measured: the session's coordinator is not flat in the party count), base and k_c a line through the completed
  rows of the mode.
- solver peak = base + k_s · 8 (d_k² + d_v d_k) + (L − 1) · 8 d_k²: a line through the measured rows, plus the dense
  C of every other edited layer, which a real solver keeps from the start (the bench's solver holds one).
- party peak = base + k_p · 8 (d_k² + d_v d_k) (its full statistics, the packed copy and the check's temporaries).
- wall = L · [P · (check(d_k) + pack + protect + move + add) + open + check(d_k) + solve(d_k, d_v)] with the parties
  in turn on one machine (as measured), and L · [check + pack + protect + P · (move + add) + open + check + solve]
  with each party on a machine of its own (the coordinator's link and additions stay serial), with
  check = c_eig · d_k³ (an eigendecomposition of the whole G, at the party and again at the solver), solve =
  c_solve · (d_k³/3 + 2 d_k² d_v) (Cholesky and two triangular solves), protect/add/open at the measured CPU seconds per
  million values (open per party for shares, whose opening removes every party's mask), and ``move`` the rest of a
  measured row's wall time per byte a party sends (transfer over CurveZMQ, signatures, framing, waiting).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from secure_collab.bench.realsize import values_per_party as values

MODELS = (  # name, d_k, d_v, edited layers (MEMIT's choices; the 70B row assumes 5)
    ("SmolLM2-135M", 1536, 576, 5), ("GPT-2 XL", 6400, 1600, 5), ("GPT-J 6B", 16384, 4096, 6),
    ("Llama-3-8B", 14336, 4096, 5), ("Llama-3-70B", 28672, 8192, 5))
PARTIES = (3, 10, 100)


def load(dirs: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for d in dirs:
        for path in sorted(d.glob("*.json")):
            r = json.loads(path.read_text())
            r["file"] = str(path)
            rows.append(r)
    return rows


def peak(r: dict[str, Any], role: str) -> int | None:
    """A role's peak from the OS: the largest of the VmHWM figures a row holds (the roles' own at their end, and the
    driver's), over the parties for ``party``."""
    names = [k for k in r.get("roles", {}) if (k.startswith("party-") if role == "party" else k == role)]
    got = [max(x for x in (v.get("vm_hwm_bytes"), v.get("peak_rss_bytes")) if x)
           for v in (r["roles"][k] for k in names) if v.get("vm_hwm_bytes") or v.get("peak_rss_bytes")]
    return max(got) if got else None


def line(points: list[tuple[float, float]]) -> tuple[float, float, str]:
    """(intercept, slope) through the two points farthest apart in x; a single point gives slope y/x, intercept 0."""
    pts = sorted(points)
    if len(pts) == 1:
        return 0.0, pts[0][1] / pts[0][0], "one point (through the origin)"
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    slope = (y1 - y0) / (x1 - x0)
    return y0 - slope * x0, slope, f"line through x = {x0:.3g} and {x1:.3g}"


def coefficients(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every coefficient of the formulas, from the measured rows (each with where it came from)."""
    sessions = [r for r in rows if "mode" in r and "not_run" not in r and r.get("wall_seconds")]
    solves = [r for r in rows if "mode" not in r and r.get("solve_seconds")]  # the solver's work alone
    c: dict[str, Any] = {"modes": {}}
    for mode in ("shares", "plain", "ckks"):
        mine = [r for r in sessions if r["mode"] == mode]
        if not mine:
            continue
        big = max(mine, key=lambda r: (r["d_k"], r.get("ok", False)))
        m: dict[str, Any] = {"from": big["file"]}
        full = [r for r in mine if r.get("bytes_per_value")]
        if full:
            top = max(full, key=lambda r: r["d_k"])
            m["bytes_per_value"] = top["bytes_per_value"]
            if top.get("bytes_received_per_party"):
                m["received_per_delta_value"] = top["bytes_received_per_party"] / (top["d_v"] * top["d_k"])
        for what in ("protect", "add", "open"):
            got = [r for r in mine if r.get(f"{what}_seconds_per_mvalue")]
            if got:
                top = max(got, key=lambda r: r["d_k"])
                rate = top[f"{what}_seconds_per_mvalue"]["cpu"]
                if what == "open" and mode == "shares":
                    rate /= top["parties"]  # per party's mask removed
                m[f"{what}_s_per_mvalue"] = rate
        got = [r for r in mine if (r.get("party_pack_seconds") or {}).get("wall")]
        if got:
            top = max(got, key=lambda r: r["d_k"])
            m["pack_s_per_mvalue"] = top["party_pack_seconds"]["wall"] / (values(top["d_k"], top["d_v"]) / 1e6)
        done = [r for r in mine if r.get("ok") and peak(r, "coordinator")]  # a stopped row's had not seen everyone
        per_party = 0.0  # coordinator bytes per party and per byte of one party's payload: two party counts, one size
        for d in sorted({r["d_k"] for r in done}, reverse=True):
            at = sorted((r for r in done if r["d_k"] == d), key=lambda r: r["parties"])
            if len(at) > 1 and at[-1]["parties"] > at[0]["parties"]:
                lo, hi = at[0], at[-1]
                per_party = (peak(hi, "coordinator") - peak(lo, "coordinator")) / (
                    (hi["parties"] - lo["parties"]) * hi["bytes_sent_per_party"])
                m["coordinator_per_party"] = [per_party, f"d_k {d}: {lo['parties']} and {hi['parties']} parties"]
                break
        pts = [(r["bytes_sent_per_party"],
                peak(r, "coordinator") - per_party * r["parties"] * r["bytes_sent_per_party"]) for r in done]
        if pts:
            m["coordinator"] = line(pts)
        pts = [(8 * (r["d_k"] ** 2 + r["d_v"] * r["d_k"]), peak(r, "solver")) for r in mine if r.get("ok")
               and peak(r, "solver")]
        if pts:
            m["solver"] = line(pts)
        pts = [(8 * (r["d_k"] ** 2 + r["d_v"] * r["d_k"]), peak(r, "party")) for r in mine if peak(r, "party")]
        if pts:
            m["party"] = line(pts)
        moves = []
        for r in mine:
            if not r.get("ok"):
                continue
            known = sum(((r.get(k) or {}).get("wall", 0.0) * (r["parties"] if k.startswith("party") else 1))
                        for k in ("party_check_seconds", "party_pack_seconds", "solver_check_seconds",
                                  "solve_seconds", "solver_authenticate_seconds"))
            per_v = values(r["d_k"], r["d_v"]) / 1e6
            known += sum((r.get(f"{w}_seconds_per_mvalue") or {}).get("wall", 0.0) * per_v * k
                         for w, k in (("protect", r["parties"]), ("add", r["parties"]), ("open", 1)))
            moves.append((r["d_k"], (r["wall_seconds"] - known) / (r["parties"] * r["bytes_sent_per_party"])))
        if moves:  # from the largest row that completed; 0 where the timed parts overlap (ckks: add during protect)
            m["move_s_per_byte"] = max(0.0, max(moves)[1])
        c["modes"][mode] = m
    checks = [(r["d_k"], (r.get("party_check_seconds") or {}).get("wall_max")) for r in sessions]
    checks += [(r["d_k"], r.get("check_seconds")) for r in solves]
    checks = [x for x in checks if x[1]]
    if checks:
        d, t = max(checks)
        c["check_s_per_dk3"] = t / d**3
        c["check_from_dk"] = d
    if solves:
        top = max(solves, key=lambda r: r["d_k"])
        c["solve_s_per_flop"] = top["solve_seconds"] / (top["d_k"] ** 3 / 3 + 2 * top["d_k"] ** 2 * top["d_v"])
        c["solve_from"] = top["file"]
    return c


def project(c: dict[str, Any], mode: str, d_k: int, d_v: int, layers: int, parties: int) -> dict[str, float | None]:
    m = c["modes"].get(mode) or c["modes"]["shares"]
    v = values(d_k, d_v)
    mv = v / 1e6
    stats = 8 * (d_k**2 + d_v * d_k)
    out: dict[str, float | None] = {}
    bpv = m.get("bytes_per_value")
    out["sent"] = layers * v * bpv if bpv else None
    out["received"] = layers * d_v * d_k * m.get("received_per_delta_value", 8.0)
    if "coordinator" in m and out["sent"]:
        a, k, _ = m["coordinator"]
        payload = out["sent"] / layers  # one party's bytes for one step
        out["coordinator"] = a + k * payload + m.get("coordinator_per_party", [0.0])[0] * parties * payload
    if "solver" in m:
        a, k, _ = m["solver"]
        out["solver"] = a + k * stats + (layers - 1) * 8 * d_k**2
    if "party" in m:
        a, k, _ = m["party"]
        out["party"] = a + k * stats
    check = c.get("check_s_per_dk3", 0.0) * d_k**3
    solve = c.get("solve_s_per_flop", 0.0) * (d_k**3 / 3 + 2 * d_k**2 * d_v)
    open_rate = m.get("open_s_per_mvalue", 0.0) * (parties if mode == "shares" else 1)
    local = check + (m.get("pack_s_per_mvalue", 0.0) + m.get("protect_s_per_mvalue", 0.0)) * mv  # at the party
    link = m.get("move_s_per_byte", 0.0) * (out["sent"] or 0) / layers + m.get("add_s_per_mvalue", 0.0) * mv
    after = open_rate * mv + check + solve  # the solver, once every party is in
    out["wall"] = layers * (parties * (local + link) + after)  # one machine, parties in turn (as measured)
    out["wall_own_machines"] = layers * (local + parties * link + after)  # each party computing on its own machine
    return out


def fmt_bytes(x: float | None) -> str:
    return "-" if x is None else (f"{x / 1e9:,.1f} GB" if x >= 1e9 else f"{x / 1e6:,.0f} MB")


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s / 3600:.1f} h" if s >= 3600 else (f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s")


def measured_cell(rows: list[dict[str, Any]], mode: str, d_k: int, layers: int, parties: int) -> dict[str, Any] | None:
    if layers != 1:
        return None
    got = [r for r in rows if r.get("mode") == mode and r.get("d_k") == d_k and r.get("parties") == parties
           and "not_run" not in r and r.get("wall_seconds")]
    return got[0] if got else None


def tables(rows: list[dict[str, Any]], c: dict[str, Any]) -> str:
    out = []
    for mode in ("shares", "ckks"):
        if mode not in c["modes"]:
            continue
        out += [f"#### {mode}", "",
                "| model | d_k / d_v | layers | " + " | ".join(f"{p} parties: sent per party, coordinator, solver, "
                                                                 f"wall in turn / own machines" for p in PARTIES)
                + " |",
                "|---|---|---|" + "---|" * len(PARTIES)]
        for name, d_k, d_v, depth in MODELS:
            for layers in sorted({1, depth}):
                cells = []
                for p in PARTIES:
                    x = project(c, mode, d_k, d_v, layers, p)
                    m = measured_cell(rows, mode, d_k, layers, p)
                    mark = {"sent": "", "coordinator": "", "solver": "", "wall": ""}
                    if m:  # the figures this very row measured replace the projection, marked m; a row the memory
                        # guard stopped gives a lower bound (≥ … m) where its role had not finished
                        for key, field in (("sent", "bytes_sent_per_party"), ("wall", "wall_seconds")):
                            if m.get(field) and m.get("ok"):
                                x[key], mark[key] = m[field], " m"
                        for key in ("coordinator", "solver"):
                            got = peak(m, key)
                            if got and m.get("ok"):
                                x[key], mark[key] = got, " m"
                            elif got and got > (x.get(key) or 0):
                                x[key], mark[key] = got, " m (≥: stopped)"
                    cells.append(f"{fmt_bytes(x['sent'])}{mark['sent']}, {fmt_bytes(x.get('coordinator'))}"
                                 f"{mark['coordinator']}, {fmt_bytes(x.get('solver'))}{mark['solver']}, "
                                 f"{fmt_time(x['wall'])}{mark['wall']} / {fmt_time(x['wall_own_machines'])}")
                out.append(f"| {name} | {d_k:,} / {d_v:,} | {layers} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rows", nargs="+", type=Path, help="<out>/realsize/rows directories of the bench")
    p.add_argument("--json", type=Path, default=None, help="write the coefficients here")
    args = p.parse_args(argv)
    rows = load(args.rows)
    if not rows:
        print("no rows", file=sys.stderr)
        return 2
    c = coefficients(rows)
    print("Coefficients (from the measured rows):\n")
    print("```\n" + json.dumps(c, indent=1) + "\n```\n")
    print(tables(rows, c))
    if args.json:
        args.json.write_text(json.dumps(c, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
