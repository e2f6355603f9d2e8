"""Keys (down-projection inputs) and residual-stream states at the subject's last token."""

from __future__ import annotations

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.tokens import encode, with_context
from secure_collab.models.hooks import StopForward, capture_input, capture_output
from secure_collab.models.loading import LoadedModel


def _rows(requests: list[Request], templates: list[str]) -> tuple[list[str], list[str]]:
    prompts, subjects = [], []
    for r in requests:
        for c in templates:
            prompts.append(with_context(c, r.prompt))
            subjects.append(r.subject)
    return prompts, subjects


@torch.no_grad()
def _at_subject(lm: LoadedModel, prompts: list[str], subjects: list[str], module_name: str,
                use_input: bool, batch_size: int) -> torch.Tensor:
    """Input (or output) of ``module_name`` at each prompt's subject-last token: (rows, d). Stops the forward there."""
    module = lm.model.get_submodule(module_name)
    out = []
    for s in range(0, len(prompts), batch_size):
        b = encode(lm.tokenizer, prompts[s : s + batch_size], subjects[s : s + batch_size], lm.device)
        cm = capture_input(module, stop=True) if use_input else capture_output(module, stop=True)
        with cm as store:
            try:
                lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
            except StopForward:
                pass
        h = store[0]  # (b, t, d)
        out.append(h[torch.arange(h.shape[0], device=h.device), b.subject_last])
    return torch.cat(out)


def rows_per_batch(request_batch: int, n_requests: int, rows_per_request: int) -> int:
    """Forward batch size in rows: whole requests only, ``request_batch`` of them (0: up to about 64 rows)."""
    per = request_batch if request_batch > 0 else max(1, min(n_requests, 64 // rows_per_request))
    return per * rows_per_request


def compute_keys(lm: LoadedModel, requests: list[Request], layer: int, templates: list[str],
                 request_batch: int = 0) -> torch.Tensor:
    """k_j at ``layer``: ½ the bare prompt's key + ½ the mean over the context-prefixed prompts. (n, d_k)."""
    prompts, subjects = _rows(requests, templates)
    batch_size = rows_per_batch(request_batch, len(requests), len(templates))
    k = _at_subject(lm, prompts, subjects, lm.spec.down_name(layer), True, batch_size)
    k = k.view(len(requests), len(templates), -1)  # (n, T, d_k); template 0 is the bare "{}"
    if len(templates) == 1:
        return k[:, 0]
    return 0.5 * k[:, 0] + 0.5 * k[:, 1:].mean(1)


def subject_keys(lm: LoadedModel, subjects: list[str], layer: int, templates: list[str],
                 request_batch: int = 8) -> torch.Tensor:
    """Keys of bare subject names (prompt "{}": no relation) at ``layer``, (N, d_k) float64: what an attacker ranks
    candidates by, and what camouflage mixes. For a prompt that opens with the subject this is the edit's key
    exactly: a causal model's state at the subject's last token does not depend on what follows it."""
    reqs = [Request(subject=n, prompt="{}", target_new="-") for n in subjects]
    return compute_keys(lm, reqs, layer, templates, request_batch).double().cpu()


def block_outputs(lm: LoadedModel, requests: list[Request], layer: int, request_batch: int = 0) -> torch.Tensor:
    """h_j: output of decoder block ``layer`` at the subject's last token of the bare prompt. (n, d_v)."""
    batch_size = rows_per_batch(request_batch, len(requests), 1)
    prompts = [r.prompt for r in requests]
    subjects = [r.subject for r in requests]
    return _at_subject(lm, prompts, subjects, lm.spec.block_name(layer), False, batch_size)
