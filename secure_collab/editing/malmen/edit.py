"""MALMEN's statistics, solve and edit over parties (tensors in, tensors out; the model only through ``rows``).

Per edited layer l, over the answer-token rows of a party's edits (``rows.edit_rows``):
  D   = value_diffs(U, ∇V)                       (r, d_v), the hypernetwork (``net.Hypernet``)
  G   = UᵀU                                       (d_k, d_k)   MEMIT's G
  B   = DᵀU                                       (d_v, d_k)   MEMIT's B orientation (the paper's UᵀD, transposed)
  ΔW  = B (G + e^{λ_l} I)⁻¹ = Sᵀ,  S = (UᵀU + e^{λ_l} I)⁻¹ UᵀD      (d_v, d_k), added to W (d_v, d_k)
so the solve is MEMIT's ``solve_update`` with C = I and λ = e^{λ_l}, and the sums of the parties' (G, B) give the
single-machine ΔW. Every layer's rows come from the unedited model (MALMEN is one-shot by construction).

The edit count N. One row of U is one answer token, but N counts *edits* (requests), as for MEMIT, so the
solver's expected-edit check (requests tagged − withdrawn + augmented) holds unchanged. The plausibility bounds
hold with N = edits when the session's per-key bounds are read per edit: an edit e contributes
G_e = U_eᵀU_e and B_e = D_eᵀU_e, so tr G_e = ‖U_e‖_F² and ‖B_e‖_F ≤ ‖D_e‖_F ‖U_e‖_F. With κ ≥ ‖U_e‖_F (the root
of the summed squared key norms over the edit's answer tokens) and ρ ≥ ‖D_e‖_F, tr ΣG ≤ κ² N and
‖ΣB‖_F ≤ ρ κ N, the checks of ``protocol.plausibility``. ``edit_norms`` gives ‖U_e‖_F and ‖D_e‖_F; a weight w_e
(a duplicate held by m parties: 1/m) multiplies every row of its edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.malmen.net import Hypernet
from secure_collab.editing.malmen.rows import EditRows, edit_rows
from secure_collab.editing.memit import INDEPENDENT, combine
from secure_collab.editing.statistics import LayerStats, layer_statistics
from secure_collab.models.loading import LoadedModel
from secure_collab.models.specs import add_to_down_weight, down_weight

METHODS = ("global", "collab", *INDEPENDENT)


def layer_shapes(lm: LoadedModel, layers: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """(d_k, d_v) of each edited output projection."""
    out = {}
    for layer in layers:
        d_v, d_k = down_weight(lm.model, lm.spec, layer).shape
        out[layer] = (int(d_k), int(d_v))
    return out


@torch.no_grad()
def statistics_batch(lm: LoadedModel, hypernet: Hypernet) -> int:
    """Edits per forward pass for a party's statistics: one on a CPU, so that an edit's rows never depend on which other
    edits share its batch (padding changes float32 rounding by ~1e-7, which the solve amplifies to ~1e-6 in ΔW: collab
    then differs from Global-Edit; one edit per pass makes them equal to float64 round-off, as MEMIT's one request per
    batch on a CPU does); the network's ``edit_batch`` on a GPU."""
    return 1 if lm.device.type == "cpu" else hypernet.hp.edit_batch


def value_diffs(hypernet: Hypernet, rows: EditRows) -> dict[int, torch.Tensor]:
    """D (r, d_v) per layer from the rows, float64, outside autograd (training differentiates through
    ``Hypernet.value_diffs`` itself)."""
    with torch.no_grad():
        return {layer: hypernet.value_diffs(layer, rows.u[layer], rows.g[layer]).double()
                for layer in hypernet.hp.layers}


def row_weights(rows: EditRows, weights: torch.Tensor | None) -> torch.Tensor | None:
    """Each edit's weight (n,) spread over its rows (r,), or None."""
    if weights is None:
        return None
    if weights.shape != (rows.n_edits,):
        raise ValueError(f"weights must be (n,) = ({rows.n_edits},), got {tuple(weights.shape)}")
    return weights.to(rows.edit.device)[rows.edit]


