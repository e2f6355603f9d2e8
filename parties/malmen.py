"""The MALMEN engine behind a party's network loop (``session.backend = "malmen"``): (G, B) = (UᵀU, DᵀU) per layer.

Same contract as ``parties.engine.PartyEditor`` (statistics per (round, layer), ΔW application, tags, report), with
MALMEN's statistics instead of MEMIT's (``editing.malmen.edit.party_statistics``): one forward and backward pass
per edit and the session's pinned hypernetwork (checked against ``session.hypernet_digest`` before anything is
computed, ``preflight.session_hypernet``). A session of this backend is one round, oneshot (``config``): every
layer's rows come from the unedited model, all at once, and are kept for the step's layers (a retried step sends
the same statistics). N counts edits, and a duplicate held by m parties weighs 1/m on every row of its edit
(docs/malmen.md: what κ and ρ bound per edit).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from parties.engine import PartyEditor
from secure_collab.editing.augment import augmented_requests
from secure_collab.editing.malmen.edit import party_statistics
from secure_collab.editing.session import requests_by_round
from secure_collab.editing.statistics import LayerStats
from secure_collab.overlap import fact_inputs


class MalmenPartyEditor(PartyEditor):
    def __init__(self, session: Any, requests: list, hypernet: Path, *, device: str | None = None,
                 cache: Path | None = None, dtype: str | None = None, log: Any = None, allow_download: bool = False,
                 progress: bool = True, rounds: list[list] | None = None) -> None:
        """``hypernet``: this site's copy of the session's hypernetwork ([paths] hypernet)."""
        import logging

        from secure_collab.evaluation import evaluate
        from secure_collab.models import load_model
        from secure_collab.preflight import check_model, session_hypernet

        self.s, self.log = session, log or logging.getLogger("party").info
        self.progress, self.cache, self.target_cache = progress, cache, False
        self.lm = load_model(session.model, device=device, cache=cache,
                             dtype=dtype or session.hparams.get("dtype", "auto"), allow_download=allow_download)
        check_model(self.lm, session)
        self.hypernet = session_hypernet(session, hypernet, next(self.lm.model.parameters()).dtype, self.lm.device,
                                         self.lm.source_digest)
        self.log(f"MALMEN: hypernetwork {session.hypernet_digest[:16]}… on layers {list(session.layers)}")
        self.templates: list[str] = []  # MEMIT's context templates: not used by MALMEN
        self.requests = requests
        self.rounds = rounds if rounds is not None else requests_by_round([requests], session.rounds)
        self.noise, self.camouflage = None, None  # refused with MALMEN at load (config._validate_backend)
        self.decoys: dict[int, Any] = {}  # decoys too
        self.targets = {}
        self.plan: dict[int, list] = {}
        self.withheld: dict[int, list[str]] = {}
        self.verdicts: dict[int, list] = {}
        self.weights: dict[int, torch.Tensor] = {}
        self.stats: dict[int, dict[int, LayerStats]] = {}  # round -> layer -> (G, B), all layers at once
        self.applied = {}
        self.compute_seconds = 0.0
        self.pre = evaluate(self.lm, requests)

    def _round_plan(self, round_: int) -> list:
        """The round's requests; with dedupe on, a repeat of an earlier request of the round is dropped (MEMIT's
        known-residual check needs targets: refused with MALMEN at load)."""
        if round_ in self.plan:
            return self.plan[round_]
        keep: list = []
        seen: set = set()
        withheld: list = []  # case ids (a request may have none, as in PartyEditor)
        for req in self.rounds[round_]:
            fact = fact_inputs(req)
            if self.s.dedupe and fact in seen:
                withheld.append(req.case_id)
            else:
                keep.append(req)
                seen.add(fact)
        self.plan[round_], self.withheld[round_] = keep, withheld
        return keep

    def decided(self, round_: int, verdicts: list) -> None:
        """The solver's verdicts: withdrawn requests dropped, a kept duplicate held by m parties weighs 1/m (each of
        its rows), augmented requests (weight 1) added for a won conflict."""
        reqs = self._round_plan(round_)
        keep = [(i, m) for i, action, _, _, m in verdicts if action != "withdraw"]
        extra = [aug for i, action, _, _, _ in verdicts if action == "augment"
                 for aug in augmented_requests(self.lm, reqs[i], self.s.augment, seed=self.s.template_seed + i)]
        self.verdicts[round_] = verdicts
        self.plan[round_] = [reqs[i] for i, _ in keep] + extra
        self.weights[round_] = torch.tensor([1.0 / m for _, m in keep] + [1.0] * len(extra), dtype=torch.float64)
        self.stats.pop(round_, None)
        self.log(f"round {round_}: the solver's decision: {len(reqs) - len(keep)} withdrawn, "
                 f"{sum(m > 1 for _, m in keep)} shared with other holders (weight 1/m), {len(extra)} augmented")

    def compute_statistics(self, round_: int, layer: int) -> dict[str, Any]:
        """{"G": UᵀU (d_k, d_k), "B": DᵀU (d_v, d_k)} float64 and "N": the edit count, for this party only."""
        t = time.perf_counter()
        reqs = self._round_plan(round_)
        if not reqs:  # nothing to edit: zeros (as a MEMIT party sends)
            d_v, d_k = self.s.d_v, self.s.d_k
            out = {"G": torch.zeros(d_k, d_k, dtype=torch.float64).numpy(),
                   "B": torch.zeros(d_v, d_k, dtype=torch.float64).numpy(), "N": 0}
        else:
            if round_ not in self.stats:  # every layer from the unedited model in one pass per edit
                self.stats[round_] = party_statistics(self.lm, self.hypernet, reqs, self.weights.get(round_))
            st = self.stats[round_][layer]
            out = {"G": st.g.cpu().numpy(), "B": st.b.cpu().numpy(), "N": len(reqs)}
        self.compute_seconds += time.perf_counter() - t
        return out

    def finish(self, save: Path | None = None, patch: Path | None = None,
               release_sha256: dict[tuple[int, int], str] | None = None) -> dict[str, Any]:
        report = super().finish(save, patch, release_sha256)
        for key in ("templates_digest", "target_loss"):  # MEMIT's
            report.pop(key, None)
        return {**report, "backend": "malmen", "hypernet_digest": self.s.hypernet_digest}
