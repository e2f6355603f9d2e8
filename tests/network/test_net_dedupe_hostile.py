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


class Decoyed(FactEngine):
    """decoys:1 as the solver counts it: one decoy per kept fact in N (its statistics a public fact of this party's
    own), and in the repair round ``repairs`` push-backs (a fact each) with N = ``repairs``."""

    repairs = 1

    def compute_statistics(self, round_, layer):
        self.compute_calls.append((round_, layer))
        decoy = [((f"Decoy-{self.name}-{j}", P, "Obj-d"), -1) for j in range(8)]
        if round_ == self.s.repair_round:
            return {**fact_statistics(self.s, decoy[:self.repairs], layer, self.w), "N": self.repairs}
        kept = self.kept.get(round_, [(f, -1) for f in self.facts.get(round_, [])])
        return {**fact_statistics(self.s, kept + decoy[:len(kept)], layer, self.w), "N": 2 * len(kept)}


class NoRepairs(Decoyed):
    repairs = 0


class Padder(Decoyed):
    """b uses the repair round (no tags, no decisions) to add edits: more push-backs than it has decoys."""

    repairs = 3


@pytest.mark.parametrize("hostile", [False, True])
def test_the_repair_round_admits_no_more_edits_than_the_decoys_the_decisions_allow(tmp_path, hostile):
    """With decoys:1 and dedupe, the repair round has no tags; the solver still bounds its count by R × the real
    edits the earlier rounds' decisions left (here 3): three honest push-backs are released; b's five are refused
    with the reason and nothing of that round is released, but the session still completes for everyone: every
    edit round was released and applied, so b's refusal costs the others the repair, not the joint edit."""
    cfg = make_config(tmp_path, mode="shares", dedupe=True, defence="decoys:1@0", max_edits_per_party=4)
    facts = {"a": {0: [FA]}, "b": {0: [FB]}, "c": {0: [FC]}}
    run = run_fact_session(cfg, facts, engine={"a": Decoyed, "b": Padder if hostile else Decoyed, "c": Decoyed})
    assert run.outcome.ok, run.outcome.reason
    assert set(k for k in run.solver.releases if k[0] == 0) == {(0, 1), (0, 2)}
    if hostile:
        assert "repair round was not" in run.outcome.reason and "repair count exceeds the decoys" in run.outcome.reason
        assert not any(k[0] == 1 for k in run.solver.releases)
        for name in "ac":  # complete (they save their model), and told the repair is missing
            assert run.parties[name].ok and "repair round was not released" in run.parties[name].reason
            assert set(run.parties[name].applied) == {(0, 1), (0, 2)}
        return
    assert set(run.solver.releases) == {(0, 1), (0, 2), (1, 1), (1, 2)}
    assert all(run.parties[n].ok and len(run.parties[n].applied) == 4 for n in "abc")


@pytest.mark.parametrize("dedupe", [False, True])
def test_a_repair_round_with_nothing_to_repair_releases_zero_and_completes(tmp_path, dedupe):
    """Every party sends zeros (N = 0) when no decoy was weakened: plausible for this round, ΔW = 0 released and
    applied (an empty edit round would be refused: nothing to release)."""
    cfg = make_config(tmp_path, mode="shares", dedupe=dedupe, defence="decoys:1@0", max_edits_per_party=4)
    facts = {"a": {0: [FA]}, "b": {0: [FB]}, "c": {0: [FC]}}
    run = run_fact_session(cfg, facts, engine=dict.fromkeys("abc", NoRepairs))
    assert run.outcome.ok and run.outcome.reason == "session complete", run.outcome.reason
    assert all(not run.solver.releases[(1, layer)].any() for layer in (1, 2))
    assert all(run.parties[n].ok and len(run.parties[n].applied) == 4 for n in "abc")
