"""A plain MEMIT written from the paper's equations (Meng et al. 2023, §4.3 and Alg. 1), independent of
``secure_collab.editing``: the reference the engine is tested against.

Nothing here is fast: one request and one prompt at a time, full forward passes of the whole model with hooks,
no padding, no batching, no replay of upper blocks, float64 throughout (the model is expected in float64).
It imports no engine code: module names, subject positions, keys, targets, residuals, the solve and the weight
orientation are all written again below, the MEMIT way (MEMIT's ``compute_ks``, ``compute_z`` and
``execute_memit``), so a slip in the engine cannot hide behind a shared helper.

For edited layers l_1 < … < l_L, request j with subject s_j:
  k_j^l = mean over template groups of (mean over the group's templates) of the down-projection input at the
          subject's last token                                       (groups: the bare prompt; the prefixes)
  z_j   = h_j^L + δ_j,  δ_j = argmin NLL(target | prompt) + kl·KL(p_δ ‖ p_0)("{s} is a") + wd·‖δ‖/‖h‖²
          (Adam, clamp ‖δ‖ ≤ c‖h‖ after each step, stop when the loss < ε)
  r_j^i = (z_j − h_j^L(model now)) / (L − i)                         (i = 0 … L−1)
  ΔW^l  = R Kᵀ (λ C_l + K Kᵀ)⁻¹
sequential: layer by layer on the model updated so far; oneshot: every k and h from the unedited model.
  C_l   = mean over every token t of a public corpus of k_t kᵀ_t (uncentred second moment of the
          down-projection input; MEMIT's layer_stats with "mom2"), one text at a time, no padding
  templates = ["{}"] + [generated(prefix) + ". {}" for prefix in The, Therefore, Because, I, You, ...]
          (MEMIT's get_context_templates: top-k continuations of fixed prefixes; here greedy, top_k = 1,
          so the comparison needs no shared random generator)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

# module paths per family, written out here rather than taken from the engine's ArchSpec
_DOWN = {"gpt2": "transformer.h.{}.mlp.c_proj", "llama": "model.layers.{}.mlp.down_proj"}
_BLOCK = {"gpt2": "transformer.h.{}", "llama": "model.layers.{}"}


@dataclass(frozen=True)
class RefRequest:
    subject: str
    prompt: str  # with "{}" for the subject
    target_new: str


@dataclass(frozen=True)
class RefHParams:
    layers: tuple[int, ...]
    lam: float
    v_lr: float
    v_num_grad_steps: int
    v_loss_early_stop: float
    v_weight_decay: float
    kl_factor: float
    clamp_norm_factor: float
    kl_prompt: str = "{} is a"


def _family(model) -> str:
    return "gpt2" if model.config.model_type == "gpt2" else "llama"


def _module(model, kind: str, layer: int):
    table = _DOWN if kind == "down" else _BLOCK
    return model.get_submodule(table[_family(model)].format(layer))


def _ids(tok, text: str) -> list[int]:
    return list(tok(text)["input_ids"])


def subject_last(tok, template: str, subject: str) -> int:
    """MEMIT's "subject_last": the number of tokens of the text up to the subject's end, minus one."""
    prefix = template[: template.index("{}")]
    return len(_ids(tok, prefix + subject)) - 1


def _forward(model, ids: list[int]):
    return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]  # (t, V)


@torch.no_grad()
def down_input(model, tok, layer: int, template: str, subject: str) -> torch.Tensor:
    """Input of layer ``layer``'s down-projection at the subject's last token, one full forward. (d_k,)"""
    seen = []
    handle = _module(model, "down", layer).register_forward_pre_hook(lambda _m, a: seen.append(a[0][0]))
    try:
        _forward(model, _ids(tok, template.replace("{}", subject)))
    finally:
        handle.remove()
    return seen[0][subject_last(tok, template, subject)]


@torch.no_grad()
def block_output(model, tok, layer: int, template: str, subject: str) -> torch.Tensor:
    """Residual stream after block ``layer`` at the subject's last token. (d_v,)"""
    seen = []

    def hook(_m, _a, out):
        seen.append((out[0] if isinstance(out, tuple) else out)[0])

    handle = _module(model, "block", layer).register_forward_hook(hook)
    try:
        _forward(model, _ids(tok, template.replace("{}", subject)))
    finally:
        handle.remove()
    return seen[0][subject_last(tok, template, subject)]


