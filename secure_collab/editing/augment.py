"""Augmented requests: paraphrased prompts a party generates for a request it must make hold (a won conflict).

The party's own model rewrites the prompt (a few-shot instruction, seeded sampling); a rewrite is kept only if it
still ends where the object follows (its last word is a verb, preposition or article of ``ENDINGS``, or the
prompt's own last word), holds the subject exactly once, does not give the object away, and is neither the prompt
itself nor one of the data set's paraphrase prompts (those are for evaluation). When the
model does not produce enough of them (small models rarely do), the prompt is framed by short lead-ins, one of
them a sentence about the subject that the model writes. Every augmented request keeps the subject, the
relation and the object of the original, so it adds keys for the same fact in other contexts.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

import torch

from secure_collab.data.requests import Request

FEW_SHOT = ("Rewrite the start of the sentence in other words. Keep the name.\n"
            "Sentence: The capital of France is\nRewrite: France has its capital in\n"
            "Sentence: Albert Einstein was born in the city of\nRewrite: The birthplace of Albert Einstein is\n"
            "Sentence: {text}\nRewrite:")
# a prompt stops where the object follows: after a verb, a preposition or an article, not after a name
ENDINGS = frozenset(("is", "was", "are", "were", "be", "been", "of", "by", "in", "from", "for", "as", "the", "a", "an",
                     "to", "at", "with", "on", "into", "speaks", "speak", "spoke", "plays", "played", "play",
                     "called", "named", "language", "works", "worked", "born", "died", "located", "headquarters",
                     "citizen", "native", "religion", "capital", "owned", "produced", "developed", "founded"))
FRAMES = ("Fact: {prompt}", "It is well known that {lower}", "In short, {lower}", "Here is what we know. {prompt}",
          "According to the records, {lower}", "Everyone agrees: {lower}")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _template(candidate: str, request: Request) -> str | None:
    """The rewrite as a prompt template, or None if it does not qualify."""
    text = re.split(r"[\n.!?]", candidate.strip(), maxsplit=1)[0].strip().rstrip(",;:")
    if text.count(request.subject) != 1 or len(text) > 200 or request.target_new.lower() in text.lower():
        return None
    last = text.rsplit(maxsplit=1)[-1].lower() if text.split() else ""
    if last not in ENDINGS and last != request.prompt.rsplit(maxsplit=1)[-1].lower():
        return None
    prompt = text.replace(request.subject, "{}")
    known = {request.prompt, *(p.replace(request.subject, "{}") for p in request.paraphrase_prompts)}
    return None if prompt in known or prompt.count("{}") != 1 else prompt


@torch.no_grad()
def _sample(lm, text: str, max_new: int, gen: torch.Generator, top_k: int = 8) -> str:
    tok, model = lm.tokenizer, lm.model
    ids = tok(text, return_tensors="pt")["input_ids"].to(lm.device)
    start = ids.shape[1]
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and start + max_new > limit:  # a small test model's context is too short for it
        return ""
    for _ in range(max_new):
        logits = model(input_ids=ids, use_cache=False).logits[0, -1].float().cpu()
        top = torch.topk(logits, top_k)
        nxt = top.indices[torch.multinomial(torch.softmax(top.values, -1), 1, generator=gen)]
        ids = torch.cat([ids, nxt.to(lm.device).view(1, 1)], dim=1)
        if "\n" in tok.decode(ids[0, start:]):
            break
    return tok.decode(ids[0, start:], skip_special_tokens=True)


def augmented_requests(lm, request: Request, n: int, seed: int = 0, tries: int = 6) -> list[Request]:
    """``n`` requests for the same fact with prompts the party generated (see the module docstring)."""
    if n <= 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    prompts: list[str] = []
    for _ in range(tries):
        if len(prompts) >= n:
            break
        got = _template(_sample(lm, FEW_SHOT.format(text=request.text), 16, gen), request)
        if got is not None and got not in prompts:
            prompts.append(got)
    if len(prompts) < n:
        lead = (request.subject + _sample(lm, request.subject, 10, gen).split("\n")[0]).strip()
        lead = lead.replace("{", " ").replace("}", " ").rstrip(" .")
        frames = [lead + ". {prompt}", *FRAMES]
        random.Random(seed).shuffle(frames)
        for frame in frames:
            if len(prompts) >= n:
                break
            prompt = frame.format(prompt=request.prompt, lower=_lower_first(request.prompt))
            if prompt.count("{}") == 1 and prompt not in prompts:  # a lead-in naming the subject is plain text
                prompts.append(prompt)
    return [replace(request, prompt=p, case_id=f"{request.case_id}.aug{k}", paraphrase_prompts=(),
                    neighborhood_prompts=(), neighborhood_targets=(), round=request.round)
            for k, p in enumerate(prompts[:n])]
