"""The engine behind the roles: the solver's dynamic covariance over rounds, and a party's statistics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from parties.engine import PartyEditor
from secure_collab.editing.rules import UpdateRule
from secure_collab.editing.solve import solve_update
from solver.solve import SessionSolve


def _session(tmp_path, **kw):
    base = dict(model="tiny-llama", layers=(1, 2), variant="sequential", template_seed=0, rounds=2, d_k=96,
                update_rule="memit-static", known_residual=0.0, dedupe=False, augment=2, defence="none",
                release="weights", served=False, repair_round=None, backend="memit", hypernet_digest="",
                d_v=64, hparams={"mom2_tokens": 600, "v_num_grad_steps": 3, "n_templates": 1,
                                 "template_length": 3})
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("rule", ["memit-static", "memit-dynamic", "alphaedit"])
def test_solver_applies_the_session_rule_to_the_past_it_is_given(tmp_path, monkeypatch, rule):
    """The solver's math is stateless: the cross-round ΣG comes from the solver's sealed store (tested over the
    network in test_net_rounds.py), and each rule reads it as its formula says."""
    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path))
    solve = SessionSolve(_session(tmp_path, update_rule=rule))
    rng = np.random.default_rng(0)
    k0, k1 = rng.normal(size=(3, 96)), rng.normal(size=(2, 96))
    g0, g1 = k0.T @ k0, k1.T @ k1
    b1 = rng.normal(size=(64, 96))
    hp = solve.hp
    assert hp.update_rule == rule
    t = torch.from_numpy
    d1 = solve(1, 1, g1, b1, g0)
    if rule == "memit-static":
        want = solve_update(t(b1), t(g1), solve.covs[1], hp.mom2_update_weight).numpy()
    elif rule == "memit-dynamic":
        want = solve_update(t(b1), t(g1), solve.covs[1], hp.mom2_update_weight, past_g=t(g0),
                            lam_past=hp.rule.past_weight).numpy()
    else:
        want = UpdateRule("alphaedit", nullspace_threshold=hp.nullspace_threshold, l2=hp.alphaedit_l2).solve(
            t(b1), t(g1), solve.covs[1], past_g=t(g0)).numpy()
    np.testing.assert_allclose(d1, want, rtol=1e-12, atol=1e-14)
    without_past = solve(1, 1, g1, b1, None)
    assert np.allclose(d1, without_past) == (rule == "memit-static")


def test_party_splits_rounds_and_tracks_applied_updates(tmp_path, capitals):
    editor = PartyEditor(_session(tmp_path), capitals[:3], cache=tmp_path, log=lambda _m: None)
    assert [len(r) for r in editor.rounds] == [2, 1]
    stats = editor.compute_statistics(0, 1)
    assert stats["G"].shape == (96, 96) and stats["B"].shape == (64, 96)
    np.testing.assert_allclose(stats["G"], stats["G"].T)
    delta = np.full((64, 96), 1e-3)
    for layer in (1, 2):
        editor.apply_delta(layer, delta)
    editor.apply_delta(1, 2 * delta)
    assert sorted(editor.applied) == [(0, 1), (0, 2), (1, 1)]
    report = editor.finish(patch=tmp_path / "patch.safetensors")
    assert report["edits"] == 3 and (tmp_path / "patch.safetensors").is_file()


def test_party_withholds_known_requests_and_follows_the_solvers_verdicts(tmp_path, capitals):
    from secure_collab.overlap import fact_inputs

    session = _session(tmp_path, rounds=1, known_residual=0.0, dedupe=True, augment=2)
    reqs = [capitals[0], capitals[1], capitals[0], capitals[2]]  # a repeat of request 0
    editor = PartyEditor(session, reqs, cache=tmp_path, log=lambda _m: None)
    assert editor.tag_inputs(0) == [fact_inputs(r) for r in (capitals[0], capitals[1], capitals[2])]
    assert editor.withheld[0] == [capitals[0].case_id]
    editor.decided(0, [(0, "augment", "conflict", "ab" * 32, 1), (1, "withdraw", "conflict", "cd" * 32, 1),
                       (2, "keep", "duplicate", "ef" * 32, 2)])
    plan = editor.plan[0]
    assert [r.subject for r in plan] == ["France", "Italy", "France", "France"]  # kept, then two augmented
    assert all(r.target_new == capitals[0].target_new and r.prompt != capitals[0].prompt for r in plan[2:])
    assert editor.targets[0].z.shape[0] == 4
    stats = editor.compute_statistics(0, 1)
    assert stats["N"] == 4 and editor.weights[0].tolist() == [1.0, 0.5, 1.0, 1.0]
    # the shared duplicate (Italy, held by 2) enters at 1/2: G = Σ w k kᵀ, B = Σ w r kᵀ
    from secure_collab.editing.memit import party_layer_stats

    z = editor.targets[0].z
    whole = party_layer_stats(editor.lm, plan, z, 1, editor.hp, editor.templates)
    italy = party_layer_stats(editor.lm, plan[1:2], z[1:2], 1, editor.hp, editor.templates)
    for got, full, one in ((stats["G"], whole.g, italy.g), (stats["B"], whole.b, italy.b)):
        want = (full - 0.5 * one).numpy()
        assert abs(got - want).max() <= 1e-9 * abs(want).max()
    # a request whose residual is (near) zero is withheld: the model already gives it
    known = _session(tmp_path, rounds=1, known_residual=1e9)
    assert PartyEditor(known, capitals[:2], cache=tmp_path, log=lambda _m: None).tag_inputs(0) == []


def test_party_targets_are_cached_across_sessions(tmp_path, capitals, monkeypatch):
    """A second session of the same party on the same model (another protection mode, a run after a failure)
    reads z* from the target cache: the optimisation does not run again and the statistics are identical."""
    import secure_collab.editing.target_cache as target_cache

    first = PartyEditor(_session(tmp_path), capitals[:3], cache=tmp_path, log=lambda _m: None)
    want = first.compute_statistics(0, 1)
    assert len(list((tmp_path / "targets").rglob("*.safetensors"))) == 2  # round 0's two requests

    def refuse(*_a, **_k):
        raise AssertionError("targets optimised again despite the cache")

    monkeypatch.setattr(target_cache, "compute_targets", refuse)
    second = PartyEditor(_session(tmp_path), capitals[:3], cache=tmp_path, log=lambda _m: None)
    got = second.compute_statistics(0, 1)
    np.testing.assert_array_equal(got["G"], want["G"])
    np.testing.assert_array_equal(got["B"], want["B"])
    # without the cache the party optimises in memory (and the refusing stub is not reached)
    third = PartyEditor(_session(tmp_path), capitals[:3], cache=tmp_path, log=lambda _m: None, target_cache=False)
    np.testing.assert_allclose(third.compute_statistics(0, 1)["B"], want["B"], rtol=1e-12, atol=0)


def test_noise_reaches_an_empty_round_and_repeats_for_a_retried_step(tmp_path, capitals):
    """With noise:Z a party with nothing to edit in a round still sends its noise (the calibration counts on it): a
    symmetric G and a B on the plan's grid, of about the plan's σ; the same (round, layer) computed again gets the
    same noise, never a second draw."""
    import random

    from secure_collab.editing.defences import parse_defence
    from secure_collab.editing.noise import session_noise_plan

    session = _session(tmp_path, defence="noise:1", mode="shares", value_bound=1e5, protection={},
                       key_norm_bound=8.0, residual_norm_bound=4.0, min_parties=2, max_edits_per_party=10)
    editor = PartyEditor(session, capitals[:1], cache=tmp_path, log=lambda _m: None, rounds=[capitals[:1], []],
                         defence_rng=random.Random(3))
    plan = session_noise_plan(parse_defence("noise:1"), session)
    empty = editor.compute_statistics(1, 2)
    g, b = empty["G"], empty["B"]
    assert empty["N"] == 0 and np.array_equal(g, g.T) and np.count_nonzero(b) > 0.99 * b.size
    assert all(np.array_equal(np.rint(x / plan.grid) * plan.grid, x) for x in (g, b))  # on the grid
    assert 0.9 < float(np.std(b)) / plan.sigma < 1.1
    again = editor.compute_statistics(1, 2)
    assert np.array_equal(again["G"], g) and np.array_equal(again["B"], b)
    busy = editor.compute_statistics(0, 1)
    assert busy["N"] == 1 and np.array_equal(busy["G"], busy["G"].T)


def test_the_solver_solves_a_noised_sum_with_its_psd_part(tmp_path, monkeypatch):
    from secure_collab.editing.noise import psd_part

    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path))
    solve = SessionSolve(_session(tmp_path, defence="noise:1"))
    rng = np.random.default_rng(1)
    a = rng.normal(size=(96, 96)) * 50
    g, b = a + a.T, rng.normal(size=(64, 96))  # indefinite, as a noised ΣG is
    t = torch.from_numpy
    want = solve_update(t(b), psd_part(t(g)), solve.covs[1], solve.hp.mom2_update_weight).numpy()
    np.testing.assert_allclose(solve(0, 1, g, b), want, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="not positive definite"):
        SessionSolve(_session(tmp_path))(0, 1, g, b)  # without the post-processing there is no Cholesky factor
