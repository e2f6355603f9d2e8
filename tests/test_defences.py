"""Defences of the release (secure_collab.editing.defences): the setting's text, camouflage and rank truncation checked
against the formulas in float64 with independent computations, and their place in the simulated session."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import random_spd

from secure_collab.editing.defences import Defence, DefenceError, camouflage, parse_defence, truncate_rank


def test_the_setting_text_round_trips_and_refuses_what_is_not_a_defence():
    assert parse_defence("none") == Defence() and parse_defence("").none
    d = parse_defence("camouflage:3+rank:20")
    assert d == Defence(3.0, 20) and d.spec() == "camouflage:3+rank:20" and parse_defence(d.spec()) == d
    assert parse_defence(" rank:4 ").spec() == "rank:4"
    for bad in ("camouflage", "camouflage:0", "camouflage:-1", "camouflage:nan", "rank:0", "rank:2.5", "blur:3",
                "rank:3+rank:4", "camouflage:1+"):
        with pytest.raises(DefenceError, match="bad defence"):
            parse_defence(bad)
    with pytest.raises(DefenceError, match="at most 100"):  # the text comes from a session file: bounded
        parse_defence("rank:" + "1" * 100)
    assert parse_defence("rank:2+decoys:1").spec() == "decoys:1+rank:2"  # decoys: tests/test_decoys.py
    for served in ("served", "served:100", "rank:2+served:5"):  # a release policy: its home is session.release
        with pytest.raises(DefenceError, match='release = "served"'):
            parse_defence(served)
    # `default` is what a session gets when its file names no defence, the demo's and `session init`'s too
    from dataclasses import fields

    from secure_collab.config import SessionConfig
    from secure_collab.editing.defences import DEFAULT_DEFENCE
    from secure_collab.session_file import SessionChoices

    assert parse_defence("default") == parse_defence(DEFAULT_DEFENCE) == Defence()
    assert {f.default for f in fields(SessionConfig) if f.name == "defence"} == {DEFAULT_DEFENCE}
    assert {f.default for f in fields(SessionChoices) if f.name == "defence"} == {DEFAULT_DEFENCE}


def _solve(k: torch.Tensor, r: torch.Tensor, lam_cov: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """ΔW = R W Kᵀ (λC + Kᵀ W K)⁻¹ for rows k_j, r_j and weights w, by a plain dense solve (not the engine's)."""
    w = torch.ones(k.shape[0], dtype=torch.float64) if w is None else w
    g = (k.T * w) @ k
    b = (r.T * w) @ k
    return torch.linalg.solve((lam_cov + g).T, b.T).T


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_camouflage_of_one_edit_leaves_its_output_exact_and_moves_its_key(weight):
    d_k, d_v = 24, 10
    lam_cov = 7.0 * random_spd(d_k, 1)
    g = torch.Generator().manual_seed(2)
    k = torch.randn(1, d_k, generator=g, dtype=torch.float64)
    r = torch.randn(1, d_v, generator=g, dtype=torch.float64)
    pool = torch.randn(16, d_k, generator=g, dtype=torch.float64) + k  # public keys share a direction with k
    w = torch.tensor([weight], dtype=torch.float64)
    for scale in (0.5, 3.0):
        k2, r2 = camouflage(k, r, lam_cov, pool, scale, random.Random(5), w)
        n = k2 - k
        a_k = torch.linalg.solve(lam_cov, k[0])
        assert abs(float(n[0] @ a_k)) < 1e-10 * float(n[0].norm() * a_k.norm())  # A-orthogonal to its key
        assert float(n.norm()) == pytest.approx(scale * float(k.norm()), rel=1e-12)
        # the release answers the true key exactly as without camouflage (one edit against λC)
        assert torch.allclose(_solve(k2, r2, lam_cov, w) @ k[0], _solve(k, r, lam_cov, w) @ k[0], rtol=1e-10,
                              atol=0)
        # the released row space no longer holds k: λC · rowspace(ΔW) is the camouflaged key's line
        v = lam_cov @ torch.linalg.svd(_solve(k2, r2, lam_cov, w))[2][0]
        cos = abs(float(v @ k[0])) / float(v.norm() * k[0].norm())
        cos2 = abs(float(v @ k2[0])) / float(v.norm() * k2[0].norm())
        assert cos2 == pytest.approx(1.0, abs=1e-10) and cos < 0.95
        # n is a mix of the pool's keys, moved along k only: it lies in span(pool, k)
        basis = torch.linalg.qr(torch.cat([pool, k]).T)[0]
        assert float((n[0] - basis @ (basis.T @ n[0])).norm()) < 1e-10 * float(n.norm())


def test_camouflage_draws_from_the_generator_it_is_given():
    lam_cov = random_spd(12, 3)
    g = torch.Generator().manual_seed(4)
    k, r, pool = (torch.randn(n, d, generator=g, dtype=torch.float64) for n, d in ((3, 12), (3, 5), (20, 12)))
    a = camouflage(k, r, lam_cov, pool, 2.0, random.Random(9))
    b = camouflage(k, r, lam_cov, pool, 2.0, random.Random(9))
    c = camouflage(k, r, lam_cov, pool, 2.0, random.Random(10))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[0], c[0])
    with pytest.raises(ValueError, match="pool"):
        camouflage(k, r, lam_cov, pool[:, :5], 2.0, random.Random(0))
    with pytest.raises(ValueError, match="pool"):
        camouflage(k, r, lam_cov, pool[:0], 2.0, random.Random(0))