def statistics_from_rows(hypernet: Hypernet, rows: EditRows,
                         weights: torch.Tensor | None = None) -> dict[int, LayerStats]:
    """(G, B) = (UᵀU, DᵀU) per layer, float64."""
    d = value_diffs(hypernet, rows)
    w = row_weights(rows, weights)
    return {layer: layer_statistics(rows.u[layer], d[layer], w) for layer in hypernet.hp.layers}


def party_statistics(lm: LoadedModel, hypernet: Hypernet, requests: list[Request],
                     weights: torch.Tensor | None = None) -> dict[int, LayerStats]:
    """One party's (G, B) per edited layer: one forward and backward pass per edit, then the hypernetwork."""
    rows = edit_rows(lm, requests, hypernet.hp.layers, statistics_batch(lm, hypernet))
    return statistics_from_rows(hypernet, rows, weights)


def edit_norms(rows: EditRows, d: dict[int, torch.Tensor], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """‖U_e‖_F and ‖D_e‖_F of each edit at ``layer`` (n,), float64: what the session's κ and ρ bound for MALMEN."""
    u2 = torch.zeros(rows.n_edits, dtype=torch.float64, device=rows.edit.device)
    d2 = torch.zeros_like(u2)
    u2.index_add_(0, rows.edit, rows.u[layer].double().pow(2).sum(1))
    d2.index_add_(0, rows.edit, d[layer].double().pow(2).sum(1))
    return u2.sqrt(), d2.sqrt()


def solve_shift(stats: LayerStats, ridge: float) -> torch.Tensor:
    """ΔW = B (G + ridge·I)⁻¹ (d_v, d_k) float64: MEMIT's solve with C = I, λ = e^{λ_l}."""
    return combine("collab", [stats], torch.eye(stats.g.shape[0], dtype=torch.float64, device=stats.g.device), ridge)


@dataclass
class MalmenOutcome:
    deltas: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> applied ΔW (d_v, d_k) float64
    edits: list[int] = field(default_factory=list)  # N per party: edits (requests)
    rows: list[int] = field(default_factory=list)  # answer-token rows per party


def run_malmen_edit(lm: LoadedModel, parties: list[list[Request]], hypernet: Hypernet, method: str,
                    weights: list[torch.Tensor | None] | None = None) -> MalmenOutcome:
    """Edit ``lm`` in place with every party's requests; returns the applied ΔW per layer.

    ``global``: one machine holding every request; ``collab``: each party's statistics, summed (equal to global);
    ``ta``/``sa``/``ties``: each party solved alone and the ΔW_p merged (CollabEdit's baselines). All rows are taken
    on the model as it is when called, before any layer is changed."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    if not hypernet.fitted:
        raise ValueError("the hypernetwork's normaliser is not fitted: train or load a trained hypernetwork")
    ws = weights or [None] * len(parties)
    if method == "global":
        flat = [r for p in parties for r in p]
        joined = None if all(w is None for w in ws) else torch.cat(
            [w if w is not None else torch.ones(len(p), dtype=torch.float64) for p, w in zip(parties, ws, strict=True)])
        parties, ws = [flat], [joined]
    kept = [(p, w) for p, w in zip(parties, ws, strict=True) if p]
    out = MalmenOutcome()
    per_party = []
    for reqs, w in kept:
        rows = edit_rows(lm, reqs, hypernet.hp.layers, statistics_batch(lm, hypernet))
        per_party.append(statistics_from_rows(hypernet, rows, w))
        out.edits.append(rows.n_edits)
        out.rows.append(rows.n_rows)
    for layer in hypernet.hp.layers:
        g = per_party[0][layer].g
        eye = torch.eye(g.shape[0], dtype=torch.float64, device=g.device)
        out.deltas[layer] = combine(method, [s[layer] for s in per_party], eye, hypernet.ridge(layer))
    for layer, delta in out.deltas.items():
        add_to_down_weight(lm.model, lm.spec, layer, delta)
    return out
