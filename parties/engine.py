"""The editing engine behind a party's network loop: statistics per (round, layer), ΔW application, report.

z* is optimised once per round on the model as it is at the round's start (and kept in the target cache under
the cache directory, keyed by the weights, the request and the target hyper-parameters: a session run again, in
another protection mode or after a failure, reuses them; ``target_cache=False`` keeps them in memory only); in
the sequential variant each
layer's keys and residuals come from the model with the earlier layers' ΔW applied, in the oneshot variant
all layers' statistics come from the round's starting model (the network loop asks for them together).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secure_collab.editing.hparams import auto_request_batch
from secure_collab.editing.memit import current_outputs, party_layer_stats
from secure_collab.editing.session import rounds_of, session_hparams
from secure_collab.editing.target_cache import cached_targets
from secure_collab.editing.targets import TargetResult, compute_targets
from secure_collab.editing.templates import context_templates, templates_digest
from secure_collab.models.specs import add_to_down_weight, n_layers


class PartyEditor:
    def __init__(self, session: Any, requests: list, *, device: str | None = None, cache: Path | None = None,
                 dtype: str | None = None, log=None, allow_download: bool = False, progress: bool = True,
                 target_cache: bool = True) -> None:
        from secure_collab.evaluation import evaluate
        from secure_collab.models import load_model
        from secure_collab.preflight import check_model, check_templates

        self.s, self.log = session, log or logging.getLogger("party").info
        self.progress = progress
        check_templates(session)
        self.cache, self.target_cache = cache, target_cache
        self.lm = load_model(session.model, device=device, cache=cache,
                             dtype=dtype or session.hparams.get("dtype", "auto"), allow_download=allow_download)
        check_model(self.lm, session)  # before target optimisation: a mismatch fails in one line, at once
        self.hp = session_hparams(session.model, n_layers(self.lm.model, self.lm.spec), session.layers,
                                  session.variant, session.template_seed, session.hparams,
                                  auto_request_batch(self.lm.device.type))
        given = session.hparams.get("context_templates")
        self.templates = list(given) if given else context_templates(
            self.lm, self.hp.n_templates, self.hp.template_length, self.hp.template_seed, cache)
        self.requests = requests
        self.rounds = rounds_of(requests, session.rounds)
        self.targets: dict[int, TargetResult] = {}
        self.oneshot_cur: dict[int, torch.Tensor] = {}  # round -> h at the last layer, unedited (oneshot only)
        self.applied: dict[tuple[int, int], np.ndarray] = {}
        self.compute_seconds = 0.0
        self.pre = evaluate(self.lm, requests)

    def compute_statistics(self, round: int, layer: int) -> dict[str, Any]:
        """{"G": K Kᵀ (d_k, d_k), "B": R Kᵀ (d_v, d_k)} float64 and "N": the edit count, for this party only."""
        t = time.perf_counter()
        reqs = self.rounds[round]
        if not reqs:  # nothing to edit this round: contribute zeros (the sums cannot tell; the answer time can,
            # unless session.answer_pad_s hides it)
            d_v, d_k = self.s.d_v, self.s.d_k
            out = {"G": np.zeros((d_k, d_k)), "B": np.zeros((d_v, d_k)), "N": 0}
        else:
            if round not in self.targets:
                self.log(f"round {round}: optimising targets for {len(reqs)} requests")
                self.targets[round] = (
                    cached_targets(self.lm, reqs, self.hp, self.templates, self.cache, progress=self.progress)
                    if self.target_cache else
                    compute_targets(self.lm, reqs, self.hp, self.templates, progress=self.progress))
            cur = None
            if self.hp.variant == "oneshot":  # every layer of the round from the round's starting model
                if round not in self.oneshot_cur:
                    self.oneshot_cur[round] = current_outputs(self.lm, reqs, self.hp)
                cur = self.oneshot_cur[round]
            stats = party_layer_stats(self.lm, reqs, self.targets[round].z, layer, self.hp, self.templates, cur)
            out = {"G": stats.g.cpu().numpy(), "B": stats.b.cpu().numpy(), "N": len(reqs)}  # packed on the wire
        self.compute_seconds += time.perf_counter() - t
        return out

    def apply_delta(self, layer: int, delta: np.ndarray) -> None:
        key = (sum(1 for _, lay in self.applied if lay == layer), layer)  # releases arrive round by round
        add_to_down_weight(self.lm.model, self.lm.spec, layer, torch.from_numpy(np.ascontiguousarray(delta)))
        self.applied[key] = delta

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
                  "target_loss": [x for t in self.targets.values() for x in t.loss]}
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