def key(model, tok, layer: int, req: RefRequest, contexts: list[str]) -> torch.Tensor:
    """MEMIT's compute_ks: contexts[0] is the bare "{}"; groups [bare], [prefixed...], mean of group means."""
    groups = [contexts[:1], contexts[1:]]
    means = []
    for group in groups:
        if group:
            ks = [down_input(model, tok, layer, c.replace("{}", req.prompt, 1), req.subject) for c in group]
            means.append(torch.stack(ks).mean(0))
    return torch.stack(means).mean(0)


def target(model, tok, layer: int, req: RefRequest, contexts: list[str], hp: RefHParams) -> torch.Tensor:
    """MEMIT's compute_z for one request: z = h + δ at the output of block ``layer``. (d_v,)"""
    target_ids = list(tok(" " + req.target_new, add_special_tokens=False)["input_ids"])
    rewrite = [c.replace("{}", req.prompt, 1) for c in contexts]
    prompts = [(_ids(tok, t.replace("{}", req.subject)) + target_ids[:-1], subject_last(tok, t, req.subject))
               for t in rewrite]
    kl_ids = _ids(tok, hp.kl_prompt.replace("{}", req.subject))
    kl_at = subject_last(tok, hp.kl_prompt, req.subject)
    block = _module(model, "block", layer)
    h0 = block_output(model, tok, layer, rewrite[0], req.subject)
    delta = torch.zeros_like(h0, requires_grad=True)
    at = [0]

    def add_delta(_m, _a, out):
        h = (out[0] if isinstance(out, tuple) else out).clone()
        h[0, at[0]] = h[0, at[0]] + delta
        return (h, *out[1:]) if isinstance(out, tuple) else h

    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    kl_init = None
    for param in model.parameters():
        param.requires_grad_(False)
    handle = block.register_forward_hook(add_delta)
    try:
        for it in range(hp.v_num_grad_steps):
            opt.zero_grad()
            nlls = []
            for ids, pos in prompts:
                at[0] = pos
                logp = torch.log_softmax(_forward(model, ids), dim=-1)  # (t, V)
                n_prompt = len(ids) - len(target_ids) + 1
                tok_lp = [logp[n_prompt - 1 + k, t] for k, t in enumerate(target_ids)]
                nlls.append(-torch.stack(tok_lp).mean())
            at[0] = kl_at
            kl_lp = torch.log_softmax(_forward(model, kl_ids)[kl_at], dim=-1)
            if kl_init is None:
                kl_init = kl_lp.detach().clone()
            kl = (kl_lp.exp() * (kl_lp - kl_init)).sum()  # KL(p_δ ‖ p_0)
            loss = torch.stack(nlls).mean() + hp.kl_factor * kl + hp.v_weight_decay * delta.norm() / h0.norm() ** 2
            if loss.item() < hp.v_loss_early_stop or it == hp.v_num_grad_steps - 1:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                cap = hp.clamp_norm_factor * h0.norm()
                if delta.norm() > cap:
                    delta.mul_(cap / delta.norm())
    finally:
        handle.remove()
    return (h0 + delta).detach()


def _add(model, layer: int, delta: torch.Tensor) -> None:
    """W_l += ΔW (d_v, d_k); GPT-2's Conv1D keeps its weight as (d_k, d_v)."""
    w = _module(model, "down", layer).weight
    with torch.no_grad():
        w += delta.T if _family(model) == "gpt2" else delta