def test_rank_truncation_is_the_best_in_the_keys_metric_by_an_independent_factorisation():
    d_v, d_k = 9, 14
    cov = random_spd(d_k, 6)
    delta = torch.randn(d_v, d_k, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)  # C = L Lᵀ: ‖X C^½‖_F = ‖X L‖_F, so the best rank K of ΔW L, mapped back
    for rank in (1, 3, 8):
        got = truncate_rank(delta, cov, rank)
        u, s, vh = torch.linalg.svd(delta @ chol, full_matrices=False)
        ref = torch.linalg.solve_triangular(chol.T, ((u[:, :rank] * s[:rank]) @ vh[:rank]).T, upper=True).T
        assert torch.linalg.matrix_rank(got) == rank
        assert torch.allclose(got, ref, rtol=0, atol=1e-10 * float(delta.abs().max()))
        # its error is the tail of the singular values, and below the plain (Euclidean) truncation's
        err = float(((delta - got) @ chol).norm())
        assert err == pytest.approx(float(s[rank:].norm()), rel=1e-9)
        u0, s0, vh0 = torch.linalg.svd(delta, full_matrices=False)
        plain = (u0[:, :rank] * s0[:rank]) @ vh0[:rank]
        assert err <= float(((delta - plain) @ chol).norm()) + 1e-12
    assert torch.equal(truncate_rank(delta, cov, d_v), delta)


def test_a_defended_simulated_session_releases_the_camouflaged_span_at_the_truncated_rank(tiny, capitals):
    """run_edit(collab) with camouflage: at the first layer (keys from the unedited model) λC · rowspace(ΔW) is
    exactly the span of the camouflaged keys the parties sent, not of the true keys; with rank:K every layer's
    ΔW has rank K."""
    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.keys import compute_keys
    from secure_collab.editing.memit import restore, run_edit, snapshot, split_parties
    from secure_collab.editing.templates import context_templates
    from secure_collab.models.specs import down_weight, n_layers

    hp = default_hparams(tiny.name, n_layers(tiny.model, tiny.spec)).with_(v_num_grad_steps=4)
    dk = down_weight(tiny.model, tiny.spec, hp.layers[0]).shape[1]
    covs = {layer: random_spd(dk, layer) for layer in hp.layers}
    lam_cov = hp.mom2_update_weight * covs[hp.layers[0]]
    templates = context_templates(tiny, hp.n_templates, hp.template_length, hp.template_seed)
    parties = split_parties(capitals[:6], 3)
    sent: list[torch.Tensor] = []
    import secure_collab.editing.defences as defences

    real = defences.camouflage_mixed

    def spy(*args, **kw):
        out = real(*args, **kw)
        sent.append(out[0])
        return out

    saved = snapshot(tiny, hp.layers)
    try:
        defences.camouflage_mixed = spy
        out = run_edit(tiny, parties, hp, covs, "collab", templates, defence=Defence(2.0, 0),
                       rngs=[random.Random(i) for i in range(3)])
        restore(tiny, saved)
        defences.camouflage_mixed = real
        truncated = run_edit(tiny, parties, hp, covs, "collab", templates, defence=Defence(0.0, 2))
    finally:
        defences.camouflage_mixed = real
        restore(tiny, saved)
    first = torch.cat(sent[:3])  # the three parties' camouflaged keys at the first layer
    true = compute_keys(tiny, [r for p in parties for r in p], hp.layers[0], templates).double()
    _, s, vh = torch.linalg.svd(out.deltas[hp.layers[0]].double())
    span = torch.linalg.qr(lam_cov @ vh[:first.shape[0]].T)[0]
    inside = (span.T @ first.T).norm(dim=0) / first.norm(dim=1)
    assert float(inside.min()) > 1 - 1e-8
    assert float(((span.T @ true.T).norm(dim=0) / true.norm(dim=1)).max()) < 0.99
    assert all(int(torch.linalg.matrix_rank(d)) == 2 for d in truncated.deltas.values())
    with pytest.raises(ValueError, match="defences apply"):
        run_edit(tiny, parties, hp, covs, "ta", templates, defence=Defence(0.0, 2))


def test_a_partys_camouflage_keys_only_the_decoys_it_draws_and_equals_the_whole_pools(tiny, capitals):
    """PartyCamouflage computes keys for the ≤ n × mix decoys its draws use; the result equals ``camouflage``
    over the keys of its whole pool with the same generator."""
    from secure_collab.editing.defences import PartyCamouflage, decoy_subjects
    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.keys import compute_keys, subject_keys
    from secure_collab.editing.templates import context_templates
    from secure_collab.models.specs import down_weight, n_layers

    hp = default_hparams(tiny.name, n_layers(tiny.model, tiny.spec))
    layer = hp.layers[0]
    dk = down_weight(tiny.model, tiny.spec, layer).shape[1]
    lam_cov = 3.0 * random_spd(dk, 8)
    templates = context_templates(tiny, hp.n_templates, hp.template_length, hp.template_seed)
    reqs = capitals[:3]
    keys = compute_keys(tiny, reqs, layer, templates).double()
    resid = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cam = PartyCamouflage(2.5, {layer: lam_cov}, random.Random(3), [r.subject for r in reqs])
    assert cam.names == decoy_subjects(random.Random(3), len(cam.names), [r.subject for r in reqs])
    got = cam(tiny, layer, templates, keys, resid)
    rng = random.Random(3)
    decoy_subjects(rng, len(cam.names), [r.subject for r in reqs])  # the draw the constructor made
    want = camouflage(keys, resid, lam_cov, subject_keys(tiny, cam.names, layer, templates), 2.5, rng)
    assert torch.allclose(got[0], want[0], rtol=1e-12, atol=0) and torch.allclose(got[1], want[1], rtol=1e-12, atol=0)
