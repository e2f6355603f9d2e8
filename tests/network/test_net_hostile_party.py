"""Authenticated but hostile parties, with the real solver in its own process: what cannot be checked under
masking is caught after opening (range, plausibility) and ends the step without a release; what can be
attributed before opening excludes the party and the others go on."""

from __future__ import annotations

import numpy as np
from network_doubles import SyntheticEngine, make_config, reference_deltas, run_with_solver_process

from coordinator.server import Coordinator
from parties.client import Party
from secure_collab.protection import get_scheme
from secure_collab.protection.shares import SharesScheme


class OverBound(SharesScheme):
    """A party's own code, altered: 2^61 added to its first G value after the bound check, under the mask."""

    def _hide(self, vector, seed, ctx, pub):
        if ctx.statistic == "G" and ctx.chunk == 0:
            vector = vector.copy()
            # the vector is already masked (uniform words): add mod 2^64, as the mask does, not in checked int64
            vector.view(np.uint64)[:1] += np.uint64(2**61)
        return super()._hide(vector, seed, ctx, pub)


class NegativeGram(SyntheticEngine):
    """Statistics that stay within every per-value bound but cannot be K Kᵀ: G = −5 I."""

    def compute_statistics(self, round_, layer):
        stats = super().compute_statistics(round_, layer)
        return {**stats, "G": -5.0 * np.eye(self.s.d_k)}


class Unchecked(Party):
    def _checked(self, layer, stats):  # skips the honest party's own plausibility check
        return stats


def _hostile(cfg, scheme, engine, party_cls=Party):
    return lambda: party_cls(cfg, "c", scheme, engine.compute_statistics, engine.apply_delta).run()


def test_over_bound_contribution_is_refused_after_opening_and_nothing_is_released(tmp_path):
    cfg = make_config(tmp_path, mode="shares")
    poison = _hostile(cfg, OverBound(), SyntheticEngine("c", cfg))
    run = run_with_solver_process(cfg, next(tmp_path.glob("config-*.toml")), Coordinator(cfg, get_scheme("shares")),
                                  ("a", "b"), extra={"c": poison})
    verdict = run.solver["verdicts"][0]
    assert verdict["opened"] and "integrity check failed" in verdict["reason"]
    assert run.solver["releases"] == {} and run.solver["solve_calls"] == []
    assert not run.outcome.ok and all(not p.ok and p.applied == {} for p in run.parties.values())


def test_implausible_in_bound_contribution_is_refused_naming_the_check(tmp_path):
    cfg = make_config(tmp_path, mode="shares")
    hostile = _hostile(cfg, get_scheme("shares"), NegativeGram("c", cfg), Unchecked)
    run = run_with_solver_process(cfg, next(tmp_path.glob("config-*.toml")), Coordinator(cfg, get_scheme("shares")),
                                  ("a", "b"), extra={"c": hostile})
    verdict = run.solver["verdicts"][0]
    assert verdict["opened"] and "not positive semi-definite" in verdict["reason"]
    assert "eigenvalue" not in verdict["reason"]  # the check is named, the figures stay with the solver
    assert run.solver["releases"] == {} and not run.outcome.ok


def test_honest_party_refuses_to_send_what_the_solver_would_refuse(tmp_path):
    """Without the bypass, the party's own check stops it before anything leaves; the others go on."""
    cfg = make_config(tmp_path, mode="shares", network={"stage_timeout_s": 2.0})
    own_check = _hostile(cfg, get_scheme("shares"), NegativeGram("c", cfg))
    run = run_with_solver_process(cfg, next(tmp_path.glob("config-*.toml")), Coordinator(cfg, get_scheme("shares")),
                                  ("a", "b"), extra={"c": own_check})
    assert "break the session's bounds" in run.parties["c"].reason and run.parties["c"].bytes_sent < 2000
    assert run.outcome.ok and run.solver["verdicts"] == []
    for (r, lay), delta in reference_deltas(cfg, ["a", "b"]).items():
        np.testing.assert_allclose(np.array(run.solver["releases"][f"{r}/{lay}"]), delta, rtol=1e-9, atol=1e-9)


class BadSeal(SharesScheme):
    """A party's own code, altered: a sealed seed the solver cannot open, correctly signed by the party
    (so the coordinator's signature check passes and only the solver can tell)."""

    def protect(self, values, ctx, public, secrets, signer):
        from secure_collab.protection.statements import contribution_statement

        payload = super().protect(values, ctx, public, secrets, signer)
        garbage = bytes(len(payload.frames[-2]))
        signature = signer.sign(contribution_statement(ctx, self._public(public).digest, values.shape[0], garbage))
        return type(payload)(payload.header, (*payload.frames[:-2], garbage, signature))


def test_bad_seal_is_attributed_before_opening_and_the_others_go_on(tmp_path):
    cfg = make_config(tmp_path, mode="shares", network={"stage_timeout_s": 5.0})
    bad = _hostile(cfg, BadSeal(), SyntheticEngine("c", cfg))
    run = run_with_solver_process(cfg, next(tmp_path.glob("config-*.toml")), Coordinator(cfg, get_scheme("shares")),
                                  ("a", "b"), extra={"c": bad})
    verdict = run.solver["verdicts"][0]
    assert not verdict["opened"] and verdict["exclude"] == ["c"] and "do not authenticate" in verdict["reason"]
    assert run.outcome.ok, run.outcome.reason  # collected again from a and b, and released
    assert run.outcome.included[(0, (1,))] == ("a", "b")
    for (r, lay), delta in reference_deltas(cfg, ["a", "b"]).items():
        np.testing.assert_allclose(np.array(run.solver["releases"][f"{r}/{lay}"]), delta, rtol=1e-9, atol=1e-9)
    assert run.parties["a"].ok and run.parties["b"].ok
