"""(ε, δ) of a session with ``noise:Z``, by Google's ``dp-accounting`` (its RDP accountant), never by hand.

One release is one layer's (G, B) of one round: the sum of the parties' vectors plus the sum of n = min_parties
counted discrete Gaussians of σ_g grid steps each (``noise.NoisePlan``). The sum of discrete Gaussians is not a
discrete Gaussian; Kairouz, Liu & Steinke 2021 ("The Distributed Discrete Gaussian Mechanism for Federated Learning
with Secure Aggregation", arXiv 2102.06387, Proposition 14 / Eq. 17) bound its Rényi divergence, for every order
α ≥ 1, a change Δ of L2 norm ≤ Δ_g (grid steps) and d values, by

    D_α ≤ min{ α Δ_g² / (2nσ_g²) + τd ,  (α/2) (Δ_g/(√n σ_g) + τ√d)² },   τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ_g² k/(k+1)).

Checked against the authors' code (google-research/federated, distributed_dp/accounting_utils.py,
``compute_rdp_dgaussian``: ``term_1 = order/2 · l2_scale² + tau · dim``, ``term_3 = order/2 · (l2_scale +
sqrt(dim) · tau)²`` with l2_scale = Δ/(√n σ)); their third bound, with the L1 sensitivity, is left out (a minimum
over fewer bounds is still a bound). Each bound is a (ξ, ρ)-zCDP event, D_α ≤ ξ + ρα, which is what
``dp_accounting.ZCDpEvent(rho, xi)`` means; its RDP accountant (``RdpAccountant`` supports ``ZCDpEvent`` in 0.6)
composes L layers × R rounds (``SelfComposedDpEvent``) and converts to (ε, δ). We compose each bound separately
and keep the smaller ε: both are valid for every release. (The brief quoted the theorem's ½ε²-CDP form as
ε = sqrt(Δ²/(nσ²) + ½τd); folding τd into the α term of the first bound gives sqrt(Δ²/(nσ²) + 2τd) instead. Passing
ξ = τd as it stands avoids the question; from σ_g ≥ 3 on, τ < 1e-37 and both agree.)

What ε covers: ΔW and everything else computed from the noised sums (the solver's past ΣG, the release). Not
covered: the edit count N (it reaches only the solver, and ΔW does not depend on it), the tags of dedupe and
conflict resolution, and the holders note. The unit is one edit request of weight ≤ 1; a conflict winner's
``augment`` paraphrases are further requests (a fact with a extra requests is a group of 1 + a: ρ times (1 + a)²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from secure_collab.editing.noise import NoisePlan, session_noise_plan

# RDP orders: the accountant's defaults and a denser grid near 1, where the optimum lies when ε is large
ORDERS = tuple(sorted({1 + x / 10.0 for x in range(1, 100)} | set(range(11, 64)) | {128, 256, 512, 1024}
                      | {1 + 10 ** (k / 20) for k in range(-40, 0)}))


def tau(plan: NoisePlan) -> float:
    """Kairouz et al.'s τ for n = min_parties discrete Gaussians of σ_g (0 for one party: its sum is one)."""
    s2 = float(plan.sigma_grid) ** 2
    return 10 * sum(math.exp(-2 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, plan.min_parties))


def release_events(plan: NoisePlan) -> list[Any]:
    """The two ``ZCDpEvent`` bounds of one release (Proposition 14); either holds."""
    import dp_accounting

    scale = plan.delta_grid / (math.sqrt(plan.min_parties) * plan.sigma_grid)  # Δ_g / (√n σ_g)
    t, d = tau(plan), plan.values
    return [dp_accounting.ZCDpEvent(rho=scale**2 / 2, xi=t * d),
            dp_accounting.ZCDpEvent(rho=(scale + math.sqrt(d) * t) ** 2 / 2)]


def epsilon(events: list[Any], delta: float, layers: int = 1, rounds: int = 1) -> float:
    """ε at ``delta`` of ``layers`` × ``rounds`` releases, each satisfying every one of ``events``: the smallest over
    the events of what ``dp_accounting.rdp.RdpAccountant`` gives for their composition."""
    import dp_accounting

    best = math.inf
    for event in events:
        accountant = dp_accounting.rdp.RdpAccountant(orders=ORDERS)
        accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.SelfComposedDpEvent(event, layers),
                                                             rounds))
        best = min(best, accountant.get_epsilon(delta))
    return best


@dataclass(frozen=True)
class SessionEpsilon:
    per_release: float  # ε of one layer of one round
    session: float  # ε over the session's layers × rounds releases
    delta: float
    releases: int
    rho_per_release: float  # the zCDP ρ of one release (the first bound's, with ξ = τd beside it)
    plan: NoisePlan

    def summary(self) -> dict[str, Any]:
        return {"epsilon": self.session, "epsilon_per_release": self.per_release, "delta": self.delta,
                "releases": self.releases, "rho_per_release": self.rho_per_release, **self.plan.summary()}


def plan_epsilon(plan: NoisePlan, delta: float, layers: int, rounds: int) -> SessionEpsilon:
    """(ε, δ) of ``layers`` × ``rounds`` releases of ``plan``, and of one."""
    events = release_events(plan)
    return SessionEpsilon(epsilon(events, delta), epsilon(events, delta, layers, rounds), delta, layers * rounds,
                          events[0].rho, plan)


def session_epsilon(defence: Any, config: Any) -> SessionEpsilon | None:
    """(ε, δ) of a session (a ``config.Config``, or anything with its ``session``) under ``defence``: per release and
    over all its releases (layers × rounds); None for a defence without noise."""
    session = getattr(config, "session", config)
    plan = session_noise_plan(defence, session)
    if plan is None:
        return None
    rounds = session.rounds + defence.repair_rounds(session.served)  # the decoys' repair round is noised too
    return plan_epsilon(plan, defence.delta, len(session.layers), rounds)
