"""Dedupe and conflicts over real sockets: keyed tags by the solver's OPRF, decisions signed by the solver.

Three parties, two rounds, facts named so that a copy at several parties has identical statistics: the released
ΔW must equal the reference computed from exactly the facts that the decisions leave (a duplicate once: each of
its m holders at weight 1/m; the conflict winner plus its augmented copies; a fact already applied in round 0
kept by its later holder, since a tag does not prove it was applied). The coordinator's
ledger holds decision ids and blinded values only; a lying coordinator is caught by the parties.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from network_doubles import Watching, fact_reference, ledger_bytes, make_config, run_fact_session

from secure_collab.protection import get_scheme
from secure_collab.protocol.messages import Message, MsgType

P = "P17"  # one relation id for every fact
F = {k: (f"Zanzibar-{k}", P, f"Obj-{k}") for k in ("s1", "s2", "s3", "s4", "s5", "s6")}
CONFLICT = ("Zanzibar-s1", P, "Obj-other")
FACTS = {
    "a": {0: [F["s1"], F["s2"]], 1: [F["s5"]]},
    "b": {0: [F["s1"], F["s3"]], 1: [F["s2"]]},  # s1: a duplicate of a's; s2 in round 1: a applied it in round 0
    "c": {0: [F["s4"], CONFLICT], 1: [F["s6"]]},  # s1 with another object: a conflict (a has priority)
}
KEPT = {0: [(F["s1"], -1, 0.5), (F["s1"], -1, 0.5), (F["s1"], 0), (F["s1"], 1), (F["s2"], -1), (F["s3"], -1),
            (F["s4"], -1)],
        1: [(F["s5"], -1), (F["s6"], -1), (F["s2"], -1)]}  # s2 again: its holder keeps it (near-zero if applied)


def _config(tmp_path, **kw):
    session = dict(rounds=2, dedupe=True, conflict_policy="priority", max_edits_per_party=8, augment=2,
                   update_rule="memit-dynamic")
    return make_config(tmp_path, **{**session, **kw})


def _check_released(run, cfg):
    assert run.outcome.ok, run.outcome.reason
    ref = fact_reference(cfg, KEPT)
    for key, delta in ref.items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["plain", "shares"])
def test_duplicates_count_once_and_the_conflict_winner_augments(tmp_path, mode):
    cfg = _config(tmp_path, mode=mode)
    run = run_fact_session(cfg, FACTS)
    _check_released(run, cfg)
    a, b, c = (run.parties[n].decisions for n in "abc")
    assert [v[1] for v in a[0]] == ["augment", "keep"] and [v[1] for v in a[1]] == ["keep"]
    assert [v[1] for v in b[0]] == ["keep", "keep"] and [v[1] for v in b[1]] == ["keep"]  # never withdrawn
    assert [v[4] for v in a[0]] == [2, 1] and [(v[2], v[4]) for v in b[0]] == [("duplicate", 2), ("", 1)]
    assert [(v[2], v[4]) for v in b[1]] == [("duplicate", 1)]  # applied in round 0 by a, kept by b alone
    assert [v[1] for v in c[0]] == ["keep", "withdraw"] and [v[2] for v in c[0]] == ["", "conflict"]
    assert a[0][0][3] == b[0][0][3] == c[0][1][3]  # one decision, one id, told to every affected party

    # the ledger: decisions by id only; tags, texts and OPRF outputs never reach the coordinator
    with sqlite3.connect(cfg.paths.ledger) as db:
        rows = db.execute("SELECT round, decision_id, kind FROM decisions ORDER BY round").fetchall()
    assert [(r, k) for r, _, k in rows] == [(0, "conflict"), (1, "duplicate")]
    assert rows[0][1] == a[0][0][3]
    ledger = ledger_bytes(cfg.paths.ledger)
    seen = b"".join(run.extra["coordinator"].frames)
    assert seen and b"Zanzibar" not in ledger and b"Zanzibar" not in seen
    for name in "abc":
        for tag in [t for ts in run.parties[name].own_tags.values() for t in ts]:
            assert tag not in ledger and tag not in seen


def test_tags_of_one_fact_differ_between_sessions(tmp_path):
    tags = []
    for k in range(2):
        cfg = _config(tmp_path / str(k), id=f"s{k}", rounds=1)
        run = run_fact_session(cfg, {n: {0: f[0]} for n, f in FACTS.items()})
        assert run.outcome.ok, run.outcome.reason
        tags.append(run.parties["a"].own_tags[0])
    assert len(tags[0]) == 4 and not set(tags[0]) & set(tags[1])


class Lying(Watching):
    """Lies to party b about its decision in round 0, then (for the positive end) delivers the real one."""

    how = "forge"

    def _relay(self, party, m):
        if m.msg.type is MsgType.DECISION and party == "b" and m.msg.round == 0 and self.how != "skip":
            if self.how == "forge":  # a decision telling b to withdraw both requests, not signed by the solver
                fake = Message(MsgType.DECISION, self.s.id, 0, -1, "", "solver", 10**6, self.cfg.digest,
                               {"party": "b", "records": m.msg.body["records"]}, (bytes(m.msg.frames[0]), bytes(64)))
                super()._relay(party, _inbound(fake))
            elif self.how == "swap":  # another party's genuine decision
                super()._relay(party, _inbound(self.decisions["a"]))
            elif self.how == "reseal":  # a box of its own sealed to b (b's key is public): b's share 1/1024, signed
                # by nobody; the solver's genuine signature covers the genuine box only
                from secure_collab.protection import sealing, statements
                from secure_collab.protocol import tags as wire

                n = self.s.max_edits_per_party
                did = m.msg.body["records"][0][0]
                plain = wire.encode_verdicts([(0, "keep", "conflict", did, 1024), (1, "keep", "", "", 1)], n,
                                             bytes(wire.verdicts_plain_size(n)))
                box = sealing.seal_to(self.cfg.roster.parties["b"].sealing, plain, wire.DECISION_INFO,
                                      statements.seal_ad(self.s.id, self.cfg.digest, 0, "b"), bytes(range(32)))
                fake = Message(MsgType.DECISION, self.s.id, 0, -1, "", "solver", 10**6, self.cfg.digest,
                               {"party": "b", "records": m.msg.body["records"]}, (box, bytes(m.msg.frames[1])))
                super()._relay(party, _inbound(fake))
            elif self.how == "records":  # the genuine box under public records the solver did not sign
                fake = Message(MsgType.DECISION, self.s.id, 0, -1, "", "solver", 10**6, self.cfg.digest,
                               {"party": "b", "records": [*m.msg.body["records"], ["ab" * 32, "duplicate"]]},
                               tuple(m.msg.frames))
                super()._relay(party, _inbound(fake))
        if m.msg.type is MsgType.DECISION:
            self.decisions[party] = m.msg
        if self.how == "skip" and party == "b" and m.msg.type is MsgType.DECISION and m.msg.round == 0:
            return  # b never hears its decision: it must refuse to send statistics
        super()._relay(party, m)

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.decisions = {}


def _inbound(msg):
    from coordinator.handlers import Inbound

    frames = msg.to_frames()
    return Inbound(msg, "solver", b"", [bytes(f) for f in frames], 0, "")


@pytest.mark.parametrize("how", ["forge", "swap", "records", "reseal"])
def test_a_coordinator_lying_about_collisions_is_caught_by_the_party(tmp_path, how):
    cfg = _config(tmp_path)
    Lying.how = how
    coordinator = Lying(cfg, get_scheme("plain"))
    run = run_fact_session(cfg, FACTS, coordinator=coordinator)
    _check_released(run, cfg)  # the lie changed nothing: b followed the solver's real decision only
    b = run.parties["b"]
    assert any(r.startswith("decision:") for r in b.refusals), b.refusals
    assert [(v[1], v[4]) for v in b.decisions[0]] == [("keep", 2), ("keep", 1)]
    assert run.engines["b"].verdicts[0] == b.decisions[0]  # the engine heard the genuine verdicts only


def test_a_party_without_its_signed_decision_sends_no_statistics(tmp_path):
    cfg = _config(tmp_path, network={"stage_timeout_s": 3.0, "join_timeout_s": 10.0})
    Lying.how = "skip"
    run = run_fact_session(cfg, FACTS, coordinator=Lying(cfg, get_scheme("plain")))
    b = run.parties["b"]
    assert 0 not in b.decisions and run.engines["b"].compute_calls == []
    assert run.outcome.ok and run.outcome.included[(0, (1,))] == ("a", "c")  # b was left out, not misled
    with sqlite3.connect(cfg.paths.ledger) as db:
        reasons = [r for (r,) in db.execute("SELECT reason FROM messages WHERE peer = 'b' AND type = 'error'")]
    assert any("before the solver's signed decision" in r for r in reasons), reasons


def test_solver_killed_between_rounds_keeps_its_tag_key_and_the_applied_facts(tmp_path):
    """Round 1's tags must match round 0's (same OPRF key from the sealed setup) and b's s2, applied by a in
    round 0, must still be found after the restart (the sealed 'facts' record)."""
    import json
    import signal
    import threading

    from network_doubles import FactEngine, Threads, solver_process
    from test_net_rounds import _released, _wait

    from parties import run_party

    cfg = _config(tmp_path, mode="shares")
    config_path = next(tmp_path.glob("config-*.toml"))
    gate = threading.Event()

    class Gated(FactEngine):
        def tag_inputs(self, round_):
            if round_ == 1:
                assert gate.wait(60)
            return super().tag_inputs(round_)

    engines = {n: (Gated if n == "c" else FactEngine)(n, cfg, f) for n, f in FACTS.items()}
    scheme = get_scheme("shares")
    th = Threads()
    th.start("coordinator", Watching(cfg, scheme).run)
    for n, e in engines.items():
        th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta, tagger=e))
    first = solver_process(config_path)
    _wait(lambda: _released(cfg.paths.ledger) == {(0, 1), (0, 2)})
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    second = solver_process(config_path)
    gate.set()
    th.join(60)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    result = json.loads(out)
    assert th.results["coordinator"].ok, th.results["coordinator"].reason
    assert th.results["coordinator"].included[(1, (1,))] == ("a", "b", "c")
    assert [v[1:3] for v in th.results["b"].decisions[1]] == [("keep", "duplicate")]  # found again after the restart
    ref = fact_reference(cfg, KEPT)
    for lay in (1, 2):
        np.testing.assert_allclose(np.array(result["releases"][f"1/{lay}"]), ref[(1, lay)], rtol=1e-9, atol=1e-12)


def test_a_party_contributing_other_than_its_decisions_allow_gets_no_release(tmp_path):
    """b asks for tags of two requests but contributes three edits (it could have tested a third fact against
    the others' tags for free): the opened edit count does not match the decisions, nothing is released."""
    from network_doubles import FactEngine

    class Padding(FactEngine):
        def compute_statistics(self, round_, layer):
            out = super().compute_statistics(round_, layer)
            return {**out, "N": out["N"] + 1}

    cfg = _config(tmp_path, rounds=1)
    run = run_fact_session(cfg, {n: {0: f[0]} for n, f in FACTS.items()}, engine={"b": Padding})
    assert not run.outcome.ok and "their tags and the round's decisions allow" in run.outcome.reason
    assert run.solver.releases == {}
