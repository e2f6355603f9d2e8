"""A coordinator running modified code, against the real solver in its own process.

Each double changes what the coordinator hands to the solver: a made-up party, a listed party left out of
the sum, a swapped contribution, a shifted sum, a re-collected opened step. The solver refuses each at the
first attempt, naming the party or the check, and releases nothing computed from the altered sum. The
positive control runs the same harness with the honest coordinator: it releases ΔW equal to the reference.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from network_doubles import make_config, reference_deltas, run_with_solver_process

from coordinator.server import Coordinator
from coordinator.stages import Step
from secure_collab.ledger import Ledger
from secure_collab.protection import Payload, get_scheme
from secure_collab.protection.sealing import SEED_INFO, seal_to


class Recording(Coordinator):
    """The honest coordinator, keeping a copy of every party payload it accepted (the cheats build on it)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.payloads: dict[tuple, Payload] = {}

    def _on_contrib(self, m):
        # kept before the honest handler runs: the last party's chunk completes a sum, which is handed off (streamed)
        # inside it, and the cheats below rebuild that sum from the kept payloads
        b = m.msg.body
        key = (m.name, m.msg.layer, m.msg.stat, b["chunk"], b["attempt"])
        self.payloads.setdefault(key, Payload(dict(b["payload"]), tuple(m.msg.frames)))
        super()._on_contrib(m)

    def rebuild(self, step, key, parties, *, data_from=None):
        """An aggregate over ``parties``'s payloads for ``key``; ``data_from`` maps a party to the payload
        whose data frames replace its own (its seal and signature stay)."""
        n_values = self.payloads[(parties[0], *key, step.attempt)].header["n_values"]
        acc = self.scheme.accumulator(self.public, n_values, step.context(self.s, key))
        for p in parties:
            own = self.payloads[(p, *key, step.attempt)]
            other = (data_from or {}).get(p)
            acc.add(own if other is None else Payload(own.header, other.frames[:-2] + own.frames[-2:]), party=p)
        return acc.aggregate()


class Fabricating(Recording):
    """Lists a party the honest parties never heard from, with a seed the coordinator sealed itself."""

    fake = "mallory"

    def _aggregate(self, step, key):
        agg = super()._aggregate(step, key)
        ctx = step.context(self.s, key, self.fake)
        solver_key = bytes.fromhex(self.scheme._public(self.public).meta["solver_x25519"])
        sealed = seal_to(solver_key, bytes(32), SEED_INFO, ctx.label(), bytes(range(32)))
        return Payload({**agg.header, "parties": [*agg.header["parties"], self.fake]},
                       (*agg.frames, sealed, bytes(64)))


class FabricatingRosterParty(Fabricating):
    fake = "c"  # in the roster, but not taking part


class LeavingOut(Recording):
    """Lists c, with c's genuine seal and signature, but leaves c's data out of the sum."""

    def _aggregate(self, step, key):
        super()._aggregate(step, key)
        two = self.rebuild(step, key, ["a", "b"])  # extras in list order: a's, b's, then c's
        c_extras = self.payloads[("c", *key, step.attempt)].frames[-2:]
        return Payload({**two.header, "parties": ["a", "b", "c"]}, (*two.frames, *c_extras))


class Swapping(Recording):
    """Puts c's data of the previous G chunk (same length; what a streaming coordinator has when it hands this one
    off) under c's seal and signature for this chunk."""

    def _aggregate(self, step, key):
        layer, stat, chunk = key
        if stat != "G" or chunk == 0:
            return super()._aggregate(step, key)
        other = (layer, stat, chunk - 1)
        return self.rebuild(step, key, ["a", "b", "c"], data_from={"c": self.payloads[("c", *other, step.attempt)]})


