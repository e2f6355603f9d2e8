"""The merge experiment (CollabEdit's Fig. 1): methods × variants × edit counts over P parties, on one machine.

For each variant and each number of edits N (the first N requests, split among the parties as
``split_parties`` does), every method edits the model from the same start and is evaluated; the model is then
restored. With ``holders`` H > 1 every fact is held by H parties (party p holds blocks p, p+1, …, p+H−1 mod P of
the N distinct facts), as when institutions edit the same fact without dedupe: Global-Edit then edits the H·N
requests of every party together, which is what the sum of the parties' statistics equals.

Targets z* are optimised once per request through the engine's target cache (they depend only on the unedited
model), so methods, variants and edit counts share them. Each finished cell is written to
``<out>/cells/<key>.json`` (key: a digest of everything the cell depends on), so an interrupted grid resumes
where it stopped; Global-Edit's ΔW per cell is kept beside it (float64 safetensors) to compare the others with.

Rows (``ROW_FIELDS``): the probability metrics (CounterFact: efficacy, generalization, specificity; zsRE:
efficacy, generalization, locality), ``score`` (their harmonic mean, None when one is missing), the greedy
generation metrics, fluency on a fixed sample, ΔW's relative difference from Global-Edit, and ``z_reach``: how
far the edited model's state at the last edited layer moved toward z*, (h − h₀)·(z* − h₀)/‖z* − h₀‖², mean over
requests (1: reached; the oneshot variant overshoots). Each row also keeps its per-record values
(``per_record``: the margins and z_reach of every evaluated fact, in the same order for every method), from which
the report gives bootstrap intervals over records and paired differences between methods (``advantage``: where
collab beats a naive merge by ≥ 0.10 in |1 − z_reach| or ≥ 1 nat of target or paraphrase margin).

MALMEN (``Context.hypernet`` set): the same grid with ``editing.malmen.edit.run_malmen_edit`` (global, collab,
ta/sa/ties; oneshot only, every row from the unedited model), no targets, covariance or templates, so no z_reach;
its cells are keyed by the backend and the hypernetwork's digest instead of MEMIT's hyper-parameters, C and
templates (a MEMIT cell's key is unchanged).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from secure_collab.cache import digest_json
from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.keys import block_outputs
from secure_collab.editing.malmen.edit import statistics_batch
from secure_collab.editing.memit import METHODS, rel_diff_per_layer, restore, run_edit, snapshot, split_parties
from secure_collab.editing.target_cache import cached_targets
from secure_collab.editing.targets import TargetResult
from secure_collab.editing.templates import templates_digest
from secure_collab.evaluation.intervals import bootstrap_ci, paired_ci
from secure_collab.files import temp_beside
from secure_collab.models.loading import LoadedModel

CELL_FORMAT = 2  # 2: rows keep per-record margins and z_reach
ROW_FIELDS = ("method", "variant", "edits", "parties", "edits_per_party", "evaluated", "efficacy", "generalization",
              "specificity", "locality", "score", "target_margin", "paraphrase_margin", "neighbourhood_margin",
              "gen_efficacy", "gen_generalization", "fluency",
              "delta_rel_diff_vs_global", "z_reach", "edit_seconds", "eval_seconds")
NAIVE = ("ta", "sa", "ties", "ta-lockstep", "sa-lockstep", "ties-lockstep")


@dataclass(frozen=True)
class MergeGrid:
    edits: tuple[int, ...]
    parties: int
    methods: tuple[str, ...]
    variants: tuple[str, ...]
    metrics: str = "counterfact"  # or "zsre"
    fluency_requests: int = 10  # fixed sample per cell: the first requests' first generation prompts
    fluency_prompts: int = 2
    fluency_seed: int = 0
    eval_per_party: int = 0  # metrics on each party's first k edits (the same for every method); 0: on all edits
    cached_only: bool = False  # report the cells already finished, compute none (a grid cut short)
    holders: int = 1  # parties holding each fact (dedupe off); 1: every fact at one party

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
        if self.metrics not in ("counterfact", "zsre"):
            raise ValueError("metrics must be 'counterfact' or 'zsre'")
        if self.eval_per_party < 0:
            raise ValueError("eval_per_party must be 0 (every edit) or positive")
        if not self.edits or min(self.edits) < self.parties or self.parties < 1:
            raise ValueError(f"every edit count must be at least the number of parties ({self.parties})")
        if not 1 <= self.holders <= self.parties:
            raise ValueError(f"holders must be between 1 and the number of parties ({self.parties})")


@dataclass
class Context:
    """What every cell shares: the model, the requests, hyper-parameters, covariances and templates."""

    lm: LoadedModel
    requests: list[Request]
    hp: MemitHParams
    covs: dict[int, torch.Tensor]
    templates: list[str]
    cov_digest: str  # identifies the covariances (their cache keys)
    cache: str | os.PathLike[str] | None = None
    say: Callable[[str], None] = field(default=lambda _m: None)
    hypernet: Any = None  # MALMEN's Hypernet: the grid edits with it (hp, covs and templates are then unused)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.hypernet.hp.layers) if self.hypernet is not None else tuple(self.hp.layers)


def detect_metrics(requests: Sequence[Request]) -> str:
    """zsRE when the requests carry zsRE's loc question, else CounterFact."""
    return "zsre" if requests and all("loc" in r.extra for r in requests) else "counterfact"