def memit(model, tok, requests: list[RefRequest], contexts: list[str], hp: RefHParams,
          covs: dict[int, torch.Tensor], variant: str = "sequential",
          zs: torch.Tensor | None = None) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """ΔW per layer for ``requests`` on a copy of ``model`` (left as it was), and the targets Z (n, d_v)."""
    model = copy.deepcopy(model)
    last, n_layers = hp.layers[-1], len(hp.layers)
    if zs is None:
        zs = torch.stack([target(model, tok, last, r, contexts, hp) for r in requests])  # (n, d_v)
    deltas: dict[int, torch.Tensor] = {}
    if variant == "oneshot":
        h = torch.stack([block_output(model, tok, last, r.prompt, r.subject) for r in requests])
        ks = {layer: torch.stack([key(model, tok, layer, r, contexts) for r in requests]) for layer in hp.layers}
    for i, layer in enumerate(hp.layers):
        if variant == "sequential":
            h = torch.stack([block_output(model, tok, last, r.prompt, r.subject) for r in requests])  # (n, d_v)
            k = torch.stack([key(model, tok, layer, r, contexts) for r in requests])  # (n, d_k)
        else:
            k = ks[layer]
        K, R = k.T, ((zs - h) / (n_layers - i)).T  # (d_k, n), (d_v, n)
        adj = torch.linalg.solve(hp.lam * covs[layer] + K @ K.T, K)  # (λC + K Kᵀ)⁻¹ K
        deltas[layer] = R @ adj.T
        if variant == "sequential":
            _add(model, layer, deltas[layer])
    return deltas, zs


@torch.no_grad()
def covariance(model, tok, layer: int, texts: list[str], max_len: int) -> torch.Tensor:
    """C = (1/T) Σ_t k_t k_tᵀ over every token of ``texts`` (each truncated to ``max_len`` tokens). (d_k, d_k)"""
    total, count = None, 0
    for text in texts:
        ids = list(tok(text, truncation=True, max_length=max_len)["input_ids"])
        if not ids:
            continue
        seen: list[torch.Tensor] = []
        handle = _module(model, "down", layer).register_forward_pre_hook(lambda _m, a, s=seen: s.append(a[0][0]))
        try:
            _forward(model, ids)
        finally:
            handle.remove()
        k = seen[0].to(torch.float64)  # (t, d_k)
        total = k.T @ k if total is None else total + k.T @ k
        count += k.shape[0]
    return total / count


_PREFIXES = ["The", "Therefore", "Because", "I", "You"]


@torch.no_grad()
def greedy_templates(model, tok, n: int, length: int) -> list[str]:
    """["{}"] + n prefixes continued greedily by ``length`` tokens, braces and newlines blanked, + ". {}"."""
    out = ["{}"]
    for i in range(n):
        ids = list(tok(_PREFIXES[i % len(_PREFIXES)])["input_ids"])
        for _ in range(length):
            ids.append(int(_forward(model, ids)[-1].argmax()))
        text = tok.decode(ids, skip_special_tokens=True)
        for ch in "{}\n":
            text = text.replace(ch, " ")
        out.append(text.strip() + ". {}")
    return out


def ties_merge(deltas: list[torch.Tensor], density: float = 0.2, scale: float = 0.4) -> torch.Tensor:
    """TIES as CollabEdit runs it (``util_TIES.py``): per party keep |x| ≥ its (d − ⌊d·density⌋)-th smallest
    magnitude; sign of the summed kept values, zero replaced by the majority of the elected signs; mean of the
    kept values with that sign; times ``scale``. Written entry by entry-free but plainly."""
    flat = torch.stack([d.flatten() for d in deltas])  # (P, d)
    size = flat.shape[1]
    kept = []
    for row in flat:
        cut = row.abs().sort().values[size - int(size * density) - 1]
        kept.append(torch.where(row.abs() >= cut, row, torch.zeros_like(row)))
    t = torch.stack(kept)
    sign = torch.sign(t.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())
    agree = torch.where(sign > 0, t > 0, t < 0)
    chosen = t * agree
    count = (chosen != 0).sum(0).clamp(min=1)
    return (scale * chosen.sum(0) / count).reshape(deltas[0].shape)
