"""The calibrated-noise defence noise:Z (secure_collab.editing.noise, .accounting): the setting's text, clipping and the
sensitivity Δ₂ by brute force, the noise against its formula in float64, the plan, the accountant against cases
worked by hand and direct calls of dp-accounting, the plausibility slack, and the simulated session against a
reference written here."""

from __future__ import annotations

import hashlib
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import random_spd

from secure_collab.editing import dgauss
from secure_collab.editing.defences import DEFAULT_DELTA, Defence, DefenceError, parse_defence
from secure_collab.editing.noise import (
    CLIP_MARGIN,
    PartyNoise,
    clip_rows,
    noise_source,
    plan_noise,
    psd_part,
    sensitivity,
    session_noise_plan,
)
from secure_collab.editing.statistics import LayerStats, layer_statistics
from secure_collab.protection import encoding_frac_bits
from secure_collab.protection.encoding import decode_fixed, encode_fixed, pack_symmetric
from secure_collab.protection.randomness import WordSource
from secure_collab.protocol.messages import MAX_PARTIES

SHARES_BITS = encoding_frac_bits("shares", 1e5, MAX_PARTIES)


def test_the_setting_text_round_trips_and_refuses_bad_noise():
    d = parse_defence("noise:2")
    assert d == Defence(noise=2.0) and d.delta == DEFAULT_DELTA == 1e-6 and not d.none and d.spec() == "noise:2"
    both = parse_defence("camouflage:3+rank:20+noise:0.5")
    assert both == Defence(3.0, 20, 0.5) and parse_defence(both.spec()) == both
    tight = parse_defence("noise:1+delta:1e-9")
    assert tight.delta == 1e-9 and tight.spec() == "noise:1+delta:1e-09" and parse_defence(tight.spec()) == tight
    for bad in ("noise:0", "noise:-1", "noise:nan", "noise:inf", "noise", "noise:1+noise:2", "noise:1+delta:0",
                "noise:1+delta:1", "noise:1+delta:-3"):
        with pytest.raises(DefenceError, match="bad defence"):
            parse_defence(bad)
    with pytest.raises(DefenceError, match="needs noise"):
        parse_defence("rank:3+delta:1e-7")


# ----------------------------------------------------------------------------------------- clipping, Δ₂

def _sent(keys: torch.Tensor, resid: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    """What a party sends for (keys, residuals, weights): upper(G) then B, as the wire packs them."""
    s = layer_statistics(keys, resid, weights)
    return np.concatenate([pack_symmetric(s.g.numpy()), s.b.numpy().reshape(-1)])


def test_clipping_bounds_the_norms_and_leaves_the_others_alone():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 12, generator=g, dtype=torch.float64) * torch.rand(50, 1, generator=g, dtype=torch.float64) * 8
    out = clip_rows(x, 3.0)
    norms, before = out.norm(dim=1), x.norm(dim=1)
    inside = before < 3.0 * (1 - CLIP_MARGIN)
    assert 0 < int(inside.sum()) < 50  # some of each
    assert torch.equal(out[inside], x[inside])
    assert float(norms.max()) <= 3.0
    assert torch.allclose(norms[~inside], torch.full_like(norms[~inside], 3.0), rtol=1e-8, atol=0)
    cos = (out * x).sum(1) / (norms * before)
    assert float(cos.min()) > 1 - 1e-12  # the direction is kept