def _request_digest(requests: Sequence[Request]) -> str:
    return digest_json([{k: v for k, v in asdict(r).items()} for r in requests])


def eval_sample(parties: list[list[Request]], per_party: int) -> list[Request]:
    """The edited requests the metrics are measured on: each party's first ``per_party`` (0: all of them)."""
    return [r for p in parties for r in (p if per_party == 0 else p[:per_party])]


def holder_blocks(n: int, parties: int, holders: int) -> list[list[int]]:
    """Indices of the first ``n`` facts each party holds: ``split_parties``'s contiguous blocks, party p also
    holding the next ``holders`` − 1 parties' blocks (mod P), so every fact is held by exactly ``holders`` parties."""
    blocks = split_parties(list(range(n)), parties)
    return [[i for h in range(holders) for i in blocks[(p + h) % parties]] for p in range(parties)]


def cell_key(ctx: Context, grid: MergeGrid, n: int, variant: str, method: str) -> str:
    if variant == "oneshot":  # every statistic from the unedited model: lockstep and independent are one thing
        method = method.removesuffix("-lockstep")
    dtype = str(next(ctx.lm.model.parameters()).dtype)
    how = ({"backend": "malmen", "hypernet": ctx.hypernet.digest(),  # rows per forward: collab = global in float32
            "row_batch": statistics_batch(ctx.lm, ctx.hypernet)} if ctx.hypernet is not None else
           {"hparams": ctx.hp.with_(variant=variant).to_dict(), "covariance": ctx.cov_digest,
            "templates": templates_digest(ctx.templates)})  # MEMIT: the key it had before backends existed
    return digest_json({"format": CELL_FORMAT, "model": ctx.lm.source_digest, "dtype": dtype,
                        "requests": _request_digest(ctx.requests[:n]), "parties": grid.parties, "method": method,
                        **how, "metrics": grid.metrics,
                        "fluency": [grid.fluency_requests, grid.fluency_prompts, grid.fluency_seed],
                        **({"eval_per_party": grid.eval_per_party} if grid.eval_per_party else {}),
                        **({"holders": grid.holders} if grid.holders > 1 else {})})[:32]


def pre_key(ctx: Context, grid: MergeGrid, evaluated: list[Request]) -> str:
    """The unedited model's cell: the model, the requests evaluated and the metric settings."""
    dtype = str(next(ctx.lm.model.parameters()).dtype)
    return digest_json({"format": CELL_FORMAT, "model": ctx.lm.source_digest, "dtype": dtype,
                        "requests": _request_digest(evaluated), "metrics": grid.metrics,
                        "fluency": [grid.fluency_requests, grid.fluency_prompts, grid.fluency_seed]})[:32]


