"""One forward and backward pass per edit: the key u and the value gradient ∇v at every answer token.

An edit asks that ``prompt`` (subject filled in) be completed by `` target_new``. The sequence is the prompt's tokens
followed by the answer's tokens but the last; an *answer position* is one whose next-token prediction is an answer
token (the prompt's last token and every answer token but the last), as in MALMEN's label mask. At each answer
position p and edited layer l:
  u_p  = the input of layer l's MLP output projection (d_k)
  ∇v_p = ∂L/∂v_p, v_p = the projection's output (d_v), L = Σ over the edit's answer tokens of −log P(token | prefix)
L is a sum per edit (not a mean over a batch, as the reference's cross-entropy is), so a row depends on its own
edit only: a party's rows are the same whichever other edits share its batch, and collab equals global.
The gradient is taken through a zero tensor added to each projection's output, so the weights stay frozen and the
total derivative through every later layer (edited ones included) is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from secure_collab.data.requests import Request
from secure_collab.models.loading import LoadedModel


@dataclass
class Encoded:
    input_ids: torch.Tensor  # (b, t) right-padded
    attention_mask: torch.Tensor  # (b, t)
    labels: torch.Tensor  # (b, t): the next token at an answer position, −100 elsewhere


def encode_pairs(tok, prompts: list[str], answers: list[str], device: torch.device) -> Encoded:
    """prompt tokens + (" " + answer) tokens[:-1], with labels at the answer positions."""
    seqs, labs = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        p = list(tok(prompt)["input_ids"])
        a = list(tok(" " + answer, add_special_tokens=False)["input_ids"])
        if not p or not a:
            raise ValueError(f"prompt {prompt!r} or answer {answer!r} tokenises to nothing")
        seqs.append(p + a[:-1])
        labs.append([-100] * (len(p) - 1) + a)
    t = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (t - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs], device=device)
    labels = torch.tensor([s + [-100] * (t - len(s)) for s in labs], device=device)
    return Encoded(ids, mask, labels)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−log P(label) at every position (0 where the label is −100): (b, t)."""
    logp = torch.log_softmax(logits, -1)
    safe = labels.clamp_min(0)
    nll = -logp.gather(-1, safe[..., None])[..., 0]
    return torch.where(labels >= 0, nll, torch.zeros_like(nll))


@dataclass
class EditRows:
    """Per edited layer the keys U (r, d_k) and value gradients ∇V (r, d_v) of every answer token, in the model's
    dtype, with the edit each row belongs to (``edit``: (r,), 0-based in the request order)."""

    u: dict[int, torch.Tensor]
    g: dict[int, torch.Tensor]
    edit: torch.Tensor
    n_edits: int

    @property
    def n_rows(self) -> int:
        return int(self.edit.shape[0])


@contextmanager
def probe_outputs(model: nn.Module, names: dict[int, str]) -> Iterator[tuple[dict[int, torch.Tensor],
                                                                          dict[int, torch.Tensor]]]:
    """Capture each named module's input and add a zero leaf (requires grad) to its output: the gradient of a
    loss with respect to that leaf is its gradient with respect to the module's output."""
    inputs: dict[int, torch.Tensor] = {}
    zeros: dict[int, torch.Tensor] = {}
    handles = []
    for layer, name in names.items():
        def hook(_m: nn.Module, args: tuple, out: torch.Tensor, layer: int = layer) -> torch.Tensor:
            inputs[layer] = args[0].detach()
            zeros[layer] = torch.zeros_like(out, requires_grad=True)
            return out + zeros[layer]

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield inputs, zeros
    finally:
        for h in handles:
            h.remove()


def edit_rows(lm: LoadedModel, requests: list[Request], layers: tuple[int, ...], edit_batch: int = 8) -> EditRows:
    """u and ∇v at every answer token of every request, at each of ``layers``, on the model as it is."""
    names = {layer: lm.spec.down_name(layer) for layer in layers}
    us: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    gs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    edit = []
    for s in range(0, len(requests), edit_batch):
        chunk = requests[s : s + edit_batch]
        enc = encode_pairs(lm.tokenizer, [r.text for r in chunk], [r.target_new for r in chunk], lm.device)
        sel = enc.labels >= 0  # (b, t)
        with torch.enable_grad(), probe_outputs(lm.model, names) as (inputs, zeros):
            logits = lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, use_cache=False).logits
            loss = token_nll(logits, enc.labels).sum()  # a sum of per-edit sums
            grads = torch.autograd.grad(loss, [zeros[layer] for layer in layers])
        for layer, grad in zip(layers, grads, strict=True):
            us[layer].append(inputs[layer][sel])  # (rows, d_k)
            gs[layer].append(grad[sel])  # (rows, d_v)
        edit.append((torch.arange(len(chunk), device=lm.device)[:, None] + s).expand_as(sel)[sel])
    return EditRows({layer: torch.cat(v) for layer, v in us.items()}, {layer: torch.cat(v) for layer, v in gs.items()},
                    torch.cat(edit), len(requests))