def test_adding_or_removing_one_edit_moves_the_sent_vector_by_at_most_delta2():
    """Brute force over random sessions: one more (clipped) edit of weight ≤ 1 changes upper(G) ‖ B by at most
    Δ₂ = sqrt(κ⁴ + ρ²κ²), with equality for a key along one axis at weight 1; a packing with the off-diagonal
    entries doubled would exceed it, which is why the derivation follows the wire."""
    kappa, rho, d_k, d_v = 2.5, 4.0, 7, 5
    bound = sensitivity(kappa, rho)
    assert bound == pytest.approx(math.sqrt(kappa**4 + rho**2 * kappa**2), rel=1e-15)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(300):
        n = int(torch.randint(0, 6, (1,), generator=g))
        keys = clip_rows(torch.randn(n + 1, d_k, generator=g, dtype=torch.float64) * 3, kappa)
        resid = clip_rows(torch.randn(n + 1, d_v, generator=g, dtype=torch.float64) * 5, rho)
        w = torch.rand(n + 1, generator=g, dtype=torch.float64).clamp_min(1e-3)
        if bool(torch.rand(1, generator=g) < 0.3):
            w[-1] = 1.0
        change = np.linalg.norm(_sent(keys, resid, w) - _sent(keys[:-1], resid[:-1], w[:-1]))
        worst = max(worst, change / bound)
    assert 0.5 < worst <= 1.0
    k = torch.zeros(1, d_k, dtype=torch.float64)
    k[0, 2] = kappa
    r = torch.full((1, d_v), rho / math.sqrt(d_v), dtype=torch.float64)
    one = np.linalg.norm(_sent(k, r, torch.ones(1, dtype=torch.float64)))
    assert one == pytest.approx(bound, rel=1e-12)  # tight
    # a key spread over every axis sends less than Δ₂; with the off-diagonal entries doubled (another packing of a
    # symmetric matrix) the same edit would move the vector by more than Δ₂
    dense = torch.full((1, d_k), kappa / math.sqrt(d_k), dtype=torch.float64)
    sent = _sent(dense, r, torch.ones(1, dtype=torch.float64))
    rows, cols = np.triu_indices(d_k)
    doubled = sent.copy()
    doubled[: rows.size][rows != cols] *= 2
    assert np.linalg.norm(sent) < bound < np.linalg.norm(doubled)


# ----------------------------------------------------------------------------------------- the noise, the plan

def test_the_plan_calibrates_sigma_on_the_encodings_grid():
    for z, parties in ((0.3, 2), (1.0, 3), (4.0, 10)):
        plan = plan_noise(z, 16.0, 32.0, parties, 64, 48, SHARES_BITS, 20, 1e5)
        want = z * sensitivity(16.0, 32.0)
        assert want <= plan.sigma_total <= want * (1 + 2.0**-22)  # σ_g is rounded up, by under a step
        assert plan.grid_bits <= SHARES_BITS and (plan.grid * 2.0**SHARES_BITS).is_integer()
        assert 2**22 < plan.sigma_grid <= dgauss.MAX_SIGMA
        assert plan.values == 64 * 65 // 2 + 48 * 64
    ckks = encoding_frac_bits("ckks", 1e5, MAX_PARTIES)
    coarse = plan_noise(1.0, 16.0, 32.0, 3, 64, 48, ckks, 20, 1e5)
    assert coarse.grid_bits == ckks and coarse.sigma_grid < dgauss.MAX_SIGMA  # the encoding's step decides
    with pytest.raises(ValueError, match="below the encoding's step"):
        plan_noise(1e-6, 1e-3, 1e-3, 3, 64, 48, ckks, 20, 1e5)
    with pytest.raises(ValueError, match="multiplier"):
        plan_noise(0.0, 16.0, 32.0, 3, 64, 48, SHARES_BITS, 20, 1e5)
    with pytest.raises(ValueError, match="leaves no room for 40σ"):  # the default bounds (1000) and value_bound
        plan_noise(1.0, 1e3, 1e3, 3, 64, 48, SHARES_BITS, 20, 1e5)
    session = SimpleNamespace(mode="shares", value_bound=1e5, protection={}, key_norm_bound=16.0,
                              residual_norm_bound=32.0, min_parties=3, d_k=64, d_v=48, max_edits_per_party=20)
    assert session_noise_plan(Defence(rank=3), session) is None
    assert session_noise_plan(Defence(noise=1.0), session) == plan_noise(1.0, 16.0, 32.0, 3, 64, 48, SHARES_BITS,
                                                                          20, 1e5)