def z_reaches(lm: LoadedModel, requests: list[Request], targets: TargetResult, hp: MemitHParams) -> list[float]:
    """Per request, (h − h₀)·(z* − h₀)/‖z* − h₀‖² at the last edited layer on the model as it is now."""
    h = block_outputs(lm, requests, hp.layers[-1], hp.request_batch).double()  # (n, d_v)
    h0, z = targets.z_init.double(), targets.z.double()
    want = z - h0
    return ((h - h0) * want).sum(1).div(want.pow(2).sum(1).clamp_min(1e-300)).tolist()


def z_reach(lm: LoadedModel, requests: list[Request], targets: TargetResult, hp: MemitHParams) -> float:
    """Mean over requests of ``z_reaches``: 1 when the state reached z*, above 1 past it."""
    r = z_reaches(lm, requests, targets, hp)
    return sum(r) / len(r)


def measure(ctx: Context, grid: MergeGrid, requests: list[Request], pre: dict | None) -> dict[str, Any]:
    """Every metric of the model as it is now on ``requests`` (``pre``: the unedited cell, for zsRE locality)."""
    from secure_collab.evaluation import (
        MARGINS,
        evaluate,
        evaluate_zsre,
        fluency,
        fluency_prompts,
        generation_metrics,
        loc_predictions,
    )
    from secure_collab.evaluation.counterfact import request_margins

    lm = ctx.lm
    row: dict[str, Any] = {}
    if grid.metrics == "zsre":
        before = pre["loc_predictions"] if pre is not None else loc_predictions(lm.model, lm.tokenizer, requests)
        z = evaluate_zsre(lm.model, lm.tokenizer, requests, before).summary()
        row.update({k: z[k] for k in ("efficacy", "generalization", "locality", "score", "loc_answer_accuracy")})
        row["specificity"] = None
        if pre is None:
            row["loc_predictions"] = before
    else:
        result = evaluate(lm, requests)
        e = result.summary()
        row.update({k: e[k] for k in ("efficacy", "generalization", "specificity", "score", *MARGINS)})
        row["locality"] = None
        per = [request_margins(d) for d in result.details]
        row["per_record"] = {k: [m[k] for m in per] for k in MARGINS}
    row.update(generation_metrics(lm.model, lm.tokenizer, requests).summary())
    prompts = fluency_prompts(requests, grid.fluency_requests, grid.fluency_prompts)
    row["fluency"] = fluency(lm.model, lm.tokenizer, prompts, seed=grid.fluency_seed)
    return row


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    tmp = temp_beside(path)
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def run_merge_grid(ctx: Context, grid: MergeGrid, out: Path) -> dict[str, Any]:
    """Every cell of the grid (cached ones read back), then the summary: rows, pre-edit rows, 10-point drops."""
    from safetensors.torch import load_file, save_file

    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    n_max = max(grid.edits)
    if len(ctx.requests) < n_max:
        raise ValueError(f"{n_max} edits asked for, {len(ctx.requests)} requests given")
    malmen = ctx.hypernet is not None
    if malmen:
        from secure_collab.editing.malmen.edit import METHODS as MALMEN_METHODS

        if grid.variants != ("oneshot",) or any(m not in MALMEN_METHODS for m in grid.methods):
            raise ValueError(f"MALMEN's grid is oneshot only, with methods among {', '.join(MALMEN_METHODS)}")
        targets = None
    else:
        ctx.say(f"targets for {n_max} requests (cached per request)")
        targets = cached_targets(ctx.lm, ctx.requests[:n_max], ctx.hp, ctx.templates, ctx.cache, progress=True)
    rows, pre_rows = [], []
    methods = ["global", *[m for m in grid.methods if m != "global"]]  # global first: the others compare with it
    for n in sorted(grid.edits):
        reqs = ctx.requests[:n]  # the distinct facts
        held = holder_blocks(n, grid.parties, grid.holders)
        parties = [[reqs[i] for i in idx] for idx in held]
        evaluated = eval_sample(split_parties(reqs, grid.parties), grid.eval_per_party)
        pre_path = cells / f"pre-{pre_key(ctx, grid, evaluated)}.json"
        pre = _load_json(pre_path)
        if pre is None and grid.cached_only:
            continue
        if pre is None:
            ctx.say(f"{n} edits: evaluating the unedited model on {len(evaluated)} of them")
            t = time.perf_counter()
            pre = {"edits": n, "evaluated": len(evaluated), **measure(ctx, grid, evaluated, None),
                   "eval_seconds": time.perf_counter() - t}
            _write_json(pre_path, pre)
        pre_rows.append({k: v for k, v in pre.items() if k != "loc_predictions"})
        for variant in grid.variants:
            hp = ctx.hp.with_(variant=variant)
            ref_path = cells / f"{cell_key(ctx, grid, n, variant, 'global')}.deltas.safetensors"
            for method in methods:
                key = cell_key(ctx, grid, n, variant, method)
                path, dpath = cells / f"{key}.json", cells / f"{key}.deltas.safetensors"
                row = _load_json(path)
                if method == "global" and row is not None and not dpath.is_file():
                    row = None  # the comparison needs Global-Edit's ΔW: recompute it
                if row is None and grid.cached_only:
                    continue  # not finished: left out of this report
                if row is None:
                    ctx.say(f"{variant}, {n} edits, {method}: editing")
                    saved = snapshot(ctx.lm, ctx.layers)
                    try:
                        t = time.perf_counter()
                        outcome = _edit(ctx, parties, held, hp, method, targets)
                        t_edit = time.perf_counter() - t
                        ctx.say(f"{variant}, {n} edits, {method}: evaluating")
                        t = time.perf_counter()
                        row = measure(ctx, grid, evaluated, pre)
                        if targets is None:  # MALMEN: no z* to reach
                            row["z_reach"] = None
                        else:
                            reach = z_reaches(ctx.lm, reqs, targets.take(list(range(n))), hp)
                            row["z_reach"] = sum(reach) / len(reach)
                            ev = {id(r) for r in evaluated}
                            row.setdefault("per_record", {})["z_reach"] = [
                                z for r, z in zip(reqs, reach, strict=True) if id(r) in ev]
                        row["eval_seconds"], row["edit_seconds"] = time.perf_counter() - t, t_edit
                    finally:
                        restore(ctx.lm, saved)
                    deltas = {k: v.detach().cpu().contiguous() for k, v in outcome.deltas.items()}
                    if method == "global":
                        save_file({str(k): v for k, v in deltas.items()}, str(dpath))
                    ref = {int(k): v for k, v in load_file(str(ref_path)).items()}
                    per_layer = rel_diff_per_layer(deltas, ref)
                    row["delta_rel_diff_vs_global"] = max(per_layer.values())
                    row["delta_rel_diff_per_layer"] = {str(k): v for k, v in per_layer.items()}
                    row["delta_norm"] = {str(k): float(v.norm()) for k, v in deltas.items()}
                    _write_json(path, row)
                rows.append({"method": method, "variant": variant, "edits": n, "parties": grid.parties,
                             "holders": grid.holders, "edits_per_party": [len(p) for p in parties],
                             "evaluated": len(evaluated), **row, **intervals(row)})
    rows = [r for r in rows if r["method"] in grid.methods]
    return {"rows": rows, "pre": pre_rows, "falls_10_points": ten_point_drops(rows, grid),
            "advantage": collab_advantage(rows, grid)}


