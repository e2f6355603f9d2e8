"""The solver's math for a session: ΔW of each (round, layer) by the session's update rule.

C comes from the public corpus (cached by model, layer and corpus digests); AlphaEdit's null-space basis is
taken from it once per layer. With ``session.defence`` rank:K, the rule's ΔW is replaced by its best rank-K
approximation in the keys' metric (``editing.defences.truncate_rank``) before it is released. With noise:Z, ΣG (and the
earlier rounds' ΣG) carry the parties' noise and are replaced by their positive semi-definite parts before the rule
solves (``editing.noise.psd_part``: post-processing, so that λC + ΣG keeps a Cholesky factor). The cross-round
state (Σ of earlier rounds' ΣG per layer) is the solver's, kept sealed in its state store; it is passed in per
call, so this object holds nothing secret.

A MALMEN session (``session.backend = "malmen"``) has no C: ΔW = ΣB (ΣG + e^{λ_l} I)⁻¹ with λ_l the pinned
hypernetwork's (``editing.malmen.edit.solve_shift``), loaded from this site's [paths] hypernet and checked against
``session.hypernet_digest`` at start. Its sessions are one round, memit-static, without defences (``config``).

In a served session (``session.release = "served"``) it is also the served model (``solver.serve.ServedModel``): it
keeps the base model it loaded, adds each released ΔW to it, and answers the parties' queries on it
(``secure_collab.evaluation.served``). Then it holds the edited weights, which no party receives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from secure_collab.editing.defences import parse_defence, truncate_rank
from secure_collab.editing.noise import psd_part
from secure_collab.editing.session import session_hparams


class SessionSolve:
    def __init__(self, session: Any, *, cache: Path | None = None, device: str | None = "cpu",
                 progress: bool = False, allow_download: bool = False, serve: bool | None = None,
                 hypernet: Path | None = None) -> None:
        """``serve``: keep the model and answer queries on it (default: when the session's release is served).
        ``hypernet``: MALMEN only, this site's copy of the session's hypernetwork ([paths] hypernet)."""
        from secure_collab.covariance import layer_covariances
        from secure_collab.models import load_model
        from secure_collab.models.specs import n_layers
        from secure_collab.preflight import check_model, session_hypernet

        lm = load_model(session.model, device=device, cache=cache, dtype=session.hparams.get("dtype", "auto"),
                        allow_download=allow_download)
        check_model(lm, session)  # a wrong d_v or other weights: refused here, before any party waits on us
        self.ridges: dict[int, float] | None = None
        if session.backend == "malmen":
            if hypernet is None:
                raise ValueError("a MALMEN session's solve needs the hypernetwork's directory ([paths] hypernet)")
            # cast as the parties and the single-machine edit cast it (the model's dtype), so e^{λ_l} is theirs
            net = session_hypernet(session, hypernet, next(lm.model.parameters()).dtype, model_digest=lm.source_digest)
            self.ridges = {layer: net.ridge(layer) for layer in session.layers}  # e^{λ_l}
            self.lm, self.rank, self.noised, self.repair_round = None, 0, False, None
            return
        self.hp = session_hparams(session.model, n_layers(lm.model, lm.spec), session.layers, session.variant,
                                  session.template_seed, session.hparams, 0, session.update_rule)
        self.covs = layer_covariances(lm, self.hp.layers, tokens=self.hp.mom2_tokens,
                                      max_seq_len=self.hp.mom2_max_len, cache=cache, progress=progress)
        self.lm = lm if (session.served if serve is None else serve) else None  # else the solver needs only C
        self.rule = self.hp.rule
        defence = parse_defence(session.defence)
        self.rank = defence.rank  # 0: ΔW released as the rule solves it
        self.noised = bool(defence.noise)
        self.repair_round = session.repair_round
        self.bases = {layer: self.rule.basis(self.covs[layer]) for layer in self.hp.layers}

    def __call__(self, round_: int, layer: int, g_sum: np.ndarray, b_sum: np.ndarray,
                 past_g: np.ndarray | None = None) -> np.ndarray:
        g = torch.from_numpy(np.ascontiguousarray(g_sum, dtype=np.float64))
        b = torch.from_numpy(np.ascontiguousarray(b_sum, dtype=np.float64))
        if self.ridges is not None:  # MALMEN: C = I, λ = e^{λ_l}
            from secure_collab.editing.malmen.edit import solve_shift
            from secure_collab.editing.statistics import LayerStats

            return solve_shift(LayerStats(g, b), self.ridges[layer]).numpy()
        past = None if past_g is None else torch.from_numpy(np.ascontiguousarray(past_g, dtype=np.float64))
        if self.noised:
            g = psd_part(g)
            past = None if past is None else psd_part(past)
        if round_ == self.repair_round:  # decoys:R's closing round, against the earlier rounds' ΣG
            from secure_collab.editing.decoys import repair_update

            delta = repair_update(b, g, self.covs[layer], self.rule.lam, past)
        else:
            delta = self.rule.solve(b, g, self.covs[layer], past_g=past, basis=self.bases[layer])  # (d_v, d_k)
        if self.rank:
            delta = truncate_rank(delta, self.covs[layer], self.rank)
        return delta.numpy()

    # ---- the served model (solver.serve.ServedModel) -------------------------------------------------------------
    def _served(self) -> Any:
        if self.lm is None:
            raise RuntimeError("this solve was made without a served model (serve=False)")
        return self.lm

    def apply(self, layer: int, delta: np.ndarray) -> None:
        from secure_collab.models.specs import add_to_down_weight

        lm = self._served()
        add_to_down_weight(lm.model, lm.spec, layer, torch.from_numpy(np.ascontiguousarray(delta, dtype=np.float64)))

    def check(self, query: dict[str, Any]) -> None:
        from secure_collab.evaluation.served import check_tokens

        lm = self._served()
        check_tokens(lm.tokenizer, query)

    def answer(self, query: dict[str, Any]) -> dict[str, Any]:
        from secure_collab.evaluation.served import answer_query

        lm = self._served()
        return answer_query(lm.model, lm.tokenizer, query)
