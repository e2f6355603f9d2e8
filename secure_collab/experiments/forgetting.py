"""Forgetting over rounds: how much of round 1's edits survive the later rounds, one run per update rule.

P parties bring E new requests each round for R rounds (``assign``: round r, party p gets the next block of
the request list). Every rule starts from the same unedited model; each round's targets are optimised on the
model as that rule left it (cached per model state), the parties' statistics are summed and solved by the rule
with its cross-round state, and after each round the edits so far are evaluated. Work is resumable: after each
round the edited layers' weights, the cross-round state and the round's metrics are written under the cache
(``experiments/forgetting-<digest>/<rule>/``); a rerun continues after the last finished round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.keys import compute_keys
from secure_collab.editing.memit import restore, snapshot
from secure_collab.editing.rounds import CrossRound, edit_round
from secure_collab.editing.rules import UPDATE_RULES
from secure_collab.editing.target_cache import cached_targets, weights_digest
from secure_collab.editing.templates import templates_digest
from secure_collab.evaluation import evaluate
from secure_collab.experiments.common import atomic_json, metrics, run_dir
from secure_collab.models.loading import LoadedModel
from secure_collab.models.specs import down_weight


@dataclass(frozen=True)
class ForgettingPlan:
    rounds: int = 4
    parties: int = 3
    edits_per_party: int = 4
    rules: tuple[str, ...] = UPDATE_RULES

    def __post_init__(self) -> None:
        if min(self.rounds, self.parties, self.edits_per_party) < 1:
            raise ValueError("rounds, parties and edits per party must be >= 1")
        unknown = set(self.rules) - set(UPDATE_RULES)
        if unknown or not self.rules:
            raise ValueError(f"unknown update rules {sorted(unknown)}; choose from {UPDATE_RULES}")

    @property
    def needed(self) -> int:
        return self.rounds * self.parties * self.edits_per_party


def assign(requests: Sequence[Request], plan: ForgettingPlan) -> list[list[list[Request]]]:
    """rounds[r][p]: party p's requests in round r, in order of the list (round-major, then party)."""
    if len(requests) < plan.needed:
        raise ValueError(f"{plan.rounds} rounds x {plan.parties} parties x {plan.edits_per_party} edits need "
                         f"{plan.needed} requests, got {len(requests)}")
    e = plan.edits_per_party
    return [[list(requests[(r * plan.parties + p) * e:(r * plan.parties + p + 1) * e]) for p in range(plan.parties)]
            for r in range(plan.rounds)]