def test_party_noise_is_the_formula_in_float64_and_encodes_without_rounding():
    """G′ = g (round(G/g) + Y_G) on the upper triangle, mirrored; B′ = g (round(B/g) + Y_B); Y the discrete
    Gaussian of σ_g from the label's words, recomputed here. Every value is a multiple of g, and the shares
    encoding at the session's step carries it exactly."""
    d_k, d_v = 9, 4
    plan = plan_noise(0.7, 3.0, 5.0, 3, d_k, d_v, SHARES_BITS, 10, 1e5)
    g = torch.Generator().manual_seed(3)
    keys, resid = torch.randn(6, d_k, generator=g, dtype=torch.float64), torch.randn(6, d_v, generator=g,
                                                                                      dtype=torch.float64)
    clean = layer_statistics(keys, resid)
    key = bytes(range(32))
    out = PartyNoise(plan, WordSource(key))(clean, 2, 5)
    rows, cols = np.triu_indices(d_k)
    y_g = dgauss.discrete_gaussian(plan.sigma_grid, rows.size, WordSource(key).stream("round 2 layer 5 G").words)
    y_b = dgauss.discrete_gaussian(plan.sigma_grid, d_v * d_k, WordSource(key).stream("round 2 layer 5 B").words)
    step = 2.0**-plan.grid_bits
    want_g = (np.round(clean.g.numpy()[rows, cols] / step) + y_g) * step
    want_b = (np.round(clean.b.numpy().reshape(-1) / step) + y_b) * step
    got = out.g.numpy()
    assert np.array_equal(got[rows, cols], want_g) and np.array_equal(got, got.T)
    assert np.array_equal(out.b.numpy().reshape(-1), want_b)
    sent = np.concatenate([want_g, want_b])
    assert np.array_equal(decode_fixed(encode_fixed(sent, SHARES_BITS), SHARES_BITS), sent)
    # the noise is there, of about its σ, and another (round, layer) draws other noise
    z = (sent - np.concatenate([clean.g.numpy()[rows, cols], clean.b.numpy().reshape(-1)])) / plan.sigma
    assert 0.6 < float(np.std(z)) < 1.5
    other = PartyNoise(plan, WordSource(key))(clean, 2, 6)
    assert not np.array_equal(other.b.numpy(), out.b.numpy())


def test_a_seeded_generator_keys_the_noise_without_drawing_from_it():
    rng = random.Random(11)
    state = rng.getstate()
    words = noise_source(rng).stream("x").words(4)
    assert rng.getstate() == state  # camouflage's draws from the same generator are unchanged
    want = hashlib.sha256(b"secure-collab seeded noise key\0" + repr(state).encode()).digest()
    assert np.array_equal(words, WordSource(want).stream("x").words(4))
    assert not np.array_equal(noise_source(random.SystemRandom()).stream("x").words(4), words)
    assert not np.array_equal(noise_source(None).stream("x").words(4), words)


