"""Context templates: short texts the model itself generates from fixed prefixes, deterministic from a seed.

MEMIT averages each key over the bare prompt and over the prompt after such prefixes, so that the edit holds
in context. All parties of a session must use the same list: they compare ``templates_digest``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from secure_collab.cache import cache_dir, digest_json

PREFIXES = ("The", "Therefore", "Because", "I", "You")


@torch.no_grad()
def generate_context_templates(model, tok, n: int, length: int, seed: int, top_k: int = 5) -> list[str]:
    """["{}"] + n generated prefixes of ``length`` tokens, each ending with ". {}" (top-k sampling, seeded)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device = next(model.parameters()).device
    out = ["{}"]
    for i in range(n):
        ids = tok(PREFIXES[i % len(PREFIXES)], return_tensors="pt", add_special_tokens=True)["input_ids"]
        ids = ids.to(device)
        for _ in range(length):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1].float().cpu()
            top = torch.topk(logits, top_k)
            probs = torch.softmax(top.values, -1)
            nxt = top.indices[torch.multinomial(probs, 1, generator=gen)]
            ids = torch.cat([ids, nxt.to(device).view(1, 1)], dim=1)
        text = tok.decode(ids[0], skip_special_tokens=True)
        text = text.replace("{", " ").replace("}", " ").replace("\n", " ").strip()
        out.append(text + ". {}")
    return out


def templates_digest(templates: list[str]) -> str:
    return digest_json(templates)


def context_templates(lm, n: int, length: int, seed: int, cache: Path | None = None) -> list[str]:
    """Cached by (model digest, n, length, seed) under the cache directory."""
    key = digest_json({"model": lm.source_digest, "n": n, "length": length, "seed": seed})[:24]
    path = cache_dir(cache) / "templates" / f"{key}.json"
    if path.is_file():
        return list(json.loads(path.read_text()))
    templates = generate_context_templates(lm.model, lm.tokenizer, n, length, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(templates, ensure_ascii=False, indent=1))
    return templates
