"""The engine behind the roles: the solver's dynamic covariance over rounds, and a party's statistics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from coordinator.engine import SessionSolve
from parties.engine import PartyEditor
from secure_collab.editing.solve import solve_update


def _session(tmp_path, **kw):
    base = dict(model="tiny-llama", layers=(1, 2), variant="sequential", template_seed=0, rounds=2, d_k=96,
                d_v=64, hparams={"mom2_tokens": 600, "v_num_grad_steps": 3, "n_templates": 1,
                                 "template_length": 3})
    return SimpleNamespace(**{**base, **kw})


def test_solver_adds_earlier_rounds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path))
    solve = SessionSolve(_session(tmp_path))
    rng = np.random.default_rng(0)
    k0, k1 = rng.normal(size=(3, 96)), rng.normal(size=(2, 96))
    g0, g1 = k0.T @ k0, k1.T @ k1
    b0, b1 = rng.normal(size=(64, 96)), rng.normal(size=(64, 96))
    cov, lam = solve.covs[1], solve.hp.mom2_update_weight
    d0 = solve(0, 1, g0, b0)
    np.testing.assert_allclose(d0, solve_update(torch.from_numpy(b0), torch.from_numpy(g0), cov, lam).numpy())
    d1 = solve(1, 1, g1, b1)
    want = solve_update(torch.from_numpy(b1), torch.from_numpy(g1), cov, lam, past_g=torch.from_numpy(g0),
                        lam_past=solve.hp.mom2_past_weight).numpy()
    np.testing.assert_allclose(d1, want)
    assert not np.allclose(d1, solve_update(torch.from_numpy(b1), torch.from_numpy(g1), cov, lam).numpy())
    # a step solved again after a coordinator restart is not counted twice
    np.testing.assert_allclose(solve(1, 1, g1, b1), want)
    # another layer has its own history
    np.testing.assert_allclose(solve(1, 2, g1, b1), solve_update(
        torch.from_numpy(b1), torch.from_numpy(g1), solve.covs[2], lam).numpy())


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
