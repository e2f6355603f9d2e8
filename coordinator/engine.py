"""The solver's math for a session: ΔW = ΣB (λC + ΣG + λ_past·Σ_earlier rounds ΣG)⁻¹ per (round, layer).

C comes from the public corpus (cached by model, layer and corpus digests). The dynamic covariance keeps each
earlier round's aggregate ΣG per layer, keyed by (round, layer) so a step solved again after a coordinator
restart is not counted twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from secure_collab.editing.session import session_hparams
from secure_collab.editing.solve import solve_update


class SessionSolve:
    def __init__(self, session: Any, *, cache: Path | None = None, device: str | None = "cpu",
                 progress: bool = False, allow_download: bool = False) -> None:
        from secure_collab.covariance import layer_covariances
        from secure_collab.models import load_model
        from secure_collab.models.specs import n_layers
        from secure_collab.preflight import check_model

        lm = load_model(session.model, device=device, cache=cache, dtype=session.hparams.get("dtype", "auto"),
                        allow_download=allow_download)
        check_model(lm, session)  # a wrong d_v or other weights: refused here, before any party waits on us
        self.hp = session_hparams(session.model, n_layers(lm.model, lm.spec), session.layers, session.variant,
                                  session.template_seed, session.hparams, 0)
        self.covs = layer_covariances(lm, self.hp.layers, tokens=self.hp.mom2_tokens,
                                      max_seq_len=self.hp.mom2_max_len, cache=cache, progress=progress)
        del lm  # the solver needs only C
        self.past_g: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, round: int, layer: int, g_sum: np.ndarray, b_sum: np.ndarray) -> np.ndarray:
        g = torch.from_numpy(np.ascontiguousarray(g_sum, dtype=np.float64))
        b = torch.from_numpy(np.ascontiguousarray(b_sum, dtype=np.float64))
        earlier = [v for (r, lay), v in self.past_g.items() if lay == layer and r < round]
        past = torch.stack(earlier).sum(0) if earlier else None
        delta = solve_update(b, g, self.covs[layer], self.hp.mom2_update_weight, past_g=past,
                             lam_past=self.hp.mom2_past_weight)
        self.past_g[(round, layer)] = g
        return delta.numpy()
