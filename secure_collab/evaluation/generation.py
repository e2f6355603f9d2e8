"""Generation metrics: what the model says without teacher forcing, and how fluent it stays.

- ``gen_efficacy`` / ``gen_generalization`` (as in QAEdit/WILD, arXiv 2502.11177, which finds edits that score
  96.8 % teacher-forced succeed 38.5 % of the time here): greedy-decode the edit prompt (each paraphrase prompt)
  and count a success when the model says target_new: the continuation, after leading whitespace, starts with
  target_new and the character after it, if any, is not a letter or digit ("Paris" passes "Paris, France",
  fails "Parisian"). Decoding stops ``extra_tokens`` tokens after the length of " " + target_new in tokens.
  Generalization is the mean over requests of the fraction of their paraphrases said right.
- ``fluency``: MEMIT's n-gram entropy of sampled text (``generate_fast`` + ``n_gram_entropy``): top-k (5)
  sampling from each generation prompt up to ``max_len`` tokens in all, prompt included; per text the mean of
  the bigram entropy × 2/3 and the trigram entropy × 4/3 (bits); the mean over texts. Words come from a regex
  (runs of letters/digits, or single other characters): MEMIT uses nltk.word_tokenize, whose model data cannot
  be fetched here. Sampling is seeded, so the same prompts draw the same random stream before and after an edit.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from secure_collab.data.requests import Request

_WORD = re.compile(r"\w+|[^\w\s]")


def says(continuation: str, target: str) -> bool:
    """Does the generated ``continuation`` (text after the prompt) state ``target`` first?"""
    text, want = " ".join(continuation.split()), " ".join(target.split())
    if not want or not text.startswith(want):
        return False
    return len(text) == len(want) or not text[len(want)].isalnum()


def _left_padded(tokenizer, prompts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [list(tokenizer(p)["input_ids"]) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)  # (b, t)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (b, t)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def generate(model, tokenizer, prompts: Sequence[str], new_tokens: int, sample_top_k: int | None = None,
             seed: int = 0, batch_size: int = 16) -> list[str]:
    """The decoded continuation of each prompt: greedy (``sample_top_k`` None) or top-k sampling, seeded."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cfg = GenerationConfig(max_new_tokens=new_tokens, do_sample=sample_top_k is not None, top_k=sample_top_k,
                           pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    if sample_top_k is None:
        cfg.top_k = None
    out: list[str] = []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for s in range(0, len(prompts), batch_size):
            ids, mask = _left_padded(tokenizer, prompts[s:s + batch_size], device)
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)  # (b, t + new)
            out += tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return out


@dataclass
class GenerationResult:
    gen_efficacy: float | None
    gen_generalization: float | None
    counts: dict[str, int]
    said: list[str]  # the greedy continuation of each request's edit prompt

    def summary(self) -> dict:
        return {"gen_efficacy": self.gen_efficacy, "gen_generalization": self.gen_generalization,
                "gen_counts": dict(self.counts)}


def generation_metrics(model, tokenizer, requests: Sequence[Request], extra_tokens: int = 2,
                       batch_size: int = 16) -> GenerationResult:
    """Greedy-decode every edit and paraphrase prompt once (grouped by how many tokens they need)."""
    jobs: dict[int, list[tuple[int, int, str]]] = {}  # new tokens -> (request, prompt slot, prompt)
    for j, r in enumerate(requests):
        n = len(tokenizer(" " + r.target_new, add_special_tokens=False)["input_ids"]) + extra_tokens
        for slot, prompt in enumerate((r.text, *r.paraphrase_prompts)):
            jobs.setdefault(n, []).append((j, slot, prompt))
    said: dict[tuple[int, int], str] = {}
    for n, items in sorted(jobs.items()):
        texts = generate(model, tokenizer, [p for _, _, p in items], n, batch_size=batch_size)
        said.update({(j, slot): t for (j, slot, _), t in zip(items, texts, strict=True)})
    eff = [float(says(said[j, 0], r.target_new)) for j, r in enumerate(requests)]
    gen = [sum(says(said[j, 1 + k], r.target_new) for k in range(len(r.paraphrase_prompts)))
           / len(r.paraphrase_prompts) for j, r in enumerate(requests) if r.paraphrase_prompts]
    return GenerationResult(
        gen_efficacy=sum(eff) / len(eff) if eff else None, gen_generalization=sum(gen) / len(gen) if gen else None,
        counts={"gen_efficacy": len(eff), "gen_generalization": len(gen)},
        said=[said[j, 0] for j in range(len(requests))])


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """MEMIT's compute_n_gram_entropy: mean over n of weight_n × entropy (bits) of the n-gram frequencies."""
    words = _WORD.findall(text)
    values = []
    for n, w in zip(ns, weights, strict=True):
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        h = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        values.append(w * h)
    return sum(values) / len(values)


def fluency_prompts(requests: Sequence[Request], n_requests: int, per_request: int) -> list[str]:
    """The fixed sample: the first ``per_request`` generation prompts (else the edit prompt) of the first
    ``n_requests`` requests."""
    out = []
    for r in requests[:n_requests]:
        out += list(r.generation_prompts[:per_request]) or [r.text]
    return out


def fluency(model, tokenizer, prompts: Sequence[str], max_len: int = 100, top_k: int = 5, seed: int = 0,
            batch_size: int = 16) -> float | None:
    """Mean n-gram entropy of prompt + sampled continuation (``max_len`` tokens in all, as MEMIT)."""
    if not prompts:
        return None
    longest = max(len(tokenizer(p)["input_ids"]) for p in prompts)
    texts = generate(model, tokenizer, prompts, max(1, max_len - longest), sample_top_k=top_k, seed=seed,
                     batch_size=batch_size)
    return sum(ngram_entropy(p + t) for p, t in zip(prompts, texts, strict=True)) / len(prompts)
