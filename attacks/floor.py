"""The black-box floor with relation prompts: does the edited model answer a candidate differently?

Whoever may query the edited model (every party holding the weights, or a party of a served release within its
budget) asks, for each candidate subject c and each public relation template t (CounterFact's 34, one per relation:
``attacks.candidates.relation_templates``), for the next-token distribution after t(c), and compares it with the
public model's: KL(edited ‖ public). An edit moves its subject's answers on its own relation (and, by
generalization, on that relation's other phrasings); an unrelated subject barely moves. The score of c is the
largest KL over the templates (``max``) or their sum (``sum``). Cost: len(templates) queries to the edited model per
candidate, one full forward pass each; the public model's answers are the attacker's own offline work, computed once
for every session.

This is the same knowledge the object attack is given (relation prompts, never the edit's own prompt), and an
attacker's list of relations is public (CounterFact's, Wikidata's). The prompts are scored in order of token length
(less padding) with only the last position through the LM head; ``last_hidden`` is tested against the plain
forward pass. The public model's final hidden states (one d-vector per prompt) and each edited model's KL matrix are
cached per chunk of candidates, so that an interrupted run resumes and a second process (``reverse=True``) shares a
session's chunks from the other end.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from secure_collab.cache import cache_dir, digest_json
from secure_collab.editing.memit import restore, snapshot
from secure_collab.files import private_dir, temp_beside
from secure_collab.models.loading import LoadedModel


@torch.no_grad()
def last_hidden(lm, prompts: Sequence[str], batch: int = 64) -> torch.Tensor:
    """(n, d) float32 final hidden state (after the final norm) at each prompt's last token, in input order; the
    prompts run in order of token length, right-padded."""
    tok = lm.tokenizer
    lengths = [len(ids) for ids in tok(list(prompts))["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    body = lm.model.get_decoder()
    out = torch.empty(len(prompts), lm.model.config.hidden_size, dtype=torch.float32)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        enc = tok([prompts[i] for i in idx], padding=True, padding_side="right", return_tensors="pt")
        last = enc["attention_mask"].sum(1) - 1
        h = body(input_ids=enc["input_ids"].to(lm.device), attention_mask=enc["attention_mask"].to(lm.device),
                 use_cache=False).last_hidden_state
        out[idx] = h[torch.arange(len(idx)), last.to(h.device)].float().cpu()
    return out


@torch.no_grad()
def logprobs_from_hidden(lm, h: torch.Tensor) -> torch.Tensor:
    """(n, vocab) float32 next-token log-probabilities from ``last_hidden``'s states (the model's LM head)."""
    head = lm.model.get_output_embeddings()
    w = head.weight
    return torch.log_softmax(head(h.to(device=w.device, dtype=w.dtype)).float(), -1).cpu()


@torch.no_grad()
def kl_from_hidden(lm, edited: torch.Tensor, public: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """(n,) float64 KL(edited ‖ public) of the next token, from the two models' final hidden states."""
    out = torch.empty(edited.shape[0], dtype=torch.float64)
    for s in range(0, edited.shape[0], rows):
        a = logprobs_from_hidden(lm, edited[s:s + rows]).double()
        b = logprobs_from_hidden(lm, public[s:s + rows]).double()
        out[s:s + rows] = (a.exp() * (a - b)).sum(-1)
    return out


def weights_digest(edited: dict[int, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for layer in sorted(edited):
        t = edited[layer].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{layer}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class TemplateFloor:
    """KL(edited ‖ public) for every (candidate, template), cached per chunk of ``chunk`` candidates."""

    lm: LoadedModel
    candidates: list[str]
    templates: list[str]
    cache: Path | None = None
    chunk: int = 64
    reverse: bool = False
    say: Callable[[str], None] = print

    def _root(self) -> Path:
        lm = self.lm
        key = digest_json({"model": lm.source_digest, "templates": self.templates,
                           "dtype": str(next(lm.model.parameters()).dtype)})[:16]
        return private_dir(cache_dir(self.cache) / "attacks" / "template-floor" / key)

    def _chunks(self, names: Sequence[str]) -> list[tuple[int, list[str]]]:
        parts = [(s, list(names[s:s + self.chunk])) for s in range(0, len(names), self.chunk)]
        return parts[::-1] if self.reverse else parts

    def _prompts(self, names: Sequence[str]) -> list[str]:
        return [t.format(n) for n in names for t in self.templates]

    def _stored(self, path: Path, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        from safetensors.torch import load_file, save_file

        if path.is_file():
            return load_file(str(path))["x"]
        x = make()
        tmp = temp_beside(path)
        save_file({"x": x.contiguous()}, str(tmp))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return x

    def public_hidden(self, names: Sequence[str]) -> torch.Tensor:
        path = private_dir(self._root() / "public") / f"{digest_json(list(names))[:24]}.safetensors"
        return self._stored(path, lambda: last_hidden(self.lm, self._prompts(names)))

    def scores(self, edited: dict[int, torch.Tensor], rows: Sequence[int] | None = None) -> torch.Tensor:
        """(N, len(templates)) float32 KL(edited ‖ public) of the next token after each template of each candidate
        (``rows``: of those candidates only, in that order): the public model as it is, then with the ``edited``
        weights loaded (restored afterwards)."""
        lm = self.lm
        root = private_dir(self._root() / f"edited-{weights_digest(edited)[:24]}")
        wanted = self.candidates if rows is None else [self.candidates[i] for i in rows]
        out = torch.empty(len(wanted), len(self.templates), dtype=torch.float32)
        done = 0
        for s, names in self._chunks(wanted):
            path = root / f"{digest_json(list(names))[:24]}.safetensors"
            public = self.public_hidden(names)

            def make(names: list[str] = names, public: torch.Tensor = public) -> torch.Tensor:
                saved = snapshot(lm, tuple(edited))
                restore(lm, edited)  # sets these layers' weights: the edited model
                try:
                    h = last_hidden(lm, self._prompts(names))
                finally:
                    restore(lm, saved)
                return kl_from_hidden(lm, h, public).float().view(len(names), len(self.templates))

            out[s:s + len(names)] = self._stored(path, make)
            done += len(names)
            if done % (self.chunk * 2) == 0 or done == len(wanted):
                self.say(f"template floor: {done}/{len(wanted)} candidates × {len(self.templates)} templates")
        return out


def cascade(screen: torch.Tensor, rescore: torch.Tensor, shortlist: int) -> torch.Tensor:
    """A budgeted black box: the ``shortlist`` best candidates of the cheap ``screen`` are rescored with the
    templates and ranked first, in the order of ``rescore``; the others keep the screen's order below them."""
    order = torch.argsort(screen, descending=True)
    top = order[:shortlist]
    out = screen.double() - float(screen.max()) - 1.0  # every unchecked candidate below every checked one
    out[top] = rescore[top].double() - float(rescore[top].min()) + 1.0
    return out
