"""A live session's stage, counts and time left, read from the coordinator's ledger (read-only).

Only the coordinator's host holds the ledger, so only there is per-party detail shown (who joined, when each was
last heard from). A party's host has no ledger: when and how fast each party answered is the timing signal
``attacks/wire.py`` measures, so it stays with the coordinator; there `secure-collab status` shows the party's
own stage and counts instead, from the status file its runtime keeps (``parties/status.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from secure_collab.config import Config
from secure_collab.ledger import read_ledger


@dataclass
class Status:
    session: str
    stage: str  # joining | collecting | tagging | solving | released | done | aborted | unknown
    detail: str  # "round 0 layers 3,4 (attempt 0)" or the end's reason
    parties: tuple[str, ...]
    joined: tuple[str, ...] = ()
    contributed: tuple[str, ...] = ()  # in the current step
    applied: tuple[str, ...] = ()  # acknowledged every release so far
    releases: int = 0
    steps: int = 0
    deadline: float | None = None  # wall time at which the current wait ends
    per_party: dict[str, dict[str, Any]] = field(default_factory=dict)  # coordinator's host only

    def left_s(self, now: float) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - now)


def session_status(config: Config) -> Status:
    """The session's status from its ledger (``[paths] ledger``); FileNotFoundError where there is none."""
    sid, net = config.session.id, config.network
    t = read_ledger(config.paths.ledger, ("stages", "messages", "releases"), session=sid)
    parties = tuple(sorted(config.roster.parties))
    accepted = [m for m in t["messages"] if m["direction"] == "in" and m["outcome"] == "accepted"]
    joined = sorted({m["peer"] for m in accepted if m["type"] == "hello" and m["peer"] in parties})
    releases = sorted({(r["round"], r["layer"]) for r in t["releases"]})
    acked: dict[str, set[tuple[int, int]]] = {}
    for m in accepted:
        if m["type"] == "ack":
            acked.setdefault(m["peer"], set()).add((m["round"], m["layer"]))
    applied = sorted(p for p in parties if releases and set(releases) <= acked.get(p, set()))
    st = Status(sid, "joining", "", parties, tuple(joined), (), tuple(applied), len(releases),
                sum(len(layers) for _, layers in config.session.steps()))
    stages = t["stages"]
    for e in stages:  # the last event decides; earlier ones only give the join deadline
        if e["event"] == "joining":
            st.deadline = json.loads(e["detail"] or "{}").get("deadline")
    last = stages[-1] if stages else None
    if last is not None and last["event"] != "joining":
        where = f"round {last['round']} layers {','.join(map(str, json.loads(last['layers'])))}"
        if last["event"] in ("done", "aborted"):
            st.stage, st.detail, st.deadline = last["event"], last["detail"], None
        elif last["event"] in ("open", "restart"):
            st.stage, st.detail = "collecting", f"{where} (attempt {last['attempt']})"
            st.deadline = last["time"] + net.stage_timeout_s
            st.contributed = tuple(sorted({m["peer"] for m in accepted if m["type"] == "contrib"
                                           and m["round"] == last["round"] and m["attempt"] == last["attempt"]}))
        elif last["event"] == "tags":
            st.stage, st.detail, st.deadline = "tagging", f"round {last['round']}", last["time"] + net.stage_timeout_s
        elif last["event"] == "handoff":
            st.stage, st.detail, st.deadline = "solving", where, last["time"] + net.solve_timeout_s
        elif last["event"] == "released":
            st.stage, st.detail, st.deadline = "released", where, None
        else:
            st.stage, st.detail = last["event"], where
    for p in (*parties, "solver"):
        mine = [m for m in accepted if m["peer"] == p]
        st.per_party[p] = {"joined": p in joined or (p == "solver" and bool(mine)),
                           "last_heard": max((m["time"] for m in mine), default=None),
                           "contributed": p in st.contributed, "acked": len(acked.get(p, ()))}
    return st


def render(st: Status, now: float | None = None, *, per_party: bool = True) -> list[str]:
    """The lines `secure-collab status` prints."""
    now = time.time() if now is None else now
    left = st.left_s(now)
    n = len(st.parties)
    lines = [f"session {st.session}: {st.stage}" + (f" {st.detail}" if st.detail else ""),
             f"  joined       {len(st.joined)} of {n}",
             f"  contributed  {len(st.contributed)} of {len(st.joined) or n} (this step)",
             f"  applied      {len(st.applied)} of {n} ({st.releases} of {st.steps} releases so far)"]
    if left is not None:
        lines.append(f"  time left    {left:.0f} s (until {time.strftime('%H:%M:%S', time.localtime(st.deadline))})")
    if per_party:
        lines.append("  per party (coordinator's host only):")
        for p, d in st.per_party.items():
            heard = "never" if d["last_heard"] is None else f"{now - d['last_heard']:.0f} s ago"
            lines.append(f"    {p:<12} joined {'yes' if d['joined'] else 'no ':<4} contributed "
                         f"{'yes' if d['contributed'] else 'no ':<4} releases acked {d['acked']:<3} last heard {heard}")
    return lines