def _edit(ctx: Context, parties: list[list[Request]], held: list[list[int]], hp: MemitHParams, method: str,
          targets: TargetResult | None) -> Any:
    """One cell's edit of ``ctx.lm`` in place (MEMIT with the cached targets, or MALMEN); its ``deltas``."""
    if ctx.hypernet is not None:
        from secure_collab.editing.malmen.edit import run_malmen_edit

        return run_malmen_edit(ctx.lm, parties, ctx.hypernet, method)
    assert targets is not None
    sizes = [sum(map(len, held))] if method == "global" else [len(p) for p in parties]
    pt = targets.take([i for idx in held for i in idx]).split(sizes)
    return run_edit(ctx.lm, parties, hp, ctx.covs, method, ctx.templates, ctx.say, pt)


CONTINUOUS = ("target_margin", "paraphrase_margin", "neighbourhood_margin", "z_reach")


def intervals(row: dict) -> dict[str, list[float]]:
    """95 % bootstrap intervals over the evaluated records of each continuous metric: ``<metric>_ci`` = [lo, hi]."""
    per = row.get("per_record") or {}
    out = {}
    for k in CONTINUOUS:
        xs = [x for x in per.get(k, []) if x is not None]
        if xs:
            _, lo, hi = bootstrap_ci(xs)
            out[f"{k}_ci"] = [lo, hi]
    return out


