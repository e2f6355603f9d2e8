"""The target cache: a hit returns exactly what was optimised, keys follow the model, request and hyper-parameters."""

from __future__ import annotations

import pytest
import torch

from secure_collab.editing.hparams import DEFAULTS
from secure_collab.editing.memit import restore, snapshot
from secure_collab.editing.target_cache import cached_targets, target_key, weights_digest
from secure_collab.editing.targets import compute_targets
from secure_collab.models.specs import add_to_down_weight, down_weight

TEMPLATES = ["{}", "Some text. {}"]


def _files(root):
    return sorted((root / "targets").rglob("*.safetensors"))


def test_cache_hit_equals_fresh_optimisation(tiny, capitals, tmp_path):
    hp = DEFAULTS[tiny.name].with_(v_num_grad_steps=4, request_batch=1)
    first = cached_targets(tiny, capitals[:3], hp, TEMPLATES, cache=tmp_path)
    assert len(_files(tmp_path)) == 3
    stamps = [f.stat().st_mtime_ns for f in _files(tmp_path)]
    again = cached_targets(tiny, [capitals[2], capitals[0], capitals[2]], hp, TEMPLATES, cache=tmp_path)
    assert [f.stat().st_mtime_ns for f in _files(tmp_path)] == stamps  # nothing recomputed
    assert torch.equal(again.z, first.z[[2, 0, 2]]) and torch.equal(again.z_init, first.z_init[[2, 0, 2]])
    assert again.steps == [first.steps[i] for i in (2, 0, 2)]
    fresh = compute_targets(tiny, capitals[:3], hp, TEMPLATES)
    assert torch.equal(fresh.z, first.z)


def test_key_depends_on_what_z_depends_on(tiny, capitals):
    hp = DEFAULTS[tiny.name]
    d = weights_digest(tiny)
    base = target_key(d, capitals[0], hp, TEMPLATES)
    assert target_key(d, capitals[0], hp.with_(mom2_update_weight=5.0, request_batch=3), TEMPLATES) == base
    assert target_key(d, capitals[0], hp.with_(kl_factor=0.1), TEMPLATES) != base
    assert target_key(d, capitals[0], hp.with_(layers=(1, 3)), TEMPLATES) != base
    assert target_key(d, capitals[0], hp, TEMPLATES[:1]) != base
    assert target_key(d, capitals[1], hp, TEMPLATES) != base


def test_an_edited_model_gets_new_keys(tiny, capitals, tmp_path):
    hp = DEFAULTS[tiny.name].with_(v_num_grad_steps=2)
    before = weights_digest(tiny)
    saved = snapshot(tiny, (1,))
    try:
        w = down_weight(tiny.model, tiny.spec, 1)
        add_to_down_weight(tiny.model, tiny.spec, 1, torch.full_like(w, 1e-3, dtype=torch.float64))
        assert weights_digest(tiny) != before
        cached_targets(tiny, capitals[:1], hp, TEMPLATES, cache=tmp_path)
    finally:
        restore(tiny, saved)
    assert weights_digest(tiny) == before
    cached_targets(tiny, capitals[:1], hp, TEMPLATES, cache=tmp_path)
    assert len(_files(tmp_path)) == 2


def test_a_foreign_file_is_ignored_and_replaced(tiny, capitals, tmp_path):
    hp = DEFAULTS[tiny.name].with_(v_num_grad_steps=2)
    first = cached_targets(tiny, capitals[:1], hp, TEMPLATES, cache=tmp_path)
    (path,) = _files(tmp_path)
    path.write_bytes(b"not a tensor file")
    again = cached_targets(tiny, capitals[:1], hp, TEMPLATES, cache=tmp_path)
    assert torch.equal(again.z, first.z)


def test_z_reach_by_hand(tiny, capitals):
    """z_reach is the fraction of the way to z* the state has moved along z* − h₀: known for constructed h₀, z*."""
    from secure_collab.editing.keys import block_outputs
    from secure_collab.editing.targets import TargetResult
    from secure_collab.experiments.merge import z_reach

    hp = DEFAULTS[tiny.name]
    reqs = capitals[:3]
    h = block_outputs(tiny, reqs, hp.layers[-1]).double()  # the state now
    d = torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    side = torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    side -= (side * d).sum(1, keepdim=True) / d.pow(2).sum(1, keepdim=True) * d  # orthogonal to d, per row

    def reach(z_init, z):
        return z_reach(tiny, reqs, TargetResult(z=z, z_init=z_init, loss=[0.0] * 3, nll=[0.0] * 3, steps=[0] * 3), hp)

    assert abs(reach(h - d, h + d) - 0.5) < 1e-9  # moved d of the way 2d
    assert abs(reach(h - d, h - 0.5 * d) - 2.0) < 1e-9  # moved d of the way d/2: twice past z*
    assert abs(reach(h - side, h - side + d)) < 1e-9  # moved only across the direction to z*