def _save_weights(lm: LoadedModel, layers: Sequence[int], state: CrossRound, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {f"w.{lay}": down_weight(lm.model, lm.spec, lay).detach().contiguous().cpu() for lay in layers}
    tensors |= {f"past.{lay}": g.contiguous().cpu() for lay, g in state.past_g.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def _load_weights(lm: LoadedModel, layers: Sequence[int], path: Path) -> CrossRound:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with torch.no_grad():
        for lay in layers:
            down_weight(lm.model, lm.spec, lay).copy_(tensors[f"w.{lay}"])
    return CrossRound({int(k.split(".")[1]): v for k, v in tensors.items() if k.startswith("past.")})


def _run_rule(lm: LoadedModel, rounds: list[list[list[Request]]], hp: MemitHParams, covs: dict[int, torch.Tensor],
              templates: list[str], work: Path, cache: Any, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """One rule from the unedited model (the caller restores it); returns each round's metrics."""
    work.mkdir(parents=True, exist_ok=True)
    done = [r for r in range(len(rounds)) if (work / f"round-{r}.json").is_file()]
    first = max(done) + 1 if done else 0
    # round 1's keys on the unedited model: how much each round's ΔW moves them is the mechanism in question
    first_reqs = [req for p in rounds[0] for req in p]
    keys1 = {lay: compute_keys(lm, first_reqs, lay, templates, hp.request_batch).T.double()  # (d_k, n)
             for lay in hp.layers}
    state = CrossRound()
    if first > 0:
        state = _load_weights(lm, hp.layers, work / "weights.safetensors")
        say(f"{hp.update_rule}: resuming after round {first - 1}")
    bases = {lay: hp.rule.basis(covs[lay]) for lay in hp.layers}
    for r in range(first, len(rounds)):
        t = time.perf_counter()
        parties = [p for p in rounds[r] if p]
        say(f"{hp.update_rule}: round {r + 1}/{len(rounds)}: targets on the model as it is")
        digest = weights_digest(lm)
        tr = [cached_targets(lm, p, hp, templates, cache=cache, model_digest=digest) for p in parties]
        res = edit_round(lm, parties, [x.z for x in tr], hp, covs, templates, state, bases=bases, say=say)
        state.add(res.g_sums)
        so_far = [req for rnd in rounds[:r + 1] for p in rnd for req in p]
        details = evaluate(lm, so_far).details
        n0 = sum(len(p) for p in rounds[0])
        start = sum(len(p) for rnd in rounds[:r] for p in rnd)
        row: dict[str, Any] = {"rule": hp.update_rule, "round": r + 1, "first_round": metrics(details[:n0]),
               "this_round": metrics(details[start:]), "so_far": metrics(details),
               "target_loss": [x for t_ in tr for x in t_.loss],
               "delta_norm": {str(k): float(v.norm()) for k, v in res.deltas.items()},
               # ‖ΔW_l K₁‖_F: how far this round's update moves round 1's keys (per layer)
               "moves_round1_keys": {str(k): float((v.double() @ keys1[k]).norm()) for k, v in res.deltas.items()},
               "seconds": round(time.perf_counter() - t, 1)}
        _save_weights(lm, hp.layers, state, work / "weights.safetensors")
        atomic_json(work / f"round-{r}.json", row)
        say(f"{hp.update_rule}: round {r + 1}: round-1 efficacy {row['first_round']['efficacy']:.3f}, this round "
            f"{row['this_round']['efficacy']:.3f} ({row['seconds']} s)")
    import json

    return [json.loads((work / f"round-{r}.json").read_text()) for r in range(len(rounds))]


def run_forgetting(lm: LoadedModel, requests: Sequence[Request], hp: MemitHParams, covs: dict[int, torch.Tensor],
                   templates: list[str], plan: ForgettingPlan, *, cache: Any = None,
                   say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Every rule of ``plan`` over the same rounds; returns the JSON-ready result (``retention``, ``rounds``)."""
    rounds = assign(requests, plan)
    used = [req for rnd in rounds for p in rnd for req in p]
    key = {"format": 2, "model": lm.source_digest, "dtype": str(next(lm.model.parameters()).dtype), "templates":
           templates_digest(templates), "requests": [[r.case_id, r.subject, r.prompt, r.target_new] for r in used],
           "plan": [plan.rounds, plan.parties, plan.edits_per_party],
           "hparams": hp.with_(update_rule="memit-static").to_dict(),
           "covariance": {str(k): float(v.trace()) for k, v in covs.items()}}
    root = run_dir("forgetting", key, cache)
    saved = snapshot(lm, hp.layers)
    n0 = sum(len(p) for p in rounds[0])
    pre = metrics(evaluate(lm, used).details[:n0])
    rows: list[dict[str, Any]] = []
    for rule in plan.rules:
        rule_hp = hp.with_(update_rule=rule)
        try:
            rows += _run_rule(lm, rounds, rule_hp, covs, templates, root / rule, cache, say)
        finally:
            restore(lm, saved)
    last = {rule: next(r for r in rows if r["rule"] == rule and r["round"] == plan.rounds) for rule in plan.rules}
    for row in rows:  # later rounds' push on round 1's keys, relative to round 1's own
        own = next(r for r in rows if r["rule"] == row["rule"] and r["round"] == 1)["moves_round1_keys"]
        row["disturbance"] = sum(row["moves_round1_keys"].values()) / max(sum(own.values()), 1e-300)
    return {
        "experiment": "forgetting", "model": lm.name, "plan": asdict(plan), "method": "collab",
        "variant": hp.variant, "hparams": hp.to_dict(), "covariance_tokens": hp.mom2_tokens,
        "records": [r.case_id for r in used], "pre_first_round": pre,
        "retention": {rule: row["first_round"]["efficacy"] for rule, row in last.items()},
        "retention_generalization": {rule: row["first_round"]["generalization"] for rule, row in last.items()},
        "final_so_far": {rule: row["so_far"] for rule, row in last.items()},
        "rounds": rows, "work_dir": str(root),
    }