class Shifting(Recording):
    """Adds 1 (one fixed-point step) to the first value of every sum."""

    def _aggregate(self, step, key):
        agg = super()._aggregate(step, key)
        first = np.frombuffer(agg.frames[0], dtype=np.uint64).copy()
        np.add(first[:1], np.uint64(1), out=first[:1])
        return Payload(agg.header, (first.tobytes(), *agg.frames[1:]))


class Recollecting(Recording):
    """After layer 1 is released over {a, b, c}, collects layer 1 again from {a, b} and hands it off."""

    again = False

    def _run_step(self, round_, layers, attempt):
        ok = super()._run_step(round_, layers, attempt)
        if ok and layers == (1,) and not self.again:
            self.again = True
            self.active = {"a", "b"}
            return super()._run_step(round_, layers, attempt + 1)
        return ok


class Replaying(Recording):
    """After layer 1 is released over {a, b, c} at attempt 0, hands the solver layer 1 again, summed from the
    payloads a and b signed and sealed for exactly that step and attempt (no party is asked: their own refusal
    of a released step plays no part). Opened, that sum would give ΣG_abc − ΣG_ab = c's own K Kᵀ."""

    replay: Step | None = None

    def _run_step(self, round_, layers, attempt):
        ok = super()._run_step(round_, layers, attempt)
        if ok and layers == (1,) and self.replay is None:
            first = self.step
            self.step = self.replay = Step(round_, layers, first.attempt, frozenset({"a", "b"}))
            self.replay.accs = dict(first.accs)  # its keys only: _aggregate below rebuilds each sum over {a, b}
            self._solve(self.replay, [])
            deadline = self.clock() + self.cfg.network.solve_timeout_s
            while not self.replay.refused and self.clock() < deadline and self._pump(deadline):
                pass  # the solver's verdict on the replay, after the release it sent again
            self.step = first
        return ok

    def _aggregate(self, step, key):
        if step is self.replay:
            return self.rebuild(step, key, ["a", "b"])
        return super()._aggregate(step, key)


def _run(tmp_path, coordinator_cls, honest=("a", "b", "c"), **session):
    cfg = make_config(tmp_path, **session)
    coordinator = coordinator_cls(cfg, get_scheme(cfg.session.mode))
    run = run_with_solver_process(cfg, next(tmp_path.glob("config-*.toml")), coordinator, honest)
    return cfg, run.outcome, run.solver, run.parties


@pytest.mark.parametrize("mode", ["plain", "shares"])
def test_positive_control_honest_coordinator_releases(tmp_path, mode):
    cfg, outcome, solver, parties = _run(tmp_path, Recording, mode=mode)
    assert outcome.ok and solver["ok"] and solver["verdicts"] == []
    ref = reference_deltas(cfg, ["a", "b", "c"])
    assert set(solver["releases"]) == {f"{r}/{lay}" for r, lay in ref}
    for (r, lay), delta in ref.items():
        np.testing.assert_allclose(np.array(solver["releases"][f"{r}/{lay}"]), delta, rtol=1e-9, atol=1e-9)
    for name, result in parties.items():
        assert result.ok and set(result.applied) == set(ref), name


CHEATS = [
    ("shares", Fabricating, ("a", "b"), False, r"do not authenticate .*: mallory", ["mallory"]),
    ("shares", FabricatingRosterParty, ("a", "b"), False, r"do not authenticate .*: c", ["c"]),
    # shares: c's mask is added back without its masked data (the range check fires before the MAC; the
    # refusal text is the same for both, so it answers no question about the sum)
    ("shares", LeavingOut, ("a", "b", "c"), True, "integrity check failed", []),
    ("shares", Swapping, ("a", "b", "c"), True, "integrity check failed", []),
    ("shares", Shifting, ("a", "b", "c"), True, "integrity check failed", []),
    # plain: nothing is masked, so only the MAC (with the missing pad of c) tells
    ("plain", LeavingOut, ("a", "b", "c"), True, "integrity check failed", []),
    ("plain", Shifting, ("a", "b", "c"), True, "integrity check failed", []),
]


