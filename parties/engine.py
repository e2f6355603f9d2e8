"""The editing engine behind a party's network loop: statistics per (round, layer), ΔW application, report.

z* is optimised once per round on the model as it is at the round's start (and kept in the target cache under
the cache directory, keyed by the weights, the request and the target hyper-parameters: a session run again, in
another protection mode or after a failure, reuses them; ``target_cache=False`` keeps them in memory only); in
the sequential variant each
layer's keys and residuals come from the model with the earlier layers' ΔW applied, in the oneshot variant
all layers' statistics come from the round's starting model (the network loop asks for them together).

With ``session.defence`` camouflage on, every key and residual is camouflaged before G and B are formed
(``editing.defences.PartyCamouflage``: decoy subjects drawn once per session by the party's CSPRNG, a fresh mix per
key and layer); the solver and everything after it see only the camouflaged statistics. With noise on
(``editing.noise.PartyNoise``), the (camouflaged) keys and residuals are clipped to the session's declared bounds and
every value of G and B gets this party's discrete Gaussian, drawn from AES-CTR words under a secret key made once per
session (a retried step gets the same noise); an empty round's zeros get it too. With decoys on
(``editing.decoys``), R public decoy edits per request of the round's final plan (after withholding, dedupe and the
solver's verdicts, so they never get a tag, a verdict or a withholding check) are drawn once per round, on the
model as it is at the round's start, by the same generator, and added to the keys and residuals before camouflage
and noise; N counts them (N = (1 + R)·n, which the solver expects: R is the session's setting).

A party over several processes (``shard``, ``secure_collab.parallel``; started by ``parties.workers``): every worker
holds the model and this class with the same requests and runs the same calls in the same order (worker 0 tells the
others which, ``parties.workers``); each optimises the targets of its share of the requests and computes its share
of the keys and residuals; the targets are gathered exactly and (G, B) summed in float64 before the noise. The
camouflage and the decoys draw from one generator in request order, so they are refused with more than one worker.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secure_collab.editing.augment import augmented_requests
from secure_collab.editing.defences import PartyCamouflage, parse_defence
from secure_collab.editing.hparams import auto_request_batch
from secure_collab.editing.memit import current_outputs, party_layer_stats
from secure_collab.editing.noise import PartyNoise, noise_source, session_noise_plan
from secure_collab.editing.session import requests_by_round, session_hparams
from secure_collab.editing.statistics import LayerStats
from secure_collab.editing.target_cache import cached_targets
from secure_collab.editing.targets import TargetResult, compute_targets
from secure_collab.editing.templates import context_templates, templates_digest
from secure_collab.models.specs import add_to_down_weight, n_layers
from secure_collab.overlap import fact_inputs
from secure_collab.parallel import SINGLE, Shard


class PartyEditor:
    def __init__(self, session: Any, requests: list, *, device: str | None = None, cache: Path | None = None,
                 dtype: str | None = None, log=None, allow_download: bool = False, progress: bool = True,
                 target_cache: bool = True, rounds: list[list] | None = None,
                 defence_rng: random.Random | None = None, shard: Shard = SINGLE,
                 device_map: str | None = None) -> None:
        """``requests``: this party's requests; ``rounds``: the same grouped by round (default: by their
        ``round`` field, else contiguous blocks; see ``requests_by_round``); ``target_cache``: z* read from and
        written to the per-request cache (``editing/target_cache.py``); ``defence_rng``: the camouflage's
        randomness (default ``random.SystemRandom()``, a CSPRNG: the decoys are this party's secret; tests pass
        a seeded ``random.Random``) and the key of the noise's words (default a fresh secret key; for a seeded
        generator a key derived from its state, ``editing.noise.noise_source``); ``shard``: this worker's place in a
        party over several processes (default: one process); ``device_map``: the model spread over this host's
        GPUs by accelerate (``models.loading.load_model``; default None: all of it on ``device``)."""
        from secure_collab.errors import ConfigError
        from secure_collab.evaluation import evaluate
        from secure_collab.models import load_model
        from secure_collab.preflight import check_model, check_templates

        self.s, self.log = session, log or logging.getLogger("party").info
        self.progress, self.shard = progress, shard
        defence = parse_defence(session.defence)
        if not shard.single and (defence.camouflage or defence.decoys):
            raise ConfigError(f"session {session.id}'s defence {session.defence} draws camouflage or decoys from one "
                              "generator in request order: run this party as one process (no --workers)")
        check_templates(session)
        self.cache, self.target_cache = cache, target_cache
        self.lm = load_model(session.model, device=device, cache=cache,
                             dtype=dtype or session.hparams.get("dtype", "auto"), allow_download=allow_download,
                             device_map=device_map)
        check_model(self.lm, session)  # before target optimisation: a mismatch fails in one line, at once
        self.hp = session_hparams(session.model, n_layers(self.lm.model, self.lm.spec), session.layers,
                                  session.variant, session.template_seed, session.hparams,
                                  auto_request_batch(self.lm.device.type), session.update_rule)
        given = session.hparams.get("context_templates")
        self.templates = list(given) if given else context_templates(
            self.lm, self.hp.n_templates, self.hp.template_length, self.hp.template_seed, cache)
        self.requests = requests
        self.rounds = rounds if rounds is not None else requests_by_round([requests], session.rounds)
        plan = session_noise_plan(defence, session)
        # keyed from the generator's state before the camouflage draws from it (as run_edit does)
        self.noise = PartyNoise(plan, noise_source(defence_rng)) if plan is not None else None
        if plan is not None:
            self.log(f"noise on: keys clipped to ‖k‖ ≤ {plan.key_norm:g}, residuals to ‖r‖ ≤ {plan.residual_norm:g}; "
                     f"each value gets a discrete Gaussian of σ = {plan.sigma:.4g} (grid {plan.grid:.3g})")
        self.camouflage = self._camouflage(defence.camouflage, defence_rng)
        self.decoy_ratio, self.decoy_floor = defence.decoys, defence.decoy_floor
        self.decoys: dict[int, Any] = {}  # round -> decoys.DecoyEdits (this party's secret)
        self.repairs: Any = None  # the repair round's decoys.DecoyEdits, once taken
        self.decoy_rng = defence_rng or random.SystemRandom()
        if self.decoy_ratio:
            self.log(f"decoys on: {self.decoy_ratio} secret public decoy edits per edit, counted in N, each a subject "
                     f"whose answer the model gives with p >= {self.decoy_floor:g}")
        self.targets: dict[int, TargetResult] = {}
        self.plan: dict[int, list] = {}  # round -> the requests this party contributes (targets in self.targets)
        self.withheld: dict[int, list[str]] = {}  # round -> case ids withheld (known to the model, or repeated)
        self.verdicts: dict[int, list] = {}
        self.weights: dict[int, torch.Tensor] = {}  # round -> weight per planned request (1/m for a duplicate)
        self.oneshot_cur: dict[int, torch.Tensor] = {}  # round -> h at the last layer, unedited (oneshot only)
        self.applied: dict[tuple[int, int], np.ndarray] = {}
        self.compute_seconds = 0.0
        self.pre: Any = evaluate(self.lm, requests) if shard.rank == 0 else None  # worker 0 reports

    def _camouflage(self, scale: float, rng: random.Random | None) -> PartyCamouflage | None:
        """The session's camouflage for this party, or None. Made here, before any ΔW is applied: λC is the
        solver's (C of the unedited model over the public corpus, keyed by the base weights' digest in the cache,
        which a solver on the same host shares), and the decoy subjects are drawn once, none of this party's own."""
        if not scale:
            return None
        from secure_collab.covariance import layer_covariances

        covs = layer_covariances(self.lm, self.hp.layers, tokens=self.hp.mom2_tokens,
                                 max_seq_len=self.hp.mom2_max_len, cache=self.cache, progress=self.progress)
        lam_covs = {layer: self.hp.mom2_update_weight * covs[layer] for layer in self.hp.layers}
        cam = PartyCamouflage(scale, lam_covs, rng or random.SystemRandom(), [r.subject for r in self.requests])
        self.log(f"camouflage on: each key is sent mixed with secret public decoy keys, ‖n‖ = {scale:g}‖k‖")
        return cam

    def _targets(self, reqs: list) -> TargetResult:
        """z* on the model as it is now: from the per-request cache (keyed by the weights) unless it is off. Over
        several workers each optimises its share and every worker gets all of them (``_gather_targets``)."""
        rows = self._share(len(reqs))
        mine = reqs[rows.start:rows.stop]
        if not mine:
            local = None
        elif self.target_cache:
            local = cached_targets(self.lm, mine, self.hp, self.templates, self.cache, progress=self.progress)
        else:
            local = compute_targets(self.lm, mine, self.hp, self.templates, progress=self.progress)
        if self.shard.single:
            assert local is not None
            return local
        return _gather_targets(self.shard, len(reqs), rows, local, self.s.d_v, self.lm)

    def _share(self, n: int) -> range:
        """This worker's rows of ``n`` requests: whole forward batches, so each key and target is a lone process's."""
        return self.shard.rows(n, self.hp.request_batch)

    # ---- the round's requests: withheld when known, then the solver's verdicts ------------------------------
    def _round_plan(self, round_: int) -> list:
        """The round's requests after this party's own checks (targets optimised on the model as it is now): a
        request whose residual ‖z* − h‖ / ‖h‖ is at most ``known_residual`` (> 0) is withheld (the model knows it),
        and with dedupe on, a repeat of an earlier request of the round is dropped."""
        if round_ in self.plan:
            return self.plan[round_]
        reqs, keep, seen, withheld = self.rounds[round_], [], set(), []
        if reqs:
            self.log(f"round {round_}: optimising targets for {len(reqs)} requests")
            t = self._targets(reqs)
            rel = (t.z - t.z_init).norm(dim=1) / t.z_init.norm(dim=1).clamp_min(1e-30)
            for j, req in enumerate(reqs):
                fact = fact_inputs(req)
                known = self.s.known_residual > 0 and float(rel[j]) <= self.s.known_residual
                if known or (self.s.dedupe and fact in seen):
                    withheld.append(req.case_id)
                else:
                    keep.append(j)
                    seen.add(fact)
            self.targets[round_] = t.take(keep)
        self.plan[round_], self.withheld[round_] = [reqs[j] for j in keep], withheld
        if withheld:
            self.log(f"round {round_}: withheld {len(withheld)} requests the model already knows or repeats")
        return self.plan[round_]

    def tag_inputs(self, round_: int) -> list[tuple[bytes, bytes]]:
        """The OPRF inputs of the round's requests (``parties.tags.Tagger``)."""
        return [fact_inputs(r) for r in self._round_plan(round_)]

    def decided(self, round_: int, verdicts: list) -> None:
        """Apply the solver's verdicts: drop withdrawn requests (a lost conflict, or this party's own repeat), weigh
        a kept duplicate held by m parties by 1/m, add augmented requests (weight 1) for a won conflict."""
        reqs = self._round_plan(round_)
        keep = [(i, m) for i, action, _, _, m in verdicts if action != "withdraw"]
        extra = [aug for i, action, _, _, _ in verdicts if action == "augment"
                 for aug in augmented_requests(self.lm, reqs[i], self.s.augment, seed=self.s.template_seed + i)]
        self.verdicts[round_] = verdicts
        targets = self.targets[round_].take([i for i, _ in keep]) if keep else None
        if extra:  # optimised on the same model as the round's other targets: nothing was applied in between
            more = self._targets(extra)
            targets = more if targets is None else TargetResult.concat([targets, more])
        self.plan[round_] = [reqs[i] for i, _ in keep] + extra
        self.weights[round_] = torch.tensor([1.0 / m for _, m in keep] + [1.0] * len(extra), dtype=torch.float64)
        if targets is not None:
            self.targets[round_] = targets
        shared = sum(m > 1 for _, m in keep)
        self.log(f"round {round_}: the solver's decision: {len(reqs) - len(keep)} withdrawn, {shared} shared with "
                 f"other holders (weight 1/m), {len(extra)} augmented")

    def compute_statistics(self, round_: int, layer: int) -> dict[str, Any]:
        """{"G": K Kᵀ (d_k, d_k), "B": R Kᵀ (d_v, d_k)} float64 and "N": the edit count, for this party only."""
        t = time.perf_counter()
        if round_ == self.s.repair_round:
            out = self._repair_statistics(round_, layer)
            self.compute_seconds += time.perf_counter() - t
            return out
        reqs = self._round_plan(round_)
        if not reqs:  # nothing to edit this round: contribute zeros (the sums cannot tell; the answer time can,
            # unless session.answer_pad_s hides it)
            # (and the noise, which is counted on: a party with nothing to edit adds it all the same)
            zeros = party_layer_stats(self.lm, [], torch.zeros(0, self.s.d_v, dtype=torch.float64), layer, self.hp,
                                      self.templates, noise=self.noise, round_=round_)
            out = {"G": zeros.g.numpy(), "B": zeros.b.numpy(), "N": 0}
        elif not self.shard.single:
            stats = self._shard_statistics(round_, layer, reqs)
            out = {"G": stats.g.cpu().numpy(), "B": stats.b.cpu().numpy(), "N": len(reqs)}
        else:
            cur = None
            if self.hp.variant == "oneshot":  # every layer of the round from the round's starting model
                if round_ not in self.oneshot_cur:
                    self.oneshot_cur[round_] = current_outputs(self.lm, reqs, self.hp)
                cur = self.oneshot_cur[round_]
            decoys = self._decoys(round_, reqs, cur)
            stats = party_layer_stats(self.lm, reqs, self.targets[round_].z, layer, self.hp, self.templates, cur,
                                      self.weights.get(round_), camouflage=self.camouflage, noise=self.noise,
                                      round_=round_, decoys=decoys)
            n = len(reqs) + (len(decoys) if decoys is not None else 0)
            out = {"G": stats.g.cpu().numpy(), "B": stats.b.cpu().numpy(), "N": n}  # packed on the wire
        self.compute_seconds += time.perf_counter() - t
        return out

    def _shard_statistics(self, round_: int, layer: int, reqs: list) -> LayerStats:
        """(G, B) of the round's plan over several workers: this worker's share, summed over workers in float64, then
        the noise (if on) once on the sum. No camouflage or decoys here (refused at start)."""
        rows = self._share(len(reqs))
        shard = self.shard

        def add_up(s: LayerStats) -> LayerStats:
            g, b = shard.sum([s.g, s.b])
            return LayerStats(g, b)

        mine, w = reqs[rows.start:rows.stop], self.weights.get(round_)
        if not mine:  # fewer requests than workers: this one adds zeros
            zeros = LayerStats(torch.zeros(self.s.d_k, self.s.d_k, dtype=torch.float64),
                               torch.zeros(self.s.d_v, self.s.d_k, dtype=torch.float64))
            total = add_up(zeros)
            return total if self.noise is None else self.noise(total, round_, layer)
        cur = None
        if self.hp.variant == "oneshot":  # this worker's rows, from the round's starting model
            if round_ not in self.oneshot_cur:
                self.oneshot_cur[round_] = current_outputs(self.lm, mine, self.hp)
            cur = self.oneshot_cur[round_]
        return party_layer_stats(self.lm, mine, self.targets[round_].z[rows.start:rows.stop], layer, self.hp,
                                 self.templates, cur, None if w is None else w[rows.start:rows.stop],
                                 noise=self.noise, round_=round_, reduce=add_up)

    def _decoys(self, round_: int, reqs: list, cur: torch.Tensor | None) -> Any:
        """The round's decoy edits (``decoys.make_decoys``), drawn at the round's first statistics, before any of
        its ΔW is applied (the sequential variant's first layer; oneshot's single step), or None when off."""
        if not self.decoy_ratio:
            return None
        if round_ not in self.decoys:
            from secure_collab.editing.decoys import make_decoys

            self.decoys[round_] = make_decoys(self.lm, self.hp, self.decoy_ratio, self.decoy_rng, reqs,
                                              self.targets[round_].z, cur, exclude=[r.subject for r in self.requests],
                                              confidence=self.decoy_floor)
            self.log(f"round {round_}: {len(self.decoys[round_])} decoy edits added to the statistics")
        return self.decoys[round_]

    def _repair_statistics(self, round_: int, layer: int) -> dict[str, Any]:
        """The decoys' repair round (``session.repair_round``): this party's decoys of every round that the
        releases weakened (``decoys.repairs``, taken at the round's first statistics, before any of its ΔW is
        applied), pushed back toward their drawn answers; zeros (and the noise) when none. Camouflaged like any
        statistics; N counts them."""
        from secure_collab.editing.decoys import DecoyEdits, repairs

        if self.repairs is None:
            mine = DecoyEdits.join([self.decoys[r] for r in sorted(self.decoys)], self.s.d_v)
            self.repairs = repairs(self.lm, self.hp, mine, most=self.s.counted_edits)  # N within the declared bound
            self.log(f"decoys: the repair round pushes back {len(self.repairs)} of {len(mine)} decoy answers the "
                     "release weakened")
        stats = party_layer_stats(self.lm, [], torch.zeros(0, self.s.d_v, dtype=torch.float64), layer, self.hp,
                                  self.templates, camouflage=self.camouflage, noise=self.noise, round_=round_,
                                  decoys=self.repairs)
        return {"G": stats.g.cpu().numpy(), "B": stats.b.cpu().numpy(), "N": len(self.repairs)}

    def decoy_check(self) -> dict[str, int]:
        """This party's decoys on the model as it is now (after the session): how many decoy subjects' top-1 answer
        on their prompt is no longer the one they were drawn with and edited toward, after the repair round (which
        pushed back the ones the release weakened, "repaired"). Only the joint edit's cross-talk changes one (the other
        parties' edits of the same relations; docs/privacy.md measures how often). Counts only: the subjects stay
        secret."""
        from secure_collab.editing.decoys import top1

        reqs = [r for d in self.decoys.values() for r in d.requests]
        drawn = [a for d in self.decoys.values() for a in d.answers]
        changed = sum(a != b for a, b in zip(top1(self.lm, reqs), drawn, strict=True))
        repaired = 0 if self.repairs is None else len(self.repairs)
        self.log(f"decoys: {changed} of {len(reqs)} decoy subjects' top-1 answer changed by the joint edit, "
                 f"{repaired} pushed back by the repair round"
                 + (" (cross-talk of the other parties' edits: docs/privacy.md)" if changed else ""))
        return {"edits": len(reqs), "answer_changed": changed, "repaired": repaired}

    def apply_delta(self, layer: int, delta: np.ndarray) -> None:
        key = (sum(1 for _, lay in self.applied if lay == layer), layer)  # releases arrive round by round
        add_to_down_weight(self.lm.model, self.lm.spec, layer, torch.from_numpy(np.ascontiguousarray(delta)))
        self.applied[key] = delta

    def served_queries(self, ask: Any) -> dict[str, Any]:
        """A served release: this party's own efficacy measured through queries to the served model (two forward
        passes of the budget per request, ``evaluation.served.served_efficacy``)."""
        from secure_collab.evaluation.served import served_efficacy

        out = served_efficacy(ask, self.requests, self.s.query_budget)
        self.log(f"served release: efficacy of {out['measured']} of its {len(self.requests)} requests measured "
                 f"through queries ({out['cost']} forward passes of the budget)")
        return {"evaluated": True, **out}

    def finish_served(self, served: dict[str, Any]) -> dict[str, Any]:
        """The report of a served release: no ΔW reached this party (its model is the base model); "post" is what its
        own queries measured, if it asked any (efficacy only: the other metrics would cost more of the budget)."""
        keys = ("efficacy", "generalization", "specificity", "score")
        post = ({"efficacy": served.get("efficacy"), "generalization": None, "specificity": None, "score": None}
                if served.get("evaluated") else None)
        return {"edits": len(self.requests), "pre": {k: self.pre.summary()[k] for k in keys}, "post": post,
                "compute_seconds": round(self.compute_seconds, 3), "templates_digest": templates_digest(self.templates),
                "withheld": {str(r): ids for r, ids in self.withheld.items() if ids},
                "decisions": {str(r): [list(v) for v in vs] for r, vs in self.verdicts.items()},
                "target_loss": [x for t in self.targets.values() for x in t.loss],
                "model": "unchanged: a served release keeps ΔW with the solver's host"
                         + ("" if post else "; not evaluated (no queries of its own asked)")}

    def finish(self, save: Path | None = None, patch: Path | None = None,
               release_sha256: dict[tuple[int, int], str] | None = None) -> dict[str, Any]:
        """Evaluate this party's own edits on the final model; save the model and the applied ΔW if asked
        (``save``: a model directory with patch.safetensors inside; ``patch``: the patch alone)."""
        from secure_collab.evaluation import evaluate
        from secure_collab.patch import write_patch

        post = evaluate(self.lm, self.requests)
        keys = ("efficacy", "generalization", "specificity", "score")
        report = {"edits": len(self.requests), "pre": {k: self.pre.summary()[k] for k in keys},
                  "post": {k: post.summary()[k] for k in keys}, "counts": post.counts,
                  "compute_seconds": round(self.compute_seconds, 3),
                  "templates_digest": templates_digest(self.templates),
                  "withheld": {str(r): ids for r, ids in self.withheld.items() if ids},
                  "decisions": {str(r): [list(v) for v in vs] for r, vs in self.verdicts.items()},
                  "target_loss": [x for t in self.targets.values() for x in t.loss]}
        if self.decoys:
            report["decoys"] = self.decoy_check()
        info = {"method": "collab", **{k: getattr(self.s, k, "") for k in ("variant", "id", "mode")}}
        deltas = {k: torch.from_numpy(np.ascontiguousarray(d)) for k, d in self.applied.items()}
        if patch is not None:
            report["patch"] = str(write_patch(patch, self.lm, deltas, info, release_sha256))
        if save is not None:
            from secure_collab.files import private_dir

            private_dir(save)  # the edited model carries the edits: a 0700 directory
            self.lm.model.save_pretrained(save)  # type: ignore[operator]  # a transformers PreTrainedModel
            self.lm.tokenizer.save_pretrained(save)
            write_patch(Path(save) / "patch.safetensors", self.lm, deltas, info, release_sha256)
            report["saved_model"] = str(save)
        return report


def _gather_targets(shard: Shard, n: int, rows: range, local: TargetResult | None, d_v: int, lm: Any) -> TargetResult:
    """Every worker's share of the targets, gathered exactly (float64 carries float32 and the step counts exactly)."""
    dtype = next(lm.model.parameters()).dtype
    if local is None:
        packed = torch.zeros(0, 2 * d_v + 3, dtype=torch.float64)
    else:
        extra = torch.tensor([local.loss, local.nll, local.steps], dtype=torch.float64).T  # (r, 3)
        packed = torch.cat([local.z.double().cpu(), local.z_init.double().cpu(), extra], dim=1)  # (r, 2 d_v + 3)
    full = shard.gather_rows(n, rows, packed)  # (n, 2 d_v + 3)
    z, z_init = (full[:, :d_v].to(lm.device, dtype), full[:, d_v:2 * d_v].to(lm.device, dtype))
    return TargetResult(z=z, z_init=z_init, loss=full[:, -3].tolist(), nll=full[:, -2].tolist(),
                        steps=[int(x) for x in full[:, -1].tolist()])
