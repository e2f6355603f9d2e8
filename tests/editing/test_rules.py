"""The three update rules against their direct formulas in float64 (explicit inverses, AlphaEdit's own
non-symmetric solve with P from an SVD), and the properties each rule is for."""

from __future__ import annotations

import pytest
import torch

from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.rules import UPDATE_RULES, UpdateRule, nullspace_basis
from tests.conftest import random_spd

D_K, D_V, N = 20, 7, 5


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cov = random_spd(D_K, seed)
    k = torch.randn(D_K, N, generator=g, dtype=torch.float64)  # (d_k, n), one column per edit
    r = torch.randn(D_V, N, generator=g, dtype=torch.float64)  # (d_v, n)
    k0 = torch.randn(D_K, 3, generator=g, dtype=torch.float64)  # an earlier round's keys
    return cov, k, r, k0


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_memit_static_is_b_times_the_inverse():
    cov, k, r, k0 = _problem()
    rule = UpdateRule("memit-static", lam=3.0)
    got = rule.solve(r @ k.T, k @ k.T, cov, past_g=k0 @ k0.T)  # the past is ignored
    want = (r @ k.T) @ torch.linalg.inv(3.0 * cov + k @ k.T)
    assert _rel(got, want) < 1e-12


def test_memit_dynamic_adds_the_weighted_past():
    cov, k, r, k0 = _problem(1)
    rule = UpdateRule("memit-dynamic", lam=3.0, lam_past=2.5)
    got = rule.solve(r @ k.T, k @ k.T, cov, past_g=k0 @ k0.T)
    want = (r @ k.T) @ torch.linalg.inv(3.0 * cov + k @ k.T + 2.5 * k0 @ k0.T)
    assert _rel(got, want) < 1e-12
    static = UpdateRule("memit-static", lam=3.0).solve(r @ k.T, k @ k.T, cov)
    assert _rel(rule.solve(r @ k.T, k @ k.T, cov, past_g=None), static) < 1e-14  # round 0: no past
    # what it is for: the earlier round's keys move less than under the static rule
    assert (got @ k0).norm() < (static @ k0).norm()


def test_memit_dynamic_by_default_weighs_the_past_like_the_covariance_as_collabedit():
    """CollabEdit's multi-round update adds past keys into the covariance with its own weight (C += λ·K Kᵀ):
    ΔW = ΣB (λ(C + G_past) + ΣG)⁻¹. The default rule must be that, not λ_past = 1."""
    cov, k, r, k0 = _problem(2)
    lam = 300.0
    got = UpdateRule("memit-dynamic", lam=lam).solve(r @ k.T, k @ k.T, cov, past_g=k0 @ k0.T)
    c_collab = cov + k0 @ k0.T  # CollabEdit's running covariance after one earlier round
    want = (r @ k.T) @ torch.linalg.inv(lam * c_collab + k @ k.T)
    assert _rel(got, want) < 1e-11
    weak = UpdateRule("memit-dynamic", lam=lam, lam_past=1.0).solve(r @ k.T, k @ k.T, cov, past_g=k0 @ k0.T)
    assert _rel(weak, want) > 1e-3  # the old weight is another rule (kept only as a setting)
    from secure_collab.editing.hparams import MemitHParams

    assert MemitHParams(layers=(1,), mom2_update_weight=lam, update_rule="memit-dynamic").rule.past_weight == lam


@pytest.mark.parametrize("threshold", [0.4, 0.8, 1.5])
def test_alphaedit_equals_its_non_symmetric_system_with_p_from_an_svd(threshold):
    cov, k, r, k0 = _problem(2)
    rule = UpdateRule("alphaedit", nullspace_threshold=threshold, l2=0.7)
    past = k0 @ k0.T
    got = rule.solve(r @ k.T, k @ k.T, cov, past_g=past)
    u, s, _ = torch.linalg.svd(cov)  # AlphaEdit's get_project
    small = u[:, s < threshold]
    assert 0 < small.shape[1] < D_K
    p = small @ small.T
    x = torch.linalg.solve(p @ (k @ k.T + past) + 0.7 * torch.eye(D_K, dtype=torch.float64), p @ k @ r.T)
    assert _rel(got, x.T) < 1e-10


def test_alphaedit_leaves_the_preserved_directions_alone():
    cov, k, r, k0 = _problem(3)
    rule = UpdateRule("alphaedit", nullspace_threshold=0.8, l2=0.1)
    delta = rule.solve(r @ k.T, k @ k.T, cov, past_g=k0 @ k0.T)
    evals, evecs = torch.linalg.eigh(cov)
    kept = evecs[:, evals >= 0.8]  # the preserved knowledge's directions
    assert kept.shape[1] > 0
    assert float((delta @ kept).norm()) < 1e-12 * float(delta.norm())
    # and it still writes the new keys' null-space part: ΔW k ≠ 0
    assert float((delta @ k).norm()) > 1e-3


def test_alphaedit_basis_can_be_passed_and_has_orthonormal_columns():
    cov, k, r, _ = _problem(4)
    rule = UpdateRule("alphaedit", nullspace_threshold=0.8, l2=1.0)
    basis = nullspace_basis(cov, 0.8)
    torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1], dtype=torch.float64), atol=1e-12,
                               rtol=0)
    assert _rel(rule.solve(r @ k.T, k @ k.T, cov, basis=basis), rule.solve(r @ k.T, k @ k.T, cov)) < 1e-14


def test_bad_rules_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="must be one of"):
        UpdateRule("rome")
    with pytest.raises(ValueError, match="l2"):
        UpdateRule("alphaedit", l2=0.0)
    with pytest.raises(ValueError, match="below nullspace_threshold"):
        nullspace_basis(torch.eye(4, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="must be one of"):
        MemitHParams(layers=(1,), mom2_update_weight=1.0, update_rule="memit")
    assert set(UPDATE_RULES) == {"memit-static", "memit-dynamic", "alphaedit"}


def test_session_hparams_take_a_full_table_and_refuse_a_second_update_rule():
    """Roles copy a whole MemitHParams table into [session.hparams] (the demo, the attack sessions); the rule
    is the session's own field, so the table may repeat it but not contradict it."""
    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.session import session_hparams

    table = default_hparams("tiny-llama", 4).to_dict()
    hp = session_hparams("tiny-llama", 4, (1, 2), "sequential", 0, table, 1, "memit-static")
    assert hp.update_rule == "memit-static" and hp.layers == (1, 2)
    with pytest.raises(ValueError, match="differs from session.update_rule"):
        session_hparams("tiny-llama", 4, (1, 2), "sequential", 0, table, 1, "alphaedit")
    with pytest.raises(ValueError, match="unknown"):
        session_hparams("tiny-llama", 4, (1, 2), "sequential", 0, {"lamda": 1.0}, 1)


def test_past_sigma_g_is_used_only_by_a_rule_that_reads_it_and_only_with_earlier_rounds():
    """The one decision (editing.uses_past) the solver follows: with one round there is no past to keep, and
    memit-static never reads it; the other rules do from the second round of a multi-round session on."""
    from secure_collab.editing import uses_past

    assert not uses_past("memit-dynamic", 1) and not uses_past("alphaedit", 1)
    assert uses_past("memit-dynamic", 2) and uses_past("alphaedit", 3)
    assert not uses_past("memit-static", 1) and not uses_past("memit-static", 4)
    with pytest.raises(ValueError):
        uses_past("memit-nope", 2)
