"""Prompt assembly and tokenisation with the position of the subject's last token.

Positions come from the fast tokenizer's character offsets, so they are right whatever the BPE merges at the
subject's boundary (MEMIT tokenises prefix and subject separately, which can be off by one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def fill(template: str, subject: str) -> tuple[str, int, int]:
    """Replace the single "{}" with the subject; return (text, subject_start, subject_end) in characters."""
    start = template.index("{}")
    text = template[:start] + subject + template[start + 2 :]
    return text, start, start + len(subject)


def with_context(context: str, prompt: str) -> str:
    """A context template ("<generated text>. {}") around a request prompt ("The capital of {} is")."""
    i = context.index("{}")
    return context[:i] + prompt + context[i + 2 :]


@dataclass
class Batch:
    input_ids: torch.Tensor  # (b, t), right-padded
    attention_mask: torch.Tensor  # (b, t)
    subject_last: torch.Tensor  # (b,) index of the subject's last token
    lengths: torch.Tensor  # (b,) number of real tokens


def encode(tok, templates: list[str], subjects: list[str], device: torch.device) -> Batch:
    """Tokenise ``template.replace("{}", subject)`` for each pair, right-padded, with subject positions."""
    texts, ends = [], []
    for template, subject in zip(templates, subjects, strict=True):
        text, _, end = fill(template, subject)
        texts.append(text)
        ends.append(end)
    enc = tok(texts, return_offsets_mapping=True, padding=True, padding_side="right",
              add_special_tokens=True, return_tensors="pt")
    offsets = enc["offset_mapping"]  # (b, t, 2)
    mask = enc["attention_mask"]
    last = []
    for row, end in enumerate(ends):
        # the last real token whose character span starts before the subject's end
        real = mask[row].bool() & (offsets[row, :, 1] > offsets[row, :, 0])
        starts = offsets[row, :, 0]
        candidates = torch.nonzero(real & (starts < end)).flatten()
        if len(candidates) == 0:
            raise ValueError(f"cannot locate the subject in {texts[row]!r}")
        last.append(int(candidates[-1]))
    return Batch(
        input_ids=enc["input_ids"].to(device),
        attention_mask=mask.to(device),
        subject_last=torch.tensor(last, device=device),
        lengths=mask.sum(1).to(device),
    )