def test_stored_targets_are_private_whatever_the_umask(tiny, capitals, tmp_path):
    """z* follows from the request it edits (a party's private data): 0600 files in 0700 directories."""
    import os
    import stat

    hp = DEFAULTS[tiny.name].with_(v_num_grad_steps=2, request_batch=1)
    old = os.umask(0o022)
    try:
        cached_targets(tiny, capitals[:2], hp, TEMPLATES, cache=tmp_path)
    finally:
        os.umask(old)
    stored = list((tmp_path / "targets").rglob("*.safetensors"))
    assert len(stored) == 2
    assert {stat.S_IMODE(f.stat().st_mode) for f in stored} == {0o600}
    assert {stat.S_IMODE(f.parent.stat().st_mode) for f in stored} == {0o700}
    assert stat.S_IMODE((tmp_path / "targets").stat().st_mode) == 0o700


def test_round_zero_of_a_multi_round_run_is_the_one_shot_entry(tiny, capitals, tmp_path, monkeypatch):
    """The rounds and the one-shot edit share one cache: round 0's z* (written while a multi-round run edits the
    model) is what a plain call on the unedited model reads back; round 1's is keyed by the model round 0 left."""
    from secure_collab.editing import target_cache
    from secure_collab.editing.rounds import run_rounds
    from tests.conftest import random_spd

    hp = DEFAULTS[tiny.name].with_(v_num_grad_steps=2, request_batch=1)
    dk = down_weight(tiny.model, tiny.spec, 0).shape[1]
    covs = {layer: random_spd(dk, layer) for layer in hp.layers}

    def targets(lm, reqs, hp_, tpl):
        return cached_targets(lm, reqs, hp_, tpl, cache=tmp_path)

    saved = snapshot(tiny, hp.layers)
    try:
        res = run_rounds(tiny, [[[capitals[0]]], [[capitals[1]]]], hp, covs, TEMPLATES, targets=targets)
    finally:
        restore(tiny, saved)
    assert len(_files(tmp_path)) == 2

    def refuse(*_a, **_k):
        raise AssertionError("round 0's targets optimised again")

    monkeypatch.setattr(target_cache, "compute_targets", refuse)
    plain = cached_targets(tiny, capitals[:1], hp, TEMPLATES, cache=tmp_path)
    assert torch.equal(plain.z, res[0].targets[0].z) and plain.steps == res[0].targets[0].steps
    with pytest.raises(AssertionError, match="optimised again"):  # round 1's entry is not the unedited model's
        cached_targets(tiny, capitals[1:2], hp, TEMPLATES, cache=tmp_path)


def test_one_target_cache():
    """One definition of the target cache and of TargetResult's take/concat across every package."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    defs: dict[str, list[str]] = {}
    for pkg in ("secure_collab", "parties", "coordinator", "solver", "attacks", "benchmarks"):
        for path in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    defs.setdefault(node.name, []).append(str(path.relative_to(root)))
    assert defs["cached_targets"] == ["secure_collab/editing/target_cache.py"]
    assert defs["concat"] == ["secure_collab/editing/targets.py"]
    assert "_take" not in defs and "secure_collab/editing/targets.py" in defs["take"]


def test_threads_storing_the_same_entry_at_once_do_not_trip_over_one_temporary_file(tiny, capitals, tmp_path):
    """Two parties of one process (the network tests run them as threads) may optimise the same request and store
    it together: each writer has its own temporary file (files.temp_beside), so neither moves the other's away."""
    import threading

    from secure_collab.editing.target_cache import _store

    hp = DEFAULTS[tiny.name].with_(v_num_grad_steps=2, request_batch=1)
    t = compute_targets(tiny, capitals[:1], hp, TEMPLATES)
    errors: list[BaseException] = []
    for _ in range(10):
        gate = threading.Barrier(6)

        def store(gate: threading.Barrier = gate) -> None:
            try:
                gate.wait()
                _store(tmp_path / "targets", "k" * 64, t, {})
            except BaseException as exc:  # noqa: BLE001 - the test reports any failure of a writer
                errors.append(exc)

        threads = [threading.Thread(target=store) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors, errors
    assert len(_files(tmp_path)) == 1 and not list((tmp_path / "targets").rglob("*.tmp*"))
