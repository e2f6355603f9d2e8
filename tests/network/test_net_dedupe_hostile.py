"""Issue 18, finding 1: a hostile party must not remove another party's edit through dedupe decisions.

Party b (above c in the conflict priority) tags its one real fact plus three guesses at other parties' facts (c's
real fact, a's real fact, a fact nobody holds), then contributes G and B for its real fact only, with N set to
the count its decisions allow (the solver can check N, not what the masked G and B hold). Over real sockets
with the real solver, the released ΔW must equal the reference in which every honest party's fact carries the
weight its honest holders sent: c's fact is weakened to the share c itself sent, never removed.
"""

from __future__ import annotations

import numpy as np
import pytest
from network_doubles import FactEngine, fact_reference, fact_statistics, make_config, run_fact_session

P = "P17"
FA, FB, FC, FX = ((f"Zanzibar-{k}", P, f"Obj-{k}") for k in ("a", "b", "c", "x"))
FACTS = {"a": {0: [FA]}, "b": {0: [FB, FC, FA, FX]}, "c": {0: [FC]}}


class Prober(FactEngine):
    """b: tags four facts, contributes its real one (the first) only, and claims the edit count its decisions
    allow."""

    def compute_statistics(self, round_, layer):
        self.compute_calls.append((round_, layer))
        verdicts = self.verdicts[round_]
        allowed = sum(v[1] != "withdraw" for v in verdicts) + self.s.augment * sum(v[1] == "augment" for v in verdicts)
        return {**fact_statistics(self.s, self.kept[round_][:1], layer, self.w), "N": allowed}


@pytest.mark.parametrize("mode", ["plain", "shares"])
def test_a_hostile_party_cannot_remove_another_partys_edit_through_dedupe(tmp_path, mode):
    cfg = make_config(tmp_path, mode=mode, dedupe=True, conflict_policy="priority", max_edits_per_party=4)
    run = run_fact_session(cfg, FACTS, engine={"b": Prober})
    assert run.outcome.ok, run.outcome.reason
    # a's and c's facts carry the share their honest holders sent (1/2 each: b held a copy and sent nothing)
    ref = fact_reference(cfg, {0: [(FA, -1, 0.5), (FB, -1), (FC, -1, 0.5)]})
    for key, delta in ref.items():
        got = run.solver.releases[key]
        assert np.linalg.norm(got - delta) <= 1e-9 * np.linalg.norm(delta), key
    # the honest parties end knowing what happened to their edits: kept, a duplicate held by two, weight 1/2
    for name in "ac":
        party = run.parties[name]
        assert party.ok, party.reason
        [(index, action, kind, _did, holders)] = party.decisions[0]
        assert (index, action, kind, holders) == (0, "keep", "duplicate", 2)
        assert run.engines[name].kept[0] == [(FACTS[name][0][0], -1, 0.5)]
    # what b learns (written in docs/threat-model.md): which of its guesses another party holds, and by how many
    b = run.parties["b"].decisions[0]
    assert [(v[1], v[2], v[4]) for v in b] == [("keep", "", 1), ("keep", "duplicate", 2), ("keep", "duplicate", 2),
                                               ("keep", "", 1)]


class Liar(FactEngine):
    """b lies in every field it controls: its tags (c's fact three times, a's fact, a guess nobody holds), its G and
    B (an unrelated fact it never tagged, in bounds and plausible) and, when ``pad``, its edit count N."""

    pad = 0

    def compute_statistics(self, round_, layer):
        self.compute_calls.append((round_, layer))
        verdicts = self.verdicts[round_]
        allowed = sum(v[1] != "withdraw" for v in verdicts) + self.s.augment * sum(v[1] == "augment" for v in verdicts)
        return {**fact_statistics(self.s, [(FY, -1)], layer, self.w), "N": allowed + self.pad}


FY = ("Zanzibar-y", P, "Obj-y")
LIES = {"a": {0: [FA]}, "b": {0: [FC, FC, FC, FA, FX]}, "c": {0: [FC]}}


@pytest.mark.parametrize("pad", [0, 1])
def test_a_party_lying_in_tags_count_and_statistics_removes_nobody(tmp_path, pad):
    cfg = make_config(tmp_path, mode="shares", dedupe=True, conflict_policy="priority", max_edits_per_party=5)
    Liar.pad = pad
    run = run_fact_session(cfg, LIES, engine={"b": Liar})
    b = run.parties["b"].decisions[0]
    # tagging c's fact three times makes b one holder, not three: its repeats are withdrawn, c keeps 1/2, not 1/4
    assert [(v[1], v[4]) for v in b] == [("keep", 2), ("withdraw", 1), ("withdraw", 1), ("keep", 2), ("keep", 1)]
    assert [(v[1], v[2], v[4]) for v in run.parties["c"].decisions[0]] == [("keep", "duplicate", 2)]
    if pad:  # a count its decisions do not allow: refused, naming the cause, and nothing released
        assert not run.outcome.ok and "their tags and the round's decisions allow" in run.outcome.reason
        assert run.solver.releases == {}
        assert all(not run.parties[n].ok and run.parties[n].applied == {} for n in "ac")
        return
    # an N that fits: released; the honest facts carry the weight their honest holders sent, plus what b sent
    assert run.outcome.ok, run.outcome.reason
    ref = fact_reference(cfg, {0: [(FA, -1, 0.5), (FC, -1, 0.5), (FY, -1)]})
    for key, delta in ref.items():
        got = run.solver.releases[key]
        assert np.linalg.norm(got - delta) <= 1e-9 * np.linalg.norm(delta), key
    assert all(run.parties[n].ok for n in "ac")
