"""A plain MALMEN written from the paper's equations (Tan et al., ICLR 2024, §4), independent of
``secure_collab.editing.malmen``: the reference the engine is tested against.

One edit at a time, no padding, no batching, float64, module paths written out again, the gradient with respect to
each projection's output taken by ``retain_grad`` on a forward from input embeddings that require grad (the engine
adds a zero leaf instead), the solve by ``torch.linalg.solve`` (the engine: Cholesky via MEMIT's solve).
The hypernetwork's parameters are read as plain tensors from a state dict; its function is written again here.

For edit j with prompt tokens P_j and answer tokens a_1..a_m, the sequence is P_j, a_1..a_{m−1}; the answer
positions are those predicting a_1..a_m. L_j = Σ_i −log P(a_i | prefix). At each answer position and layer l:
  u = input of the MLP output projection;  ∇v = ∂L_j/∂(projection output)
  x = (concat(u, ∇v) − μ) / (σ + eps);  x ← x + s_l ⊙ relu(x A B + b) + t_l per block;  (ũ, ∇̃v) = split(x)
  d = −η_l (uᵀũ) ∇̃v
  S_l = (UᵀU + e^{λ_l} I)⁻¹ UᵀD   (d_k × d_v);  W_l (out × in) += S_lᵀ  (GPT-2's Conv1D stores in × out: += S_l)
"""

from __future__ import annotations

import torch

_DOWN = {"gpt2": "transformer.h.{}.mlp.c_proj", "llama": "model.layers.{}.mlp.down_proj"}


def _family(model) -> str:
    return "gpt2" if model.config.model_type == "gpt2" else "llama"


def _down(model, layer: int):
    return model.get_submodule(_DOWN[_family(model)].format(layer))


def tokens(tok, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    return list(tok(prompt)["input_ids"]), list(tok(" " + answer, add_special_tokens=False)["input_ids"])


def rows_of_edit(model, tok, prompt: str, answer: str, layers: tuple[int, ...]):
    """(u, ∇v) per layer at the edit's answer positions: {layer: ((m, d_k), (m, d_v))}."""
    p, a = tokens(tok, prompt, answer)
    ids = torch.tensor([p + a[:-1]])
    seen_in, seen_out = {}, {}
    handles = []
    for layer in layers:
        def hook(_m, args, out, layer=layer):
            out.retain_grad()
            seen_in[layer], seen_out[layer] = args[0], out

        handles.append(_down(model, layer).register_forward_hook(hook))
    try:
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, use_cache=False).logits[0]  # (t, V)
    finally:
        for h in handles:
            h.remove()
    positions = list(range(len(p) - 1, len(p) - 1 + len(a)))
    loss = sum(-torch.log_softmax(logits[q], -1)[a[i]] for i, q in enumerate(positions))
    loss.backward()
    return {layer: (seen_in[layer][0, positions].detach(), seen_out[layer].grad[0, positions].detach())
            for layer in layers}


def net_value_diffs(state: dict, prefix: str, n_blocks: int, i: int, u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """d = −η_i (uᵀũ) ∇̃v, the hypernetwork's equations written out, from its parameters ``state[prefix + …]``."""
    x = torch.cat((u, g), -1)
    x = (x - state[prefix + "normaliser.mean"]) / (state[prefix + "normaliser.std"] + torch.finfo(x.dtype).eps)
    for k in range(n_blocks):
        blk = f"{prefix}blocks.{k}."
        h = torch.clamp(x @ state[blk + "a"] @ state[blk + "b"] + state[blk + "bias"], min=0)
        x = x + state[blk + "scale"][i] * h + state[blk + "shift"][i]
    d_k = u.shape[-1]
    u_t, g_t = x[:, :d_k], x[:, d_k:]
    return -state[prefix + "lr"][i] * (u * u_t).sum(-1, keepdim=True) * g_t


def malmen(model, tok, edits: list[tuple[str, str]], layers: tuple[int, ...], state: dict, n_blocks: int):
    """Reference statistics and shift of every edited layer for ``edits`` [(filled prompt, answer)], on the model
    as given (not changed). Returns {layer: (UᵀU, UᵀD, S)}; S is d_k × d_v as in the paper."""
    per_layer: dict[int, tuple[list, list]] = {layer: ([], []) for layer in layers}
    for prompt, answer in edits:
        for layer, (u, g) in rows_of_edit(model, tok, prompt, answer, layers).items():
            per_layer[layer][0].append(u)
            per_layer[layer][1].append(g)
    out = {}
    for i, layer in enumerate(layers):  # every edited layer has the same shape in the tiny models: one net
        u = torch.cat(per_layer[layer][0])
        g = torch.cat(per_layer[layer][1])
        prefix = next(k for k in state if k.endswith("normaliser.mean")).removesuffix("normaliser.mean")
        with torch.no_grad():
            d = net_value_diffs(state, prefix, n_blocks, i, u, g)
            utu = u.T @ u
            utd = u.T @ d
            ridge = torch.exp(state[prefix + "lamda"][i])
            s = torch.linalg.solve(utu + ridge * torch.eye(u.shape[1], dtype=u.dtype), utd)
        out[layer] = (utu, utd, s)
    return out


@torch.no_grad()
def apply_shifts(model, shifts: dict[int, torch.Tensor]) -> None:
    """W += Sᵀ (Linear stores out × in); GPT-2's Conv1D stores in × out, so W += S there."""
    for layer, s in shifts.items():
        w = _down(model, layer).weight
        w.add_(s if _family(model) == "gpt2" else s.T)