def collab_advantage(rows: list[dict], grid: MergeGrid) -> list[dict]:
    """Per naive merge, variant and edit count: collab's advantage on the same records, with paired 95 % intervals
    over records. ``reach``: |1 − z_reach| of the merge minus collab's (positive: collab lands nearer z*);
    ``target`` and ``paraphrase``: collab's margin minus the merge's (nats). ``beats``: the reach advantage is
    ≥ 0.10 or a margin advantage ≥ 1 nat (the issue's threshold), on the means."""
    by = {(r["method"], r["variant"], r["edits"]): r for r in rows}
    out = []
    for variant in grid.variants:
        for method in [m for m in grid.methods if m in NAIVE]:
            for n in sorted(grid.edits):
                a, b = by.get(("collab", variant, n)), by.get((method, variant, n))
                if a is None or b is None or "per_record" not in a or "per_record" not in b:
                    continue
                pa, pb = a["per_record"], b["per_record"]
                entry: dict[str, Any] = {"method": method, "variant": variant, "edits": n}
                if pa.get("z_reach") and pb.get("z_reach"):
                    entry["reach"] = paired_ci([abs(1 - z) for z in pb["z_reach"]],
                                               [abs(1 - z) for z in pa["z_reach"]])
                for k in ("target_margin", "paraphrase_margin"):
                    if pa.get(k) and pb.get(k):
                        entry[k.removesuffix("_margin")] = paired_ci(pa[k], pb[k])
                entry["beats"] = (entry.get("reach", (0.0,))[0] >= 0.10 - 1e-12
                                  or any(entry.get(k, (0.0,))[0] >= 1.0 - 1e-12 for k in ("target", "paraphrase")))
                out.append(entry)
    return out


def ten_point_drops(rows: list[dict], grid: MergeGrid) -> list[dict]:
    """Per naive merge and variant: the smallest edit count whose Score is ≥ 0.10 below collab's, or None with the
    largest count measured."""
    out = []
    by = {(r["method"], r["variant"], r["edits"]): r for r in rows}
    for variant in grid.variants:
        for method in [m for m in grid.methods if m in NAIVE]:
            hit, largest = None, None
            for n in sorted(grid.edits):
                a, b = by.get(("collab", variant, n)), by.get((method, variant, n))
                if a is None or b is None or a["score"] is None or b["score"] is None:
                    continue
                largest = n
                if a["score"] - b["score"] >= 0.10 - 1e-12:  # 10 points, not lost to float rounding
                    hit = n
                    break
            per_party = None if hit is None else -(-hit // grid.parties)
            out.append({"method": method, "variant": variant, "edits": hit, "edits_per_party_max": per_party,
                        "largest_measured": largest})
    return out
