"""Target recovery: patch a recovered residual into the public model's upper blocks and read off the object.

A recovered residual r̂ (from R Kᵀ with a recovered key, or ΔW applied to one) is added at the output of the
last edited block, at the subject's last token of a prompt, exactly where MEMIT's target optimisation put its
δ; the rest of the public model runs on top of it and candidate objects are ranked by the next-token
probability of their first token. This uses every block above the edit, which is stronger than reading the
residual with the unembedding (a logit lens) at an early layer.

What the object attack is given, exactly (``runner.target_rows``, ``session_views``): each edit's true subject
(the subject attacks recover it first, at the recall they report: the object figures are conditional on that),
the edit's own prompt (its relation template, public and few in CounterFact), and the subject's key computed by
the public model from that prompt (``keys_view``: what the attacker computes once it has subject and prompt);
from the release view, ΔW (or ΣB, ΣG) and λC. It is not given the target, the residual or z*.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from secure_collab.editing.tokens import encode
from secure_collab.models.hooks import edit_output


def object_first_tokens(tok, objects: Sequence[str]) -> dict[int, list[str]]:
    """First token id of " " + object -> the objects that start with it."""
    out: dict[int, list[str]] = {}
    for o in objects:
        ids = tok(" " + o, add_special_tokens=False)["input_ids"]
        if ids:
            out.setdefault(int(ids[0]), []).append(o)
    return out


@torch.no_grad()
def patched_next_token_logprobs(lm, template: str, subject: str, layer: int, delta: torch.Tensor | None
                                ) -> torch.Tensor:
    """log P(next token | template filled with subject) with ``delta`` (d_v) added to block ``layer``'s output
    at the subject's last token (None: the unpatched model). (vocab,)."""
    b = encode(lm.tokenizer, [template], [subject], lm.device)
    pos = int(b.subject_last[0])
    block = lm.model.get_submodule(lm.spec.block_name(layer))

    def run() -> torch.Tensor:
        out = lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
        return torch.log_softmax(out.logits[0, -1].double(), -1)

    if delta is None:
        return run()

    def add(h: torch.Tensor) -> torch.Tensor:  # defined after the None check, so delta is a Tensor here
        h = h.clone()
        h[0, pos] += delta.to(h.dtype).to(h.device)
        return h

    with edit_output(block, add):
        return run()


def rank_objects(logprobs: torch.Tensor, first_tokens: dict[int, list[str]], truth: str, tok) -> int:
    """0-based rank of ``truth``'s first token among the candidate objects' first tokens (ties count against)."""
    ids = torch.tensor(sorted(first_tokens), dtype=torch.long)
    t = tok(" " + truth, add_special_tokens=False)["input_ids"][0]
    scores = logprobs[ids]
    own = logprobs[t]
    return int((scores > own).sum()) + int(((scores == own) & (ids != t)).sum())


def residual_from_stats(b: torch.Tensor, g: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """r̂_j = B G⁺ k_j for each row of ``keys`` (n, d_k) -> (n, d_v): exactly r_j for the edited keys when they
    are linearly independent (Kᵀ (K Kᵀ)⁺ K = I)."""
    evals, evecs = torch.linalg.eigh(0.5 * (g.double() + g.double().T))
    keep = evals > 1e-10 * evals.abs().max()
    pinv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T  # G⁺ on its numeric range
    return (b.double() @ (pinv @ keys.double().T)).T


@torch.no_grad()
def model_shift_scores(lm_edited_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(edited ‖ unedited) per row: how much the edited model's next-token distribution moved."""
    p = lm_edited_logprobs.exp()
    return (p * (lm_edited_logprobs - base_logprobs)).sum(-1)


@torch.no_grad()
def next_token_logprobs(lm, prompts: list[str], batch: int = 32) -> torch.Tensor:
    """(n, vocab) float32 log-probabilities of the next token after each prompt (right-padded batches)."""
    out = []
    tok = lm.tokenizer
    for s in range(0, len(prompts), batch):
        enc = tok(prompts[s:s + batch], padding=True, padding_side="right", return_tensors="pt")
        last = enc["attention_mask"].sum(1) - 1
        logits = lm.model(input_ids=enc["input_ids"].to(lm.device),
                          attention_mask=enc["attention_mask"].to(lm.device), use_cache=False).logits
        out.append(torch.log_softmax(logits[torch.arange(len(last)), last].float(), -1).cpu())
    return torch.cat(out)
