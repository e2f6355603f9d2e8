"""MALMEN against the independent reference (tests/editing/reference_malmen.py), float64, ≤ 1e-12; collab over
1-3 parties equals global; the frozen normaliser and the digest; the edit count and the plausibility bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secure_collab.editing.malmen.edit import (
    edit_norms,
    layer_shapes,
    party_statistics,
    run_malmen_edit,
    solve_shift,
    statistics_from_rows,
    value_diffs,
)
from secure_collab.editing.malmen.hparams import DEFAULTS
from secure_collab.editing.malmen.net import Hypernet
from secure_collab.editing.malmen.rows import edit_rows
from secure_collab.editing.memit import restore, snapshot, split_parties
from secure_collab.models.specs import down_weight
from secure_collab.protocol.plausibility import Bounds, plausibility_problems
from tests.editing import reference_malmen as ref

TOL = 1e-12


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def make_hypernet(lm, requests, seed: int = 1) -> Hypernet:
    """A fitted hypernet with every parameter moved off its identity start (so each equation is exercised); ridges
    e^2, e^1.5 keep UᵀU + e^λ I conditioned well enough (≈1e3) that Cholesky and LU agree to 1e-12."""
    hp = DEFAULTS[lm.name]
    hypernet = Hypernet(hp, layer_shapes(lm, hp.layers)).double()
    rows = edit_rows(lm, requests, hp.layers)
    for net in hypernet.nets.values():
        net.normaliser.fit(torch.cat([torch.cat((rows.u[la], rows.g[la]), 1) for la in hp.layers]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hypernet.named_parameters():
            if name.endswith("lamda"):
                p.copy_(torch.tensor([2.0, 1.5], dtype=torch.float64)[: p.shape[0]])
            elif not name.endswith("lr"):
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return hypernet


@pytest.fixture(scope="module")
def setup(tiny, capitals):
    hypernet = make_hypernet(tiny, capitals[:4])
    edits = [(r.text, r.target_new) for r in capitals]
    want = ref.malmen(tiny.model, tiny.tokenizer, edits, hypernet.hp.layers, hypernet.state_dict(),
                      hypernet.hp.n_blocks)
    return tiny, capitals, hypernet, want


def test_statistics_equal_reference(setup):
    lm, reqs, hypernet, want = setup
    got = party_statistics(lm, hypernet, reqs)
    for layer, (utu, utd, _) in want.items():
        assert _rel(got[layer].g, utu) <= TOL
        assert _rel(got[layer].b, utd.T) <= TOL  # the project stores B = DᵀU


def test_shift_equals_reference(setup):
    lm, reqs, hypernet, want = setup
    got = party_statistics(lm, hypernet, reqs)
    for layer, (_, _, s) in want.items():
        assert _rel(solve_shift(got[layer], hypernet.ridge(layer)), s.T) <= TOL


@pytest.mark.parametrize("n_parties", [1, 2, 3])
def test_collab_equals_reference_and_global(setup, n_parties):
    lm, reqs, hypernet, want = setup
    saved = snapshot(lm, hypernet.hp.layers)
    try:
        glob = run_malmen_edit(lm, [reqs], hypernet, "global")
        restore(lm, saved)
        collab = run_malmen_edit(lm, split_parties(reqs, n_parties), hypernet, "collab")
        edited = {layer: down_weight(lm.model, lm.spec, layer).clone() for layer in hypernet.hp.layers}
    finally:
        restore(lm, saved)
    assert collab.edits == [len(p) for p in split_parties(reqs, n_parties)]
    for layer, (_, _, s) in want.items():
        assert _rel(collab.deltas[layer], glob.deltas[layer]) <= TOL
        assert _rel(collab.deltas[layer], s.T) <= TOL
        assert _rel(edited[layer] - saved[layer], s.T) <= TOL  # applied in the right orientation (Conv1D too)


def test_applied_weights_equal_reference(setup):
    lm, reqs, hypernet, want = setup
    saved = snapshot(lm, hypernet.hp.layers)
    try:
        run_malmen_edit(lm, [reqs], hypernet, "global")
        got = snapshot(lm, hypernet.hp.layers)
        restore(lm, saved)
        ref.apply_shifts(lm.model, {layer: s for layer, (_, _, s) in want.items()})
        expect = snapshot(lm, hypernet.hp.layers)
    finally:
        restore(lm, saved)
    for layer in hypernet.hp.layers:
        assert _rel(got[layer] - saved[layer], expect[layer] - saved[layer]) <= TOL


def test_rows_do_not_depend_on_the_batch(setup):
    lm, reqs, hypernet, _ = setup
    one = edit_rows(lm, reqs, hypernet.hp.layers, edit_batch=1)
    many = edit_rows(lm, reqs, hypernet.hp.layers, edit_batch=5)
    assert torch.equal(one.edit, many.edit)
    for layer in hypernet.hp.layers:
        assert _rel(many.u[layer], one.u[layer]) <= TOL and _rel(many.g[layer], one.g[layer]) <= TOL


def test_merges_run_and_differ_from_collab(setup):
    lm, reqs, hypernet, _ = setup
    saved = snapshot(lm, hypernet.hp.layers)
    try:
        collab = run_malmen_edit(lm, split_parties(reqs, 3), hypernet, "collab")
        restore(lm, saved)
        ta = run_malmen_edit(lm, split_parties(reqs, 3), hypernet, "ta")
    finally:
        restore(lm, saved)
    layer = hypernet.hp.layers[-1]
    assert _rel(ta.deltas[layer], collab.deltas[layer]) > 1e-3


def test_edit_count_and_plausibility_bounds(setup):
    """N counts edits; with κ, ρ bounding each edit's ‖U_e‖_F, ‖D_e‖_F the solver's checks pass, and they would
    refuse the same aggregate declared with fewer edits (the bound is not vacuous)."""
    lm, reqs, hypernet, _ = setup
    rows = edit_rows(lm, reqs, hypernet.hp.layers)
    stats = statistics_from_rows(hypernet, rows)
    d = value_diffs(hypernet, rows)
    assert rows.n_rows > rows.n_edits == len(reqs)
    for layer in hypernet.hp.layers:
        u_norm, d_norm = edit_norms(rows, d, layer)
        bounds = Bounds(key_norm=float(u_norm.max()), residual_norm=float(d_norm.max()), max_edits=len(reqs),
                        ridge=hypernet.ridge(layer))  # the solver's leverage check too
        g, b = stats[layer].g.numpy(), stats[layer].b.numpy()
        assert plausibility_problems(g, b, float(len(reqs)), 1, bounds) == []
        tight = Bounds(key_norm=float(u_norm.max()), residual_norm=float(d_norm.max()), max_edits=len(reqs))
        assert plausibility_problems(g, b, 1.0, 1, tight) != []


def test_weights_scale_each_edit(setup):
    lm, reqs, hypernet, _ = setup
    rows = edit_rows(lm, reqs[:3], hypernet.hp.layers)
    w = torch.tensor([1.0, 0.5, 1 / 3], dtype=torch.float64)
    weighted = statistics_from_rows(hypernet, rows, w)
    parts = [statistics_from_rows(hypernet, edit_rows(lm, [r], hypernet.hp.layers)) for r in reqs[:3]]
    layer = hypernet.hp.layers[0]
    want_g = sum(float(w[k]) * parts[k][layer].g for k in range(3))
    assert _rel(weighted[layer].g, want_g) <= TOL


def test_normaliser_is_frozen_and_in_the_digest(tiny, capitals, tmp_path):
    hypernet = make_hypernet(tiny, capitals[:3])
    with pytest.raises(ValueError, match="frozen"):
        next(iter(hypernet.nets.values())).normaliser.fit(torch.randn(5, 160, dtype=torch.float64))
    digest = hypernet.digest()
    hypernet.save(tmp_path / "ed")
    again = Hypernet.load(tmp_path / "ed", expect_digest=digest)
    assert again.digest() == digest
    with torch.no_grad():
        next(iter(again.nets.values())).normaliser.std.mul_(1.0 + 1e-12)
    assert again.digest() != digest
    with pytest.raises(ValueError, match="digest"):
        Hypernet.load(tmp_path / "ed", expect_digest="0" * 64)
    fresh = Hypernet(hypernet.hp, hypernet.shapes)
    with pytest.raises(ValueError, match="unfitted"):
        fresh.digest()
    with pytest.raises(ValueError, match="not fitted"):
        run_malmen_edit(tiny, [capitals[:1]], fresh, "collab")


def test_plausibility_helper_matches_numpy(setup):
    """tr G = Σ_e ‖U_e‖_F² exactly (the identity behind the trace bound)."""
    lm, reqs, hypernet, _ = setup
    rows = edit_rows(lm, reqs, hypernet.hp.layers)
    d = value_diffs(hypernet, rows)
    layer = hypernet.hp.layers[0]
    u_norm, _ = edit_norms(rows, d, layer)
    g = statistics_from_rows(hypernet, rows)[layer].g
    assert np.isclose(float(g.trace()), float((u_norm**2).sum()), rtol=1e-13)


def test_normaliser_fit_is_mean_and_unbiased_std():
    from secure_collab.editing.malmen.net import Normaliser

    x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]], dtype=torch.float64)
    norm = Normaliser(2).double()
    norm.fit(x)
    assert torch.equal(norm.mean, torch.tensor([3.0, 5.0], dtype=torch.float64))
    assert torch.allclose(norm.std, torch.tensor([2.0, 7.0**0.5], dtype=torch.float64), rtol=1e-15)
    assert float(norm.count) == 3


def test_default_layers_are_the_last_output_projections():
    from secure_collab.editing.malmen.hparams import MalmenHParams, default_malmen_hparams, last_layers

    assert default_malmen_hparams("smollm2-135m").layers == tuple(range(24, 30))
    assert default_malmen_hparams("some/llama", n_layers=32).layers == tuple(range(26, 32))
    assert last_layers(4) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="layers"):
        default_malmen_hparams("some/llama")
    with pytest.raises(ValueError, match="ascending"):
        MalmenHParams(layers=(3, 2))
    hp = DEFAULTS["tiny-llama"]
    assert MalmenHParams.from_dict(hp.to_dict()) == hp


def test_a_hypernetwork_file_that_does_not_match_its_description_is_refused_before_allocation(tiny, capitals,
                                                                                                tmp_path):
    """The red team's denial of service: hypernet.json edited to a huge rank made the loader allocate gigabytes
    before the digest refused it, and an empty or foreign tensor file escaped as a traceback. The file's header is
    now compared with what the description makes (built on the meta device) before any tensor is allocated."""
    import json

    from secure_collab.preflight import SessionMismatch, session_hypernet

    hypernet = make_hypernet(tiny, capitals[:3])
    hypernet.save(tmp_path / "ed")
    meta = json.loads((tmp_path / "ed" / "hypernet.json").read_text())
    meta["hp"]["rank"] = 50_000
    (tmp_path / "ed" / "hypernet.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not hold the tensors"):
        Hypernet.load(tmp_path / "ed")
    hypernet.save(tmp_path / "empty")
    from safetensors.torch import save_file

    save_file({}, str(tmp_path / "empty" / "hypernet.safetensors"))
    with pytest.raises(ValueError, match="does not hold the tensors"):
        Hypernet.load(tmp_path / "empty")
    (tmp_path / "empty" / "hypernet.safetensors").write_bytes(b"\xff" * 16)  # not a safetensors file at all

    class Session:
        hypernet_digest, layers, d_k, d_v = hypernet.digest(), hypernet.hp.layers, 0, 0

    with pytest.raises(SessionMismatch, match="could not be loaded"):
        session_hypernet(Session(), tmp_path / "empty")
