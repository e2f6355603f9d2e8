"""The statistics' compute on this machine: solve, covariance, target optimisation, keys, the core's matmul rate.

(d) ``solve``: ΔW = B (λC + G)⁻¹ by our Cholesky solve (``solve_update``) against an explicit inverse, float64,
    on a random second moment with a decaying spectrum and a condition number of ~1e5-1e6 (``_spd_problem``),
    timing and the relative residual ‖ΔW A − B‖ / ‖B‖ of each.
(e) ``covariance``: tokens per second of the covariance pass, the forward stopped at the last edited layer's
    down-projection against the full forward (to the logits).
(f) ``targets``: seconds per edit of the target optimisation, replaying only the positions δ can change (now)
    against every position (before), one request per batch as a CPU party runs it, with the z* difference,
    the steps and the FLOPs per edit (torch's FLOP counter) against the core's measured matmul rate;
    ``keys``: keys of all requests one request per forward against all requests in one batch.
(g) ``backends``: a party's statistics per edit, MEMIT (targets and every layer's G, B) against MALMEN (rows,
    hypernetwork, UᵀU and DᵀU), on the same requests.
Everything runs in turn, A B A B, and reports medians with their spread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from secure_collab.bench.timing import interleaved, paired_ratio, summary


def _spd_problem(d: int, d_v: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(C, G, B): C = X Xᵀ/m + ε·I from m = d/4 keys with decaying scales (building a full-rank second moment
    from more keys costs more than the solve at d = 6400), G = K Kᵀ and B = R Kᵀ of 16 edits, float64."""
    g = torch.Generator().manual_seed(seed)
    m = max(16, d // 4)
    x = torch.randn(d, m, generator=g, dtype=torch.float64) * torch.logspace(0, -2, m, dtype=torch.float64)
    cov = x @ x.T / m  # (d, d), rank m
    cov += 1e-5 * float(cov.diagonal().mean()) * torch.eye(d, dtype=torch.float64)  # full rank, cond ~1e5-1e6
    k = torch.randn(d, 16, generator=g, dtype=torch.float64)  # (d, n) keys of 16 edits
    b = torch.randn(d_v, 16, generator=g, dtype=torch.float64) @ k.T  # (d_v, d) R Kᵀ
    return cov, k @ k.T, b


def _solve_one(d: int, d_v: int, lam: float, reps: int) -> dict[str, Any]:
    from secure_collab.editing.solve import solve_update

    cov, g, b = _spd_problem(d, d_v)
    a = lam * cov + g

    def inverse() -> torch.Tensor:
        return b @ torch.linalg.inv(a)  # what MEMIT's reference code does; never used by the engine

    times, last = interleaved({"cholesky": lambda: solve_update(b, g, cov, lam), "inverse": inverse}, reps)
    resid = {k: float((v @ a - b).norm() / b.norm()) for k, v in last.items()}
    return {"d_k": d, "d_v": d_v, "condition_number": float(torch.linalg.cond(a)),
            "cholesky_seconds": summary(times["cholesky"]), "inverse_seconds": summary(times["inverse"]),
            "inverse_over_cholesky": paired_ratio(times["inverse"], times["cholesky"]),
            "cholesky_rel_residual": resid["cholesky"], "inverse_rel_residual": resid["inverse"]}


def bench_solve(dims: tuple[int, ...], reps: int, lam: float = 1000.0, d_v: int = 576) -> dict[str, Any]:
    """(d) Cholesky solve against the explicit inverse at each d_k."""
    return {str(d): _solve_one(d, d_v, lam, reps) for d in dims}


def bench_covariance(lm: Any, layers: tuple[int, ...], tokens: int, reps: int) -> dict[str, Any]:
    """(e) Covariance tokens per second, forward stopped after the last needed layer vs the full forward."""
    from secure_collab.covariance import accumulate_layer_moments, corpus_texts
    from secure_collab.data.corpus import open_corpus
    from secure_collab.models.specs import n_layers

    texts = corpus_texts(open_corpus(None), 0)
    used: dict[str, int] = {}

    def run(stop: bool) -> Callable[[], None]:
        def go() -> None:
            _, used["stopped" if stop else "full"] = accumulate_layer_moments(lm, layers, texts, tokens,
                                                                               progress=False, stop_early=stop)
        return go

    times, _ = interleaved({"stopped": run(True), "full": run(False)}, reps)
    rate = {k: [used[k] / t for t in v] for k, v in times.items()}
    return {"tokens": used["stopped"], "layers": list(layers), "depth": n_layers(lm.model, lm.spec),
            "stopped_tokens_per_second": summary(rate["stopped"]), "full_tokens_per_second": summary(rate["full"]),
            "speedup": paired_ratio(times["full"], times["stopped"])}


def matmul_rate(reps: int = 5) -> dict[str, Any]:
    """The core's float32 matmul rate (GFLOP/s): a square 1024 product, and the shapes target optimisation
    spends its time in (a window's tokens through an MLP projection; a few positions through the unembedding)."""
    import time

    shapes = {"square_1024": (1024, 1024, 1024), "window_mlp": (16, 576, 1536), "unembedding": (8, 576, 49152)}
    out: dict[str, Any] = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        inner = max(1, int(2e8 / (2 * m * k * n)))
        rates = []
        for _ in range(reps):
            start = time.perf_counter()
            for _ in range(inner):
                a @ b
            rates.append(2 * m * k * n * inner / (time.perf_counter() - start) / 1e9)
        out[name] = {"shape": [m, k, n], "gflops": summary(rates)}
    return out


def target_flops(lm: Any, request: Any, hp: Any, templates: list[str], window: bool) -> float:
    """FLOPs (torch's counter: matmuls, attention) of optimising one request's target."""
    from torch.utils.flop_counter import FlopCounterMode

    from secure_collab.editing.targets import compute_targets

    with FlopCounterMode(display=False) as counter:
        compute_targets(lm, [request], hp.with_(request_batch=1), templates, window=window)
    return float(counter.get_total_flops())


def bench_targets(lm: Any, requests: list, hp: Any, templates: list[str], reps: int,
                  flop_edits: int = 0) -> dict[str, Any]:
    """(f) Seconds per edit of the target optimisation, now (windowed replay) against before (every position);
    with ``flop_edits``, the FLOPs per edit of the first so many requests and the rate each variant achieves."""
    from secure_collab.editing.targets import compute_targets

    hp1 = hp.with_(request_batch=1)  # one request per batch, as a party on a CPU runs it
    times, last = interleaved({
        "before": lambda: compute_targets(lm, requests, hp1, templates, window=False),
        "after": lambda: compute_targets(lm, requests, hp1, templates, window=True),
    }, reps)
    n = len(requests)
    per_edit = {k: [t / n for t in v] for k, v in times.items()}
    before, after = last["before"], last["after"]
    rel = ((after.z - before.z).norm(dim=1) / before.z.norm(dim=1)).tolist()
    out: dict[str, Any] = {
        "edits": n, "device": str(lm.device), "threads": torch.get_num_threads(),
        "before_seconds_per_edit": summary(per_edit["before"]), "after_seconds_per_edit": summary(per_edit["after"]),
        "speedup": paired_ratio(times["before"], times["after"]),
        "steps_before": before.steps, "steps_after": after.steps, "same_steps": before.steps == after.steps,
        "z_rel_diff_max": max(rel), "loss_before": before.loss, "loss_after": after.loss,
    }
    if flop_edits:
        sample = requests[:flop_edits]
        for name, window in (("before", False), ("after", True)):
            gflop = sum(target_flops(lm, r, hp, templates, window) for r in sample) / len(sample) / 1e9
            out[f"gflop_per_edit_{name}"] = gflop
            out[f"achieved_gflops_{name}"] = gflop / out[f"{name}_seconds_per_edit"]["median"]
        out["flop_edits"] = len(sample)
    return out


def bench_keys(lm: Any, requests: list, hp: Any, templates: list[str], reps: int) -> dict[str, Any]:
    """(f) Keys at the first edited layer: one request per forward against every request in one batch."""
    from secure_collab.editing.keys import compute_keys

    layer = hp.layers[0]
    times, last = interleaved({
        "one_at_a_time": lambda: compute_keys(lm, requests, layer, templates, request_batch=1),
        "batched": lambda: compute_keys(lm, requests, layer, templates, request_batch=len(requests)),
    }, reps)
    n = len(requests)
    diff = float(((last["batched"] - last["one_at_a_time"]).norm(dim=1) / last["one_at_a_time"].norm(dim=1)).max())
    return {"edits": n, "layer": layer, "device": str(lm.device),
            "one_at_a_time_seconds_per_edit": summary([t / n for t in times["one_at_a_time"]]),
            "batched_seconds_per_edit": summary([t / n for t in times["batched"]]),
            "one_at_a_time_over_batched": paired_ratio(times["one_at_a_time"], times["batched"]),
            "key_rel_diff_max": diff}


def bench_backends(lm: Any, requests: list, hp: Any, templates: list[str], hypernet: Any,
                   reps: int) -> dict[str, Any]:
    """(g) A party's statistics per edit, MEMIT against MALMEN, on the same requests and core, in turn.

    MEMIT: the targets z* (windowed optimisation, one request per batch as a CPU party runs it, no cache) and
    (G, B) at every edited layer on the unedited model (the oneshot order; sequential costs the same passes).
    MALMEN: one forward and backward pass per edit, the hypernetwork and (UᵀU, DᵀU) at its layers
    (``party_statistics``). Nothing is read from a cache in either."""
    from secure_collab.editing.malmen.edit import party_statistics
    from secure_collab.editing.memit import current_outputs, party_layer_stats
    from secure_collab.editing.targets import compute_targets

    hp1 = hp.with_(request_batch=1)

    def memit() -> Any:
        z = compute_targets(lm, requests, hp1, templates, window=True).z
        cur = current_outputs(lm, requests, hp1)
        return {layer: party_layer_stats(lm, requests, z, layer, hp1, templates, cur=cur) for layer in hp.layers}

    times, _ = interleaved({"memit": memit, "malmen": lambda: party_statistics(lm, hypernet, requests)}, reps)
    n = len(requests)
    return {"edits": n, "device": str(lm.device), "threads": torch.get_num_threads(),
            "memit_layers": list(hp.layers), "malmen_layers": list(hypernet.hp.layers),
            "hypernet_digest": hypernet.digest(),
            "memit_seconds_per_edit": summary([t / n for t in times["memit"]]),
            "malmen_seconds_per_edit": summary([t / n for t in times["malmen"]]),
            "memit_over_malmen": paired_ratio(times["memit"], times["malmen"])}
