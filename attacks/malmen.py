"""MALMEN's threat views, computed with the engine, and the project's span and read-off attacks adapted to them.

MALMEN (``secure_collab.editing.malmen``) takes, at every *answer position* of an edit (the prompt's last token and
every answer token but the last), the input u of each edited MLP output projection and the gradient ∇v of the edit
loss w.r.t. that projection's output; the public hypernetwork maps them to value differences d. Per edited layer a
party's statistics are G = UᵀU and B = DᵀU, and the solver releases ΔW = ΣB (ΣG + e^{λ_l} I)⁻¹.

| view        | who holds it                   | what it is (per edited layer)                   | engine          |
|-------------|--------------------------------|-------------------------------------------------|-----------------|
| `keys`      | anyone, under naive sharing    | one party's U (r, d_k), a row per answer position | `edit_rows`   |
| `gram`      | anyone, CollabEdit's clear text | one party's UᵀU                                | `statistics_from…` |
| `stats`     | anyone, without protection     | one party's (UᵀU, DᵀU)                          | the same        |
| `aggregate` | the solver                     | Σ_p U_pᵀU_p and Σ_p D_pᵀU_p                     | summed          |
| `delta`     | every party                    | ΔW = ΣB (ΣG + e^{λ_l} I)⁻¹                      | `solve_shift`   |

Every view gives span(U) at every edited layer: the range of G; and the row space of ΔW, with no public matrix at
all (MEMIT's needs λC): ΣG + cI (c = e^{λ_l} > 0) maps span(U) onto itself, so rowspace(ΔW) = (ΣG + cI)⁻¹ rowspace(ΣB)
= span(U) whenever rowspace(ΣB) = span(U), i.e. whenever D has full column rank (generic while the rows r ≤ d_v).

A candidate's key. MALMEN's first answer position is the prompt's last token, so the key an attacker computes for a
candidate subject is u at the last token of a prompt with the subject filled in (``prompt_keys``, on the unedited
public model): it depends on the whole prompt, not only on the subject as MEMIT's does. What the attacker knows of
the prompt is therefore part of every subject figure (``attacks.malmen_session`` states it per attack).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from attacks import spectral, subspace
from attacks.target import residual_from_stats
from secure_collab.data.requests import Request
from secure_collab.editing.malmen.edit import solve_shift, statistics_batch, statistics_from_rows
from secure_collab.editing.malmen.net import Hypernet
from secure_collab.editing.malmen.rows import EditRows, edit_rows
from secure_collab.editing.statistics import LayerStats, sum_stats
from secure_collab.models.loading import LoadedModel

MALMEN_VIEWS = ("keys", "gram", "stats", "aggregate", "delta")


# --------------------------------------------------------------------------------------------------- views

@dataclass
class MalmenViews:
    """Everything a collaborative MALMEN edit exposes, per party and summed, from the engine's own functions."""

    rows: list[EditRows]  # per party: U and ∇V of every answer position (the `keys` view is rows[p].u)
    stats: list[dict[int, LayerStats]]  # per party: (G, B) = (UᵀU, DᵀU) per layer (`gram` is .g, `stats` both)
    aggregate: dict[int, LayerStats]  # Σ over parties, in party order (the solver's view)
    delta: dict[int, torch.Tensor]  # the released ΔW per layer (d_v, d_k) float64
    ridges: dict[int, float]  # e^{λ_l}, public (it is in the pinned hypernetwork)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.delta)


def malmen_views(lm: LoadedModel, hypernet: Hypernet, parties: Sequence[Sequence[Request]]) -> MalmenViews:
    """Each party's rows and (G, B) on the unedited model, their sums and the released ΔW (``run_malmen_edit``'s
    `collab` path without writing the weights: rows → ``statistics_from_rows`` → sum → ``solve_shift``)."""
    if not parties or any(not p for p in parties):
        raise ValueError("every party needs at least one edit")
    layers = hypernet.hp.layers
    rows = [edit_rows(lm, list(p), layers, statistics_batch(lm, hypernet)) for p in parties]
    stats = [statistics_from_rows(hypernet, r) for r in rows]
    aggregate = {la: sum_stats([s[la] for s in stats]) for la in layers}
    ridges = {la: hypernet.ridge(la) for la in layers}
    delta = {la: solve_shift(aggregate[la], ridges[la]) for la in layers}
    return MalmenViews(rows, stats, aggregate, delta, ridges)


