"""MEMIT's CounterFact metrics for a list of requests: efficacy, generalization, specificity and their Score.

For a prompt and a target the measure is the mean per-token NLL of ``" " + target`` following the prompt.
- efficacy: fraction of requests whose edit prompt gives NLL(new) < NLL(true) (MEMIT's rewrite success);
- generalization: per request the fraction of paraphrase prompts with NLL(new) < NLL(true), averaged over
  requests (MEMIT's summarize: mean of per-case means);
- specificity: per request the fraction of neighbourhood prompts with NLL(true) < NLL(new), where "true" is
  the prompt's own object (``Request.neighbor_target``), averaged over requests;
- score: MEMIT's harmonic mean of exactly these three metrics (``score_of``);
- margins (continuous companions of the three, which yes/no metrics with ~12-nat margins cannot see move):
  ``target_margin`` = mean over requests of NLL(true) − NLL(new) on the edit prompt, ``paraphrase_margin`` the
  same on the paraphrases (mean per request, then over requests), ``neighbourhood_margin`` the same on the
  neighbourhood prompts with each prompt's own true object (> 0 there: the edit leaked onto a neighbour). Nats
  of mean per-token NLL, i.e. the log-probability margin of the new object over the true one.
A metric with no request to measure it on is None and named in ``skipped`` with the reason; the score is then
None too (a harmonic mean of two metrics is not MEMIT's Score). Requests without ``target_true`` are reported
with NLL(new) only and are left out of all three metrics.

Tokenisation: the prompt and ``prompt + " " + target`` are tokenised; when the second starts with the first
(BPE tokenizers, where a word with its leading space never merges with the text before it) the target is the
rest. Otherwise (a tokenizer that merges across the boundary) the target is tokenised alone, without special
tokens, and appended to the prompt's tokens, as MEMIT does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from secure_collab.data.requests import Request


@dataclass
class RequestEval:
    case_id: str | None
    nll_new: float  # edit prompt, mean per-token NLL of " " + target_new
    nll_true: float | None
    paraphrase: list[tuple[float, float]] = field(default_factory=list)  # (nll_new, nll_true) per prompt
    neighborhood: list[tuple[float, float]] = field(default_factory=list)  # (nll_new, nll_true_i) per prompt

    @property
    def rewrite_success(self) -> bool | None:
        return None if self.nll_true is None else self.nll_new < self.nll_true

    @property
    def paraphrase_success(self) -> float | None:
        return _mean([new < true for new, true in self.paraphrase]) if self.paraphrase else None

    @property
    def neighborhood_success(self) -> float | None:
        return _mean([true < new for new, true in self.neighborhood]) if self.neighborhood else None


@dataclass
class EvalResult:
    efficacy: float | None
    generalization: float | None
    specificity: float | None
    score: float | None
    counts: dict[str, int]  # requests each metric was measured on
    skipped: dict[str, str]  # metric -> why it is None
    details: list[RequestEval]
    margins: dict[str, float | None] = field(default_factory=dict)  # MARGINS -> mean margin (nats) or None

    def summary(self) -> dict:
        """The four numbers, the three margins, counts and skipped metrics, JSON-ready."""
        return {"efficacy": self.efficacy, "generalization": self.generalization,
                "specificity": self.specificity, "score": self.score, **self.margins, "counts": dict(self.counts),
                "skipped": dict(self.skipped)}


MARGINS = ("target_margin", "paraphrase_margin", "neighbourhood_margin")


def _mean(xs: Sequence[float | bool]) -> float:
    return float(sum(xs)) / len(xs)


def harmonic_mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no values")
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def score_of(values: Sequence[float | None]) -> float | None:
    """MEMIT's Score: the harmonic mean of exactly three metrics (efficacy, generalization, specificity or
    locality); None when any of them is missing."""
    if len(values) != 3:
        raise ValueError(f"the score is the harmonic mean of three metrics, got {len(values)}")
    present = [v for v in values if v is not None]
    return harmonic_mean(present) if len(present) == 3 else None


def encode_completion(tokenizer, prompt: str, target: str) -> tuple[list[int], int]:
    """(token ids of prompt + " " + target, number of trailing ids that are the target)."""
    p = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + " " + target)["input_ids"]
    if len(full) > len(p) and full[:len(p)] == p:
        return full, len(full) - len(p)
    t = tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    if not t:
        raise ValueError(f"target {target!r} tokenises to nothing")
    return p + t, len(t)


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def completion_nlls(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
    """Mean per-token NLL of " " + target after prompt, for each (prompt, target); batched, right-padded."""

    def nll(logp: torch.Tensor, target: torch.Tensor) -> float:
        return float(-logp.gather(1, target[:, None]).mean())

    return completion_scores(model, tokenizer, pairs, nll, batch_size)


def completion_argmax(model, tokenizer, pairs: Sequence[tuple[str, str]],
                      batch_size: int = 32) -> list[tuple[list[int], list[int]]]:
    """Teacher-forced (predicted, target) token ids of " " + target after prompt: the argmax at each position
    that predicts a target token, and that token (zsRE's token-level accuracy)."""

    def pick(logp: torch.Tensor, target: torch.Tensor) -> tuple[list[int], list[int]]:
        return logp.argmax(-1).tolist(), target.tolist()

    return completion_scores(model, tokenizer, pairs, pick, batch_size)


def completion_scores(model, tokenizer, pairs: Sequence[tuple[str, str]], fn, batch_size: int = 32) -> list:
    """``fn(log_probs (n, V) float64, target ids (n,))`` for each (prompt, target), n the target's tokens.

    Identical pairs are computed once; sequences are batched by length so little is padding, and where the
    model takes ``logits_to_keep`` only the last positions of a batch go through the unembedding (on SmolLM2
    the 49k-word unembedding is a fifth of the forward).
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    unique = list(dict.fromkeys(pairs))
    encoded = [encode_completion(tokenizer, p, t) for p, t in unique]
    order = sorted(range(len(encoded)), key=lambda j: len(encoded[j][0]))
    keep_ok = _accepts_logits_to_keep(model)
    out: dict[tuple[str, str], Any] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            chunk = [encoded[j] for j in rows]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (b, t)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (b, t)
            for i, (seq, _) in enumerate(chunk):
                ids[i, :len(seq)] = torch.tensor(seq)
                mask[i, :len(seq)] = 1
            first = min(len(seq) - n - 1 for seq, n in chunk)  # earliest position that predicts a target
            kwargs = {"logits_to_keep": width - first} if keep_ok else {}
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False,
                           **kwargs).logits  # (b, t', V): the last t' positions
            offset = width - logits.shape[1]
            for i, (seq, n) in enumerate(chunk):
                pos = torch.arange(len(seq) - n - 1, len(seq) - 1, device=logits.device) - offset  # (n,)
                logp = torch.log_softmax(logits[i, pos].double(), dim=-1)  # (n, V)
                target = torch.tensor(seq[len(seq) - n:], device=logits.device)  # (n,)
                out[unique[rows[i]]] = fn(logp, target)
    return [out[pair] for pair in pairs]


def evaluate_requests(model, tokenizer, requests: Sequence[Request], batch_size: int = 32) -> EvalResult:
    """CounterFact metrics of ``model`` on ``requests`` (see the module docstring)."""
    pairs: list[tuple[str, str]] = []

    def ask(prompt: str, target: str) -> int:
        pairs.append((prompt, target))
        return len(pairs) - 1

    plan = []  # per request: (edit (new, true), [(new, true)] paraphrase, [(new, true)] neighbours)
    for r in requests:
        new = ask(r.text, r.target_new)
        true = ask(r.text, r.target_true) if r.target_true is not None else None
        para = [(ask(p, r.target_new), ask(p, r.target_true)) for p in r.paraphrase_prompts
                if r.target_true is not None]
        neigh = []
        if r.target_true is not None:
            for i, p in enumerate(r.neighborhood_prompts):
                obj = r.neighbor_target(i)
                if obj is not None and obj != r.target_new:  # an identical pair cannot be compared
                    neigh.append((ask(p, r.target_new), ask(p, obj)))
        plan.append((new, true, para, neigh))
    nll = completion_nlls(model, tokenizer, pairs, batch_size)

    details = [RequestEval(r.case_id, nll[new], None if true is None else nll[true],
                           [(nll[a], nll[b]) for a, b in para], [(nll[a], nll[b]) for a, b in neigh])
               for r, (new, true, para, neigh) in zip(requests, plan, strict=True)]
    return summarize(details)


def summarize(details: Sequence[RequestEval]) -> EvalResult:
    """The metrics, Score and margins of per-request evaluations (the one aggregation every caller uses)."""
    values = {
        "efficacy": [float(d.rewrite_success) for d in details if d.rewrite_success is not None],
        "generalization": [d.paraphrase_success for d in details if d.paraphrase_success is not None],
        "specificity": [d.neighborhood_success for d in details if d.neighborhood_success is not None],
    }
    reasons = {"efficacy": "no request has target_true",
               "generalization": "no request has paraphrase prompts and target_true",
               "specificity": "no request has neighbourhood prompts and target_true"}
    metrics = {k: (_mean(v) if v else None) for k, v in values.items()}
    return EvalResult(
        efficacy=metrics["efficacy"], generalization=metrics["generalization"],
        specificity=metrics["specificity"], score=score_of(list(metrics.values())),
        counts={k: len(v) for k, v in values.items()},
        skipped={k: reasons[k] for k, m in metrics.items() if m is None},
        details=list(details), margins=margins(details),
    )


def request_margins(d: RequestEval) -> dict[str, float | None]:
    """One request's ``MARGINS`` (nats, NLL(true) − NLL(new); None where it lacks the prompts or ``target_true``)."""
    return {
        "target_margin": None if d.nll_true is None else d.nll_true - d.nll_new,
        "paraphrase_margin": _mean([t - n for n, t in d.paraphrase]) if d.paraphrase else None,
        "neighbourhood_margin": _mean([t - n for n, t in d.neighborhood]) if d.neighborhood else None,
    }


def margins(details: Sequence[RequestEval]) -> dict[str, float | None]:
    """``MARGINS`` over per-request evaluations: the mean of ``request_margins`` over the requests that have it."""
    per = [request_margins(d) for d in details]
    out: dict[str, float | None] = {}
    for k in MARGINS:
        xs = [v for m in per if (v := m[k]) is not None]
        out[k] = sum(xs) / len(xs) if xs else None
    return out


def evaluate(loaded, requests: Sequence[Request], batch_size: int = 32) -> EvalResult:
    """``evaluate_requests`` on a ``LoadedModel``."""
    return evaluate_requests(loaded.model, loaded.tokenizer, requests, batch_size)


def nll_to_prob(nll: float) -> float:
    """exp(-mean NLL): the geometric-mean per-token probability, for reports."""
    return math.exp(-nll)
