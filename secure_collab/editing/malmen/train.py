"""MALMEN's meta-training step: the paper's two-stage back-propagation through the normal equation.

Loss of a batch of edits (each a request with its paraphrase and locality prompts), on the model with the shifts S_l:
  L = mean over edits of [mean NLL of target_new after each paraphrase prompt]
      + loc_coef · mean over locality pairs of [mean over answer positions of KL(p_before ‖ p_after)]
Stage 1 (no graph through the hypernetwork): rows (u, ∇v) of the edits on the unedited model, D = net(rows),
  A_l = UᵀU + e^{λ_l} I, S_l = A_l⁻¹ UᵀD. L is evaluated with S_l added as a leaf (a hook adds u S_l to the
  projection's output), ``pair_batch`` prompts per forward, and back-propagated to ∂L/∂S_l only.
Stage 2, per chunk of rows: ∂L/∂D = U A⁻¹ ∂L/∂S (S = A⁻¹UᵀD is linear in D); ∂L/∂λ_l = −e^{λ_l} ⟨A⁻¹ ∂L/∂S, S⟩
  (dS = −A⁻¹ dA S, dA = e^{λ_l} dλ_l I); D's chunk is recomputed with a graph and back-propagated with ∂L/∂D.
So memory holds one LM graph (stage 1) or one chunk of the hypernetwork's graph (stage 2), never both: MALMEN's
point. The base model never changes during training, so the rows of a batch are computed once per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from secure_collab.data.requests import Request
from secure_collab.editing.malmen.net import Hypernet
from secure_collab.editing.malmen.rows import EditRows, encode_pairs, token_nll
from secure_collab.models.loading import LoadedModel


@dataclass(frozen=True)
class TrainConfig:
    """How the hypernetwork is meta-trained (the network's own shape is ``MalmenHParams``)."""

    steps: int = 200
    edits_per_step: int = 8  # edits whose shifts are solved together in one step
    meta_lr: float = 1e-4  # Adam on the hypernetwork, η_l and λ_l
    loc_coef: float = 1.0
    max_grad_norm: float = 1.0
    norm_edits: int = 64  # training edits whose rows fit the (then frozen) normaliser
    val_every: int = 20  # 0: validate only at the end
    val_edits: int = 16
    checkpoint_every: int = 10
    seed: int = 0
    pair_batch: int = 16  # prompts per forward in the meta loss: bounds stage 1's memory, not the result

    def __post_init__(self) -> None:
        if min(self.steps, self.edits_per_step, self.norm_edits, self.val_edits, self.checkpoint_every,
               self.pair_batch) < 1:
            raise ValueError("steps, edits_per_step, norm_edits, val_edits, checkpoint_every and pair_batch must be "
                             ">= 1")
        if self.val_every < 0 or self.meta_lr <= 0 or self.loc_coef < 0 or self.max_grad_norm <= 0:
            raise ValueError("val_every >= 0, meta_lr > 0, loc_coef >= 0, max_grad_norm > 0")


def generalisation_pairs(r: Request) -> list[tuple[str, str]]:
    """(filled prompt, target_new) for each paraphrase prompt; the edit prompt itself when there is none."""
    return [(p, r.target_new) for p in (r.paraphrase_prompts or (r.text,))]


def locality_pairs(r: Request) -> list[tuple[str, str]]:
    """(prompt, true answer) whose prediction must not move: CounterFact's neighbourhood prompts, zsRE's ``loc``."""
    pairs = [(p, t) for i, p in enumerate(r.neighborhood_prompts) if (t := r.neighbor_target(i))]
    if "loc" in r.extra and r.extra.get("loc_ans"):
        pairs.append((r.extra["loc"], r.extra["loc_ans"]))
    return pairs


@contextmanager
def shifted(lm: LoadedModel, shifts: dict[int, torch.Tensor]) -> Iterator[None]:
    """Run the model as if W_l += S_lᵀ: the projection's output gets u S_l (S_l: d_k × d_v, may require grad)."""
    handles = []
    for layer, s in shifts.items():
        def hook(_m: nn.Module, args: tuple, out: torch.Tensor, s: torch.Tensor = s) -> torch.Tensor:
            return out + args[0] @ s.to(out.dtype)

        handles.append(lm.model.get_submodule(lm.spec.down_name(layer)).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _per_pair(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over each row's answer positions: (b,)."""
    mask = (labels >= 0).to(values.dtype)
    return (values * mask).sum(1) / mask.sum(1)


def _per_pair_mean(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over each row's answer positions, then over rows."""
    return _per_pair(values, labels).mean()


def pair_nll(lm: LoadedModel, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Mean NLL of each pair's answer: (b,)."""
    enc = encode_pairs(lm.tokenizer, [p for p, _ in pairs], [a for _, a in pairs], lm.device)
    logits = lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, use_cache=False).logits
    return _per_pair(token_nll(logits, enc.labels), enc.labels)


def pair_kl(lm: LoadedModel, pairs: list[tuple[str, str]], before: torch.Tensor) -> torch.Tensor:
    """KL(p_before ‖ p_now) at the answer positions of each pair, averaged: (b,). ``before``: the unedited model's
    log-probs of the same pairs (``reference_logprobs``)."""
    enc = encode_pairs(lm.tokenizer, [p for p, _ in pairs], [a for _, a in pairs], lm.device)
    logits = lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, use_cache=False).logits
    now = torch.log_softmax(logits, -1)
    kl = (before.exp() * (before - now)).sum(-1)  # (b, t)
    return _per_pair(kl, enc.labels)


@torch.no_grad()
def reference_logprobs(lm: LoadedModel, pairs: list[tuple[str, str]]) -> torch.Tensor:
    enc = encode_pairs(lm.tokenizer, [p for p, _ in pairs], [a for _, a in pairs], lm.device)
    logits = lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, use_cache=False).logits
    return torch.log_softmax(logits, -1)


def meta_loss(lm: LoadedModel, batch: list[Request], shifts: dict[int, torch.Tensor],
              loc_coef: float) -> tuple[torch.Tensor, float, float]:
    """L = generalisation NLL + loc_coef · locality KL on the model shifted by ``shifts``; (L, gen, loc)."""
    gen_pairs = [p for r in batch for p in generalisation_pairs(r)]
    loc_pairs = [p for r in batch for p in locality_pairs(r)]
    before = reference_logprobs(lm, loc_pairs) if loc_pairs else None
    with shifted(lm, shifts):
        gen = pair_nll(lm, gen_pairs).mean()
        loc = pair_kl(lm, loc_pairs, before).mean() if before is not None else gen.new_zeros(())
    return gen + loc_coef * loc, float(gen.detach()), float(loc.detach())


def meta_gradient(lm: LoadedModel, batch: list[Request], leaves: dict[int, torch.Tensor], loc_coef: float,
                  pair_batch: int) -> tuple[float, float, float, dict[int, torch.Tensor]]:
    """``meta_loss`` and ∂L/∂S_l, the prompts taken ``pair_batch`` at a time (one LM graph of that many prompts in
    memory at once, as the paper's stage 1 does); the parts add up to the whole batch's loss exactly, since both
    terms are means over pairs. (L, gen, loc, {layer: ∂L/∂S_l})."""
    gen_pairs = [p for r in batch for p in generalisation_pairs(r)]
    loc_pairs = [p for r in batch for p in locality_pairs(r)]
    layers = list(leaves)
    grads = {layer: torch.zeros_like(s) for layer, s in leaves.items()}
    gen = loc = 0.0
    for kind, pairs in (("gen", gen_pairs), ("loc", loc_pairs)):
        for s in range(0, len(pairs), pair_batch):
            chunk = pairs[s : s + pair_batch]
            before = reference_logprobs(lm, chunk) if kind == "loc" else None
            with torch.enable_grad(), shifted(lm, leaves):
                per = pair_nll(lm, chunk) if before is None else pair_kl(lm, chunk, before)
                part = per.sum() / len(pairs)
                weighted = part if kind == "gen" else loc_coef * part
                for layer, g in zip(layers, torch.autograd.grad(weighted, [leaves[la] for la in layers]),
                                    strict=True):
                    grads[layer] += g
            if kind == "gen":
                gen += float(part.detach())
            else:
                loc += float(part.detach())
    return gen + loc_coef * loc, gen, loc, grads


def solve_shifts(hypernet: Hypernet, rows: EditRows) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """S_l = (UᵀU + e^{λ_l} I)⁻¹ UᵀD (d_k × d_v) per layer without a graph, and each A_l's Cholesky factor."""
    shifts, chols = {}, {}
    with torch.no_grad():
        for layer in hypernet.hp.layers:
            u = rows.u[layer].to(hypernet.net(layer).lr.dtype)
            d = hypernet.value_diffs(layer, rows.u[layer], rows.g[layer])
            a = u.T @ u + hypernet.ridge(layer) * torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
            chols[layer] = torch.linalg.cholesky(a)
            shifts[layer] = torch.cholesky_solve(u.T @ d, chols[layer])
    return shifts, chols


def backward_through_solve(hypernet: Hypernet, rows: EditRows, shifts: dict[int, torch.Tensor],
                           chols: dict[int, torch.Tensor], grads: dict[int, torch.Tensor]) -> None:
    """Stage 2: accumulate ∂L/∂(hypernetwork, η, λ) into ``.grad`` from ∂L/∂S_l (``grads``)."""
    for layer in hypernet.hp.layers:
        net, i = hypernet.net(layer), hypernet.index[layer]
        dtype = net.lr.dtype
        a_inv_gs = torch.cholesky_solve(grads[layer].to(dtype), chols[layer])  # (d_k, d_v)
        u_all = rows.u[layer].to(dtype)
        d_grad = u_all @ a_inv_gs  # ∂L/∂D (r, d_v)
        lam_grad = -hypernet.ridge(layer) * float((a_inv_gs * shifts[layer]).sum())
        if net.lamda.grad is None:
            net.lamda.grad = torch.zeros_like(net.lamda)
        net.lamda.grad[i] += lam_grad
        step = hypernet.hp.row_batch
        for s in range(0, u_all.shape[0], step):
            d = net.value_diffs(u_all[s : s + step], rows.g[layer][s : s + step].to(dtype), i)
            (d_grad[s : s + step] * d).sum().backward()


def meta_step(lm: LoadedModel, hypernet: Hypernet, batch: list[Request], loc_coef: float,
              rows: EditRows | None = None, pair_batch: int = 16) -> tuple[float, float, float]:
    """One meta-gradient (accumulated into the hypernet's ``.grad``; the caller steps the optimiser). (L, gen, loc).
    ``pair_batch``: prompts per forward in the meta loss (memory only)."""
    from secure_collab.editing.malmen.rows import edit_rows

    if rows is None:
        rows = edit_rows(lm, batch, hypernet.hp.layers, hypernet.hp.edit_batch)
    shifts, chols = solve_shifts(hypernet, rows)
    leaves = {layer: s.detach().requires_grad_(True) for layer, s in shifts.items()}
    loss, gen, loc, grads = meta_gradient(lm, batch, leaves, loc_coef, pair_batch)
    with torch.enable_grad():
        backward_through_solve(hypernet, rows, shifts, chols, grads)
    return loss, gen, loc


@torch.no_grad()
def evaluate(lm: LoadedModel, hypernet: Hypernet, batch: list[Request], loc_coef: float) -> dict[str, float]:
    """Validation on held-out edits solved together: the meta loss, the edit prompt's NLL and token accuracy."""
    from secure_collab.editing.malmen.rows import edit_rows

    rows = edit_rows(lm, batch, hypernet.hp.layers, hypernet.hp.edit_batch)
    shifts, _ = solve_shifts(hypernet, rows)
    loss, gen, loc = meta_loss(lm, batch, shifts, loc_coef)
    edit_pairs = [(r.text, r.target_new) for r in batch]
    enc = encode_pairs(lm.tokenizer, [p for p, _ in edit_pairs], [a for _, a in edit_pairs], lm.device)
    out = {}
    for name, ctx in (("before", None), ("after", shifts)):
        with shifted(lm, ctx or {}):
            logits = lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, use_cache=False).logits
        right = (logits.argmax(-1) == enc.labels) | (enc.labels < 0)
        out[f"edit_acc_{name}"] = float(right.all(1).double().mean())
        out[f"edit_nll_{name}"] = float(_per_pair_mean(token_nll(logits, enc.labels), enc.labels))
    return {"loss": float(loss), "gen": gen, "loc": loc, **out}