def keys_view(views: MalmenViews, party: int) -> dict[int, torch.Tensor]:
    """One party's U per layer (r, d_k) float64: one row per answer position of its edits."""
    return {la: u.double() for la, u in views.rows[party].u.items()}


def gram_view(views: MalmenViews, party: int) -> dict[int, torch.Tensor]:
    """One party's UᵀU per layer (d_k, d_k), as the engine forms it."""
    return {la: s.g for la, s in views.stats[party].items()}


def span_of(views: MalmenViews, view: str, party: int = 0) -> dict[int, torch.Tensor]:
    """An orthonormal basis (d_k, r) of span(U) per layer, as the holder of ``view`` recovers it (``party``: whose
    keys/gram/stats; ignored for aggregate and delta): row space of U, range of G or ΣG, row space of ΔW."""
    out = {}
    for la in views.layers:
        if view == "keys":
            out[la] = spectral.basis_from_rows(views.rows[party].u[la].double())
        elif view in ("gram", "stats"):
            out[la] = spectral.basis_from_gram(views.stats[party][la].g)
        elif view == "aggregate":
            out[la] = spectral.basis_from_gram(views.aggregate[la].g)
        elif view == "delta":
            out[la] = spectral.basis_from_rows(views.delta[la])
        else:
            raise ValueError(f"unknown MALMEN view {view!r}; one of {MALMEN_VIEWS}")
    return out


# --------------------------------------------------------------------------------------------------- keys