@pytest.mark.parametrize(("mode", "cheat", "honest", "opened", "reason", "exclude"), CHEATS,
                         ids=[f"{c[0]}-{c[1].__name__}" for c in CHEATS])
def test_cheating_coordinator_is_refused_at_the_first_attempt(tmp_path, mode, cheat, honest, opened, reason,
                                                              exclude):
    # do not wait long for the absent party, but long enough for the solver process to start on a loaded machine
    short_join = {"join_timeout_s": 5.0} if len(honest) < 3 else {}
    cfg, outcome, solver, parties = _run(tmp_path, cheat, honest, mode=mode, network=short_join)
    first = solver["verdicts"][0]
    assert first["attempt"] == 0 and first["layers"] == [1]
    assert first["opened"] is opened and first["exclude"] == exclude
    assert re.search(reason, first["reason"]), first["reason"]
    assert solver["releases"] == {} and solver["solve_calls"] == []  # nothing released, nothing solved
    assert not outcome.ok and "solver refused" in outcome.reason
    for result in parties.values():  # every party heard why, and applied nothing
        assert not result.ok and result.applied == {} and "solver refused" in result.reason


def test_recollecting_an_opened_step_is_refused_and_nothing_new_is_released(tmp_path):
    """The honest parties refuse to contribute to a released step, so the second collection never reaches
    the solver (the solver's own refusal of a second opening is tested on direct hand-offs in
    test_redteam_solver_state.py)."""
    cfg, outcome, solver, parties = _run(tmp_path, Recollecting, mode="shares", network={"stage_timeout_s": 3.0})
    assert solver["solve_calls"].count([0, 1]) == 1  # layer 1 was opened and solved once only
    ref = reference_deltas(cfg, ["a", "b", "c"])
    np.testing.assert_allclose(np.array(solver["releases"]["0/1"]), ref[(0, 1)], rtol=1e-9, atol=1e-9)
    assert not outcome.ok and "0 complete contributions" in outcome.reason
    with Ledger(cfg.paths.ledger) as ledger:
        refusals = [r for r in ledger.rows("messages") if r["type"] == "error" and r["direction"] == "in"]
    assert {r["peer"] for r in refusals if "already released" in r["reason"]} == {"a", "b"}


def test_solver_itself_refuses_to_open_a_step_again_whatever_the_parties_do(tmp_path):
    """The solver's own once-only opening, observed at the solver: the coordinator replays layer 1's attempt-0
    contributions of a and b, which authenticate (signed, sealed and MACed for that very step). The solver
    solves layer 1 once, answers the replay with a VERDICT (opened, "never opened twice") and with the release
    it already made, and the session goes on. Fails with the in-memory check and the on-disk claim removed."""
    cfg = make_config(tmp_path, mode="shares", network={"solve_timeout_s": 5.0})
    coordinator = Replaying(cfg, get_scheme("shares"))
    run = run_with_solver_process(cfg, next(tmp_path.glob("config-*.toml")), coordinator)
    solver = run.solver
    assert solver["solve_calls"] == [[0, 1], [0, 2]], solver["solve_calls"]  # layer 1 solved once, not twice
    verdict = solver["verdicts"][0]
    assert len(solver["verdicts"]) == 1 and verdict["attempt"] == 0 and verdict["layers"] == [1]
    assert verdict["opened"] is True and verdict["exclude"] == [] and "never opened twice" in verdict["reason"]
    assert "never opened twice" in coordinator.replay.refused  # what the coordinator was told
    assert coordinator.replay.released  # the stored release, sent again: nothing new was computed
    ref = reference_deltas(cfg, ["a", "b", "c"])
    for (r, lay), delta in ref.items():
        np.testing.assert_allclose(np.array(solver["releases"][f"{r}/{lay}"]), delta, rtol=1e-9, atol=1e-9)
    assert run.outcome.ok, run.outcome.reason