def test_psd_part_clips_the_negative_eigenvalues():
    a = torch.randn(8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sym = a + a.T
    out = psd_part(sym)
    evals, evecs = np.linalg.eigh(sym.numpy())
    ref = (evecs * np.clip(evals, 0, None)) @ evecs.T
    assert evals.min() < 0 and np.allclose(out.numpy(), ref, atol=1e-12, rtol=0)
    assert float(torch.linalg.eigvalsh(out).min()) > -1e-12
    spd = random_spd(8, 2)
    assert torch.allclose(psd_part(spd), spd, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------- the accountant

def _direct(rho: float, delta: float, xi: float = 0.0) -> float:
    import dp_accounting

    from secure_collab.editing.accounting import ORDERS

    acc = dp_accounting.rdp.RdpAccountant(orders=ORDERS)
    acc.compose(dp_accounting.ZCDpEvent(rho=rho, xi=xi))
    return acc.get_epsilon(delta)


def test_the_accountant_on_a_case_worked_by_hand():
    """One party, no τ: a release is ρ-zCDP with ρ = Δ_g² / (2σ_g²). ε at δ is what dp-accounting's RDP accountant
    says for ZCDpEvent(ρ) (a direct call), below the standard conversion ρ + 2 sqrt(ρ log 1/δ); L layers × R rounds
    are one ZCDpEvent(L R ρ), again below its conversion."""
    from secure_collab.editing.accounting import epsilon, plan_epsilon, release_events, tau

    plan = plan_noise(1.3, 2.0, 3.0, 1, 10, 4, SHARES_BITS, 5, 1e5)
    assert tau(plan) == 0.0
    rho = plan.delta_grid**2 / (2 * plan.sigma_grid**2)
    # by hand: Δ₂ = 2 sqrt(4 + 9); σ_target = 1.3 Δ₂ ≈ 9.37 < 2^4, so the grid is 2^-(24-4) and σ_g = ⌈σ_target 2^20⌉;
    # Δ_g = Δ₂ 2^20 + sqrt(D) (D = 55 + 40 values; the float slack is 1e-13 of it); ρ ≈ 1 / (2 Z²)
    d2 = 2 * math.sqrt(13)
    assert plan.grid_bits == 20 and plan.sigma_grid == math.ceil(1.3 * d2 * 2**20)
    assert rho == pytest.approx((d2 * 2**20 + math.sqrt(95)) ** 2 / (2 * plan.sigma_grid**2), rel=1e-11)
    assert rho == pytest.approx(1 / (2 * 1.3**2), rel=1e-5)
    events = release_events(plan)
    assert events[0].rho == pytest.approx(rho, rel=1e-12) and events[0].xi == 0.0
    delta = 1e-6
    one = epsilon(events, delta)
    assert one == pytest.approx(_direct(rho, delta), rel=1e-12)
    assert one <= rho + 2 * math.sqrt(rho * math.log(1 / delta))
    for layers, rounds in ((5, 1), (3, 4)):
        total = epsilon(events, delta, layers, rounds)
        lr = layers * rounds * rho
        assert total == pytest.approx(_direct(lr, delta), rel=1e-12)
        assert total <= lr + 2 * math.sqrt(lr * math.log(1 / delta))
        assert total > one
    session = plan_epsilon(plan, delta, 5, 1)
    assert session.per_release == one and session.session == epsilon(events, delta, 5) and session.releases == 5


def test_tau_and_the_second_bound_for_a_small_sigma():
    """At σ_g = 1 and n = 3 parties τ = 10 (e^{-2π²·1/2} + e^{-2π²·2/3}) (Kairouz et al.), and a release satisfies
    both (ξ = τd, ρ = Δ²/(2nσ²)) and (ρ = (Δ/(√n σ) + τ√d)²/2): the accountant keeps the smaller ε."""
    from dataclasses import replace

    from secure_collab.editing.accounting import epsilon, release_events, tau

    plan = replace(plan_noise(1.0, 2.0, 3.0, 3, 10, 4, SHARES_BITS, 5, 1e5), sigma_grid=1)
    want = 10 * (math.exp(-2 * math.pi**2 / 2) + math.exp(-2 * math.pi**2 * 2 / 3))
    assert tau(plan) == pytest.approx(want, rel=1e-14)
    first, second = release_events(plan)
    scale = plan.delta_grid / math.sqrt(3)
    assert first.rho == pytest.approx(scale**2 / 2) and first.xi == pytest.approx(want * plan.values)
    assert second.rho == pytest.approx((scale + math.sqrt(plan.values) * want) ** 2 / 2) and second.xi == 0
    delta = 1e-6
    assert epsilon([first, second], delta) == min(_direct(first.rho, delta, first.xi), _direct(second.rho, delta))


def test_session_epsilon_is_none_without_noise_and_counts_layers_times_rounds():
    from secure_collab.editing.accounting import plan_epsilon, session_epsilon

    s = SimpleNamespace(mode="shares", value_bound=1e5, protection={}, key_norm_bound=16.0, residual_norm_bound=32.0,
                        min_parties=3, d_k=64, d_v=48, max_edits_per_party=20, layers=(3, 4, 5, 6, 7), rounds=2,
                        served=False)
    assert session_epsilon(parse_defence("camouflage:2+rank:3"), SimpleNamespace(session=s)) is None
    got = session_epsilon(parse_defence("noise:1+delta:1e-8"), SimpleNamespace(session=s))
    assert got is not None and got.releases == 10 and got.delta == 1e-8
    assert got == plan_epsilon(session_noise_plan(Defence(noise=1.0), s), 1e-8, 5, 2)
    assert got.summary()["epsilon"] == got.session > got.per_release
    with_decoys = session_epsilon(parse_defence("noise:1+delta:1e-8+decoys:2"), SimpleNamespace(session=s))
    assert with_decoys is not None and with_decoys.releases == 15  # the decoys' repair round adds 5 noised releases
    assert session_epsilon(parse_defence("noise:1+delta:1e-8+decoys:2"),
                           SimpleNamespace(session=SimpleNamespace(**{**vars(s), "served": True}))).releases == 10


# ----------------------------------------------------------------------------------------- plausibility slack

def test_the_checks_allow_for_the_noise_and_nothing_more():
    """An honest noised sum (3 parties' noise on statistics at the declared bounds) fails the psd and trace checks
    without the noise slack and passes with it; a sum far beyond the bounds still fails with it."""
    from secure_collab.protocol.plausibility import Bounds, plausibility_problems

    d_k, d_v, parties = 40, 6, 3
    plan = plan_noise(1.0, 2.0, 3.0, parties, d_k, d_v, SHARES_BITS, 5, 1e5)
    g = torch.Generator().manual_seed(8)
    keys = clip_rows(torch.randn(6, d_k, generator=g, dtype=torch.float64) * 9, 2.0)
    resid = clip_rows(torch.randn(6, d_v, generator=g, dtype=torch.float64) * 9, 3.0)
    clean = layer_statistics(keys, resid)
    noised = [PartyNoise(plan, WordSource(bytes([p]) * 32))(LayerStats(clean.g / parties, clean.b / parties), 0, 1)
              for p in range(parties)]
    total_g = sum(s.g for s in noised).numpy()
    total_b = sum(s.b for s in noised).numpy()
    plain = Bounds(2.0, 3.0, 5)
    noisy = Bounds(2.0, 3.0, 5, noise=plan.sigma)
    assert {p.check for p in plausibility_problems(total_g, total_b, 6.0, parties, plain)} >= {"psd"}
    assert plausibility_problems(total_g, total_b, 6.0, parties, noisy) == []
    far = plausibility_problems(total_g + 50 * plan.sigma_total * np.sqrt(d_k) * np.eye(d_k), total_b * 400, 6.0,
                                parties, noisy)
    assert {p.check for p in far} == {"trace", "residual"}


# ----------------------------------------------------------------------------------------- the simulated session

def test_the_simulated_noised_session_is_the_reference_at_the_first_layer(tiny, capitals):
    """run_edit(collab, noise:Z) at the first layer against a reference written here: keys and residuals of the
    unedited model, clipped by hand (κ, ρ below the medians, so clipping bites), G and B per party, each party's
    noise from its generator's derived key, summed, ΣG's negative eigenvalues clipped, solved densely. The same
    generators give the same ΔW; camouflage draws what it draws without noise."""
    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.keys import compute_keys
    from secure_collab.editing.memit import current_outputs, restore, run_edit, snapshot, split_parties
    from secure_collab.editing.templates import context_templates
    from secure_collab.models.specs import down_weight, n_layers

    hp = default_hparams(tiny.name, n_layers(tiny.model, tiny.spec)).with_(v_num_grad_steps=4)
    first = hp.layers[0]
    d_v, d_k = down_weight(tiny.model, tiny.spec, first).shape
    covs = {layer: random_spd(d_k, layer) for layer in hp.layers}
    templates = context_templates(tiny, hp.n_templates, hp.template_length, hp.template_seed)
    parties = split_parties(capitals[:6], 3)
    saved = snapshot(tiny, hp.layers)
    try:
        keys = [compute_keys(tiny, p, first, templates).double() for p in parties]
        base = run_edit(tiny, parties, hp, covs, "collab", templates)  # for the targets
        restore(tiny, saved)
        curs = [current_outputs(tiny, p, hp).double() for p in parties]
        resid = [(t.z.double() - c) / len(hp.layers) for t, c in zip(base.targets, curs, strict=True)]
        kappa = float(torch.cat(keys).norm(dim=1).median())
        rho = float(torch.cat(resid).norm(dim=1).median())
        plan = plan_noise(0.05, kappa, rho, 3, d_k, d_v, SHARES_BITS, 5, 1e5)
        defence = Defence(noise=0.05)
        out = run_edit(tiny, parties, hp, covs, "collab", templates, targets=base.targets, defence=defence,
                       rngs=[random.Random(i) for i in range(3)], noise_plan=plan)
        restore(tiny, saved)
        again = run_edit(tiny, parties, hp, covs, "collab", templates, targets=base.targets, defence=defence,
                         rngs=[random.Random(i) for i in range(3)], noise_plan=plan)
        restore(tiny, saved)
    finally:
        restore(tiny, saved)
    assert all(torch.equal(out.deltas[la], again.deltas[la]) for la in hp.layers)
    rows, cols = np.triu_indices(d_k)
    step = 2.0**-plan.grid_bits
    total_g, total_b = np.zeros((d_k, d_k)), np.zeros((d_v, d_k))
    clipped = 0
    for i, (k, r) in enumerate(zip(keys, resid, strict=True)):
        kn, rn = k.norm(dim=1, keepdim=True), r.norm(dim=1, keepdim=True)
        k2 = torch.where(kn > kappa * (1 - CLIP_MARGIN), k * (kappa * (1 - CLIP_MARGIN) / kn), k)
        r2 = torch.where(rn > rho * (1 - CLIP_MARGIN), r * (rho * (1 - CLIP_MARGIN) / rn), r)
        clipped += int((kn > kappa).sum() + (rn > rho).sum())
        g, b = (k2.T @ k2).numpy(), (r2.T @ k2).numpy()
        state = random.Random(i).getstate()
        source = WordSource(hashlib.sha256(b"secure-collab seeded noise key\0" + repr(state).encode()).digest())
        up = (np.round(g[rows, cols] / step) + dgauss.discrete_gaussian(
            plan.sigma_grid, rows.size, source.stream(f"round 0 layer {first} G").words)) * step
        noisy_g = np.zeros((d_k, d_k))
        noisy_g[rows, cols] = up
        noisy_g[cols, rows] = up
        total_g += noisy_g
        total_b += (np.round(b / step) + dgauss.discrete_gaussian(
            plan.sigma_grid, b.size, source.stream(f"round 0 layer {first} B").words).reshape(b.shape)) * step
    assert clipped >= 4
    evals, evecs = np.linalg.eigh(total_g)
    a = hp.mom2_update_weight * covs[first].numpy() + (evecs * np.clip(evals, 0, None)) @ evecs.T
    ref = np.linalg.solve(a, total_b.T).T
    got = out.deltas[first].numpy()
    assert np.linalg.norm(got - ref) < 1e-8 * np.linalg.norm(ref)
    plain = base.deltas[first].numpy()
    assert np.linalg.norm(got - plain) > 1e-3 * np.linalg.norm(plain)  # the noise and the clipping changed it


def test_noise_needs_its_plan_and_leaves_the_camouflage_draws_alone(tiny, capitals):
    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.memit import restore, run_edit, snapshot, split_parties
    from secure_collab.editing.templates import context_templates
    from secure_collab.models.specs import down_weight, n_layers

    hp = default_hparams(tiny.name, n_layers(tiny.model, tiny.spec)).with_(v_num_grad_steps=2)
    d_v, d_k = down_weight(tiny.model, tiny.spec, hp.layers[0]).shape
    covs = {layer: random_spd(d_k, layer) for layer in hp.layers}
    templates = context_templates(tiny, hp.n_templates, hp.template_length, hp.template_seed)
    parties = split_parties(capitals[:4], 2)
    with pytest.raises(ValueError, match="noise plan"):
        run_edit(tiny, parties, hp, covs, "collab", templates, defence=Defence(noise=1.0))
    import secure_collab.editing.defences as defences

    real, sent = defences.camouflage, []

    def spy(*args, **kw):
        out = real(*args, **kw)
        sent.append(out[0])
        return out

    plan = plan_noise(1.0, 100.0, 100.0, 2, d_k, d_v, SHARES_BITS, 5, 1e7)
    saved = snapshot(tiny, hp.layers)
    try:
        defences.camouflage = spy
        first = run_edit(tiny, parties, hp, covs, "collab", templates, defence=Defence(2.0),
                         rngs=[random.Random(i) for i in range(2)])
        restore(tiny, saved)
        alone = list(sent[:2])
        sent.clear()
        run_edit(tiny, parties, hp, covs, "collab", templates, targets=first.targets, defence=Defence(2.0, 0, 1.0),
                 rngs=[random.Random(i) for i in range(2)], noise_plan=plan)
    finally:
        defences.camouflage = real
        restore(tiny, saved)
    assert all(torch.equal(a, b) for a, b in zip(alone, sent[:2], strict=True))  # the first layer's draws