def prompt_ids(tok, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text exactly as ``rows.encode_pairs`` tokenises a prompt (the tokenizer's default special
    tokens)."""
    return [list(tok(t)["input_ids"]) for t in texts]


def answer_ids(tok, answer: str) -> list[int]:
    """Token ids of an answer as ``rows.encode_pairs`` appends it (" " + answer, no special tokens)."""
    return list(tok(" " + answer, add_special_tokens=False)["input_ids"])


class _Done(Exception):
    """Raised by the last hook: the layers above the last edited projection are not needed."""


@torch.no_grad()
def sequence_keys(lm: LoadedModel, seqs: Sequence[Sequence[int]], layers: Sequence[int], batch: int = 64
                  ) -> dict[int, torch.Tensor]:
    """u at the last token of each token sequence, at each layer's MLP output projection, on the model as it is:
    (n, d_k) float64 per layer. For ``prompt_ids(text)`` that is the key of the edit's first answer position."""
    if not seqs:
        raise ValueError("no sequences")
    layers = sorted(layers)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    out: dict[int, list[torch.Tensor]] = {la: [] for la in layers}
    for s in range(0, len(seqs), batch):
        chunk = seqs[s:s + batch]
        t = max(len(x) for x in chunk)
        ids = torch.tensor([list(x) + [pad] * (t - len(x)) for x in chunk], device=lm.device)  # (b, t) right-padded
        mask = torch.tensor([[1] * len(x) + [0] * (t - len(x)) for x in chunk], device=lm.device)
        last = mask.sum(1) - 1  # (b,)
        got: dict[int, torch.Tensor] = {}
        handles = []
        for la in layers:
            def hook(_m, args, layer: int = la, last: torch.Tensor = last, got: dict = got) -> None:
                got[layer] = args[0][torch.arange(len(last)), last].double().cpu()  # (b, d_k)
                if layer == layers[-1]:
                    raise _Done
            handles.append(lm.model.get_submodule(lm.spec.down_name(la)).register_forward_pre_hook(hook))
        try:
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
        except _Done:
            pass
        finally:
            for h in handles:
                h.remove()
        for la in layers:
            out[la].append(got[la])
    return {la: torch.cat(v) for la, v in out.items()}


# --------------------------------------------------------------------------------------------------- subjects

def span_scores(bases: dict[int, torch.Tensor], keys: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """‖Qᵀu_c‖/‖u_c‖ per layer (N,): how much of each candidate key lies in the recovered span."""
    return {la: subspace.projection_scores(q, keys[la]) for la, q in bases.items()}


def norm_scores(delta: dict[int, torch.Tensor], keys: dict[int, torch.Tensor],
                bases: dict[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
    """‖ΔW u_c‖/‖u_c‖ per layer (N,): how strongly the release answers each candidate key. With ``bases`` (a basis Q of
    rowspace(ΔW) per layer, ``span_of(views, "delta")``) it is computed as ‖(ΔW Q)(Qᵀu_c)‖, the same number at r/d_v
    of the cost (ΔW = ΔW Q Qᵀ)."""
    out = {}
    for la, d in delta.items():
        k = keys[la]
        moved = k @ d.T if bases is None else (k @ bases[la]) @ (d @ bases[la]).T  # (N, d_v)
        out[la] = moved.norm(dim=1) / k.norm(dim=1).clamp_min(1e-300)
    return out


def standardise(x: torch.Tensor) -> torch.Tensor:
    """(x − mean) / std over the candidates (zeros for a single candidate: nothing to compare it with)."""
    if x.numel() < 2:
        return torch.zeros_like(x)
    return (x - x.mean()) / x.std().clamp_min(1e-300)


def combine_layers(scores: dict[int, torch.Tensor]) -> torch.Tensor:
    """The per-layer scores, each standardised over the candidates, averaged over the layers (N,)."""
    return torch.stack([standardise(v) for v in scores.values()]).mean(0)


# --------------------------------------------------------------------------------------------------- objects

def unembed_directions(lm: LoadedModel) -> torch.Tensor:
    """(vocab, d_v) float64: each token's unembedding row times the final norm's weight, the direction in the
    last block's output along which a small added vector raises that token's logit (up to the norm's 1/rms)."""
    weight = lm.model.get_submodule(lm.spec.unembed).weight
    assert isinstance(weight, torch.Tensor)
    w = weight.double()  # (vocab, d_v)
    gamma = getattr(lm.model.get_submodule(lm.spec.final_norm), "weight", None)
    return w * gamma.double()[None, :] if isinstance(gamma, torch.Tensor) else w


def column_basis(mat: torch.Tensor) -> torch.Tensor:
    """(d_v, r) orthonormal basis of the column space of ``mat`` (d_v, d_k): its left singular vectors."""
    u, s, _ = torch.linalg.svd(mat.double(), full_matrices=False)
    return u[:, :spectral.effective_rank(s)]


def value_basis(stats: LayerStats) -> torch.Tensor:
    """(d_v, r) orthonormal basis of span{d_i} from B = DᵀU (its column space is span{d_i} when U has full row rank).
    The released ΔW = DᵀU (G + cI)⁻¹ has the same column space: ``column_basis(delta)``."""
    return column_basis(stats.b)


def recovered_diffs(stats: LayerStats, keys: torch.Tensor) -> torch.Tensor:
    """d̂_j = B G⁺ u_j (n, d_v): the value difference of the answer position whose key is u_j, exact when the
    view's rows are linearly independent (then U G⁺ Uᵀ = I, so B G⁺ Uᵀ = Dᵀ)."""
    return residual_from_stats(stats.b, stats.g, keys)


def direction_token_scores(unembed: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """⟨w̃_t, d⟩ for every token t (vocab,): the logit each token gains when d is added to the last block's output."""
    return unembed @ d.double()


def span_token_scores(unembed: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """‖Pᵀ w̃_t‖/‖w̃_t‖ for every token (vocab,): how much of a token's direction lies in span{d_i} (sign-free)."""
    return subspace.projection_scores(basis, unembed)


def token_rank(scores: torch.Tensor, candidates: Sequence[int], truth: int) -> int:
    """0-based rank of token ``truth`` among the ``candidates`` token ids by descending score (ties count against)."""
    ids = torch.tensor(sorted(set(candidates)), dtype=torch.long)
    own = scores[truth]
    return int((scores[ids] > own).sum()) + int(((scores[ids] == own) & (ids != truth)).sum())
