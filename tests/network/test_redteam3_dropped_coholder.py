"""Red team 3 (after issue 18, finding 1): a coordinator that leaves out one holder of a shared fact after the
decisions silently weakens the *other* honest holders' edit, and they end "ok".

Under the 1/m rule each of a duplicate's m holders scales its copy by 1/m, trusting that the other m − 1 copies
reach the sum. The solver knows exactly who those holders are (it decided over their tags), but at aggregation it
checks only the edit count of the parties the coordinator lists (``expected_edits``). So a modified coordinator
(no party hostile) runs the tag exchange honestly, then leaves c out of the round's collection (as if c had
dropped out; min_parties still holds with a and b): the solver releases ΔW with a's fact at weight 1/2 over
parties [a, b], a applies it and ends "ok" with nothing in its report (its ``left_out`` is empty; its decision
still says "held by 2 parties"). docs/threat-model.md rates dropping a party as denial of service and states the
(m − k)/m bound only for *hostile holders*; here an honest party's edit is halved (with m holders, cut to 1/m)
without any hostile party and without the affected party learning it.

Fix: the solver refuses (or re-decides) a step whose party set leaves out a decided co-holder of a kept
duplicate, or tells each holder, in the signed release, that its shared facts lost a co-holder; at least write
the bound for dropped co-holders in the threat model and the party's report.
"""

from __future__ import annotations

import numpy as np
from network_doubles import Watching, fact_reference, make_config, run_fact_session

from secure_collab.protection import get_scheme

P = "P17"
F, FB = ("Zanzibar", P, "Obj-shared"), ("Pemba", P, "Obj-b")
FACTS = {"a": {0: [F]}, "b": {0: [FB]}, "c": {0: [F]}}


class DropsAfterDeciding(Watching):
    """Runs the tag exchange honestly, then collects the round without c (as a dropout would look)."""

    def _run_tags(self, round_):
        ok = super()._run_tags(round_)
        self.active.discard("c")
        return ok


def test_redteam3_leaving_out_a_coholder_after_the_decision_halves_an_honest_edit_silently(tmp_path):
    cfg = make_config(tmp_path, mode="shares", dedupe=True, conflict_policy="none", max_edits_per_party=2)
    run = run_fact_session(cfg, FACTS, coordinator=DropsAfterDeciding(cfg, get_scheme("shares")))
    a = run.parties["a"]
    [(_, action, kind, _, holders)] = a.decisions[0]
    assert (action, kind, holders) == ("keep", "duplicate", 2)  # a was told its copy counts 1/2 of one copy
    halved = fact_reference(cfg, {0: [(F, -1, 0.5), (FB, -1)]})
    whole = fact_reference(cfg, {0: [(F, -1, 1.0), (FB, -1)]})
    got = run.solver.releases
    if not run.outcome.ok or not a.ok:
        return  # fixed: refused (or a told), nothing silently halved
    assert a.left_out == []  # nothing in a's report says a co-holder's copy is missing
    for key, delta in whole.items():
        close = np.linalg.norm(got[key] - halved[key]) <= 1e-9 * np.linalg.norm(halved[key])
        assert not close, f"{key}: released with the shared fact at 1/2 (over {run.solver.received[-1][-1]}), a ok"
        assert np.linalg.norm(got[key] - delta) <= 1e-9 * np.linalg.norm(delta), key


def test_a_coholder_left_out_after_the_decision_is_named_to_the_other_holders_signed(tmp_path):
    """The fix's design: the session stays live (an honest co-holder may just have crashed), the release is the
    honest sum of the parties in the step (a's copy at 1/2), and the solver's signed, encrypted holders note tells
    a that its shared fact had 1 of its 2 holders in the step: a applies every release and reports not-ok, naming
    the request and its weight. b, which shares nothing, ends ok; c was left out and says so."""
    cfg = make_config(tmp_path, mode="shares", dedupe=True, conflict_policy="none", max_edits_per_party=2)
    run = run_fact_session(cfg, FACTS, coordinator=DropsAfterDeciding(cfg, get_scheme("shares")))
    a, b, c = (run.parties[n] for n in "abc")
    assert run.outcome.ok, run.outcome.reason
    halved = fact_reference(cfg, {0: [(F, -1, 0.5), (FB, -1)]})
    for key, delta in halved.items():
        assert np.linalg.norm(run.solver.releases[key] - delta) <= 1e-9 * np.linalg.norm(delta), key
    assert set(a.applied) == set(halved) and a.left_out == []
    assert a.weakened == {(0, 0): (1, 2)}
    assert not a.ok and "round 0 request 0 counts 1/2 of one copy" in a.reason, a.reason
    assert b.ok and b.weakened == {}, b.reason
    assert c.left_out == sorted(halved) and c.weakened == {}
