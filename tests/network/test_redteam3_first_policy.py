"""Red team 3 (after issue 18): under ``conflict_policy = "first"`` the untrusted coordinator picks every conflict's
winner, and so which honest party's edit is withdrawn.

``overlap.decide`` with policy ``first`` picks "the object whose party's tags reached the solver first"
(``arrival`` in solver/tags.py: the order in which TAGS messages reach the solver). Every TAGS message reaches the
solver through the coordinator, which may run modified code (DESIGN §2): it can hold one party's TAGS until the
others are forwarded. It forges nothing, alters no signed byte and every party accepts its genuine, solver-signed
decision, so the session ends "ok"; yet the coordinator decided which of two honest parties' conflicting edits is
withdrawn (the loser is told "lost under policy first" and contributes nothing for it). docs/threat-model.md lists
"first to send tags" among the powers of a *winning party* (a declared trust decision between parties); the
coordinator's control of the order is not written anywhere, and the coordinator table says it "cannot ... move a
message" to change a decision.

Here a and c (both honest) hold conflicting objects for one (subject, relation); b holds an unrelated fact. Run
twice with the same parties and inputs: the coordinator forwards a's TAGS last, then c's TAGS last. The winner
flips with the coordinator's choice. Fix: base ``first`` on something the coordinator cannot reorder (e.g. an
earlier round's applied fact only, else a deterministic tie-break such as priority or a hash of the tags and the
round label), or document ``first`` as "the coordinator's choice" and say so in the threat model.
"""

from __future__ import annotations

from network_doubles import Watching, make_config, run_fact_session

from secure_collab.protection import get_scheme
from secure_collab.protocol.messages import MsgType

P = "P36"
FA, FC = ("Zanzibar", P, "Obj-from-a"), ("Zanzibar", P, "Obj-from-c")
FB = ("Pemba", P, "Obj-b")
FACTS = {"a": {0: [FA]}, "b": {0: [FB]}, "c": {0: [FC]}}


class HoldsOneTagsBack(Watching):
    """Forwards ``late``'s TAGS to the solver only after every other party's (nothing else changes)."""

    late = "a"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.held = None

    def _to_solver(self, phase, msg):
        if msg.type is MsgType.TAGS:
            if msg.body["party"] == self.late:
                self.held = (phase, msg)
            else:
                super()._to_solver(phase, msg)
            others = {m.body["party"] for m in phase.forwarded if m.type is MsgType.TAGS}
            if self.held is not None and others >= set(phase.expected) - {self.late}:
                super()._to_solver(*self.held)
                self.held = None
            return
        super()._to_solver(phase, msg)


def test_redteam3_the_coordinator_picks_the_winner_of_a_first_policy_conflict(tmp_path):
    winners = {}
    for late in ("a", "c"):
        tmp = tmp_path / f"late-{late}"
        tmp.mkdir()
        cfg = make_config(tmp, mode="shares", dedupe=True, conflict_policy="first", max_edits_per_party=4)
        HoldsOneTagsBack.late = late
        coordinator = HoldsOneTagsBack(cfg, get_scheme("shares"))
        run = run_fact_session(cfg, FACTS, coordinator=coordinator)
        assert run.outcome.ok, run.outcome.reason
        assert all(run.parties[n].ok for n in "abc"), {n: run.parties[n].reason for n in "abc"}
        actions = {n: run.parties[n].decisions[0][0][1] for n in "ac"}
        assert sorted(actions.values()) == ["augment", "withdraw"], actions  # one honest edit is withdrawn
        winners[late] = next(n for n, a in actions.items() if a == "augment")
    # the coordinator's order alone decided it: a wins when c's tags are held back, c when a's are
    assert winners["a"] == winners["c"], f"winner when a's TAGS are held back: {winners['a']}; when c's: {winners['c']}"
