"""Answering a served release's queries on a model (protocol/query.py), and a party's efficacy measured through them.

The solver's host answers with ``answer_query`` on the edited model; a test (or anyone holding the same weights)
gets the same numbers from the same function. A logprobs answer is, per candidate, the summed log-probability of
the tokens of ``" " + candidate`` after the prompt (``counterfact.encode_completion``'s tokenisation, float64) and
their count, so the mean per-token NLL that CounterFact's metrics compare is ``-logprob / tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from secure_collab.data.requests import Request
from secure_collab.evaluation.counterfact import completion_scores, encode_completion
from secure_collab.evaluation.generation import generate
from secure_collab.protocol import query as wire
from secure_collab.protocol.schema import ProtocolError

LOWEST = -1e300  # a log-probability that underflowed to -inf is sent as this (JSON has no infinity)


def candidate_logprobs(model, tokenizer, prompt: str, candidates: Sequence[str]) -> list[tuple[float, int]]:
    """(Σ log P of the tokens of " " + c after ``prompt``, their count) per candidate c, float64."""

    def total(logp: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:  # logp (n, V), target (n,)
        return max(float(logp.gather(1, target[:, None]).sum()), LOWEST), int(target.numel())

    return completion_scores(model, tokenizer, [(prompt, c) for c in candidates], total)


def check_tokens(tokenizer, query: dict[str, Any]) -> None:
    """The bounds of a checked query that need the tokenizer: the prompt's and each candidate's tokens."""
    if query["kind"] not in ("logprobs", "generate"):
        return
    n_prompt = len(tokenizer(query["prompt"])["input_ids"])
    if n_prompt > wire.MAX_PROMPT_TOKENS:
        raise ProtocolError(f"the prompt has {n_prompt} tokens; at most {wire.MAX_PROMPT_TOKENS}")
    for i, c in enumerate(query.get("candidates", ())):
        try:
            ids, n = encode_completion(tokenizer, query["prompt"], c)
        except ValueError:
            raise ProtocolError(f"candidate {i} tokenises to nothing") from None
        if n > wire.MAX_CANDIDATE_TOKENS:
            raise ProtocolError(f"candidate {i} has {n} tokens; at most {wire.MAX_CANDIDATE_TOKENS}")


def answer_query(model, tokenizer, query: dict[str, Any]) -> dict[str, Any]:
    """The answer fields of one checked query (``protocol.query``): logprobs and tokens, or text."""
    if query["kind"] == "logprobs":
        scores = candidate_logprobs(model, tokenizer, query["prompt"], query["candidates"])
        return {"logprobs": [lp for lp, _ in scores], "tokens": [n for _, n in scores]}
    if query["kind"] == "generate":
        text = generate(model, tokenizer, [query["prompt"]], query["max_tokens"])[0]
        return {"text": text[:wire.MAX_ANSWER_TEXT]}
    raise ProtocolError(f"a {query['kind']} query has no answer")


Ask = Callable[[dict[str, Any]], dict[str, Any]]  # a query -> its decoded answer (parties.queries)


def served_efficacy(ask: Ask, requests: Sequence[Request], budget_left: int) -> dict[str, Any]:
    """CounterFact's efficacy of ``requests`` on the served model, one logprobs query of [new, true] per request
    that has a true object (cost 2 each), while the budget lasts: NLL(new) < NLL(true) in mean per-token NLL, as
    ``counterfact.RequestEval.rewrite_success``. Returns the efficacy over the requests measured, how many were
    measured and skipped, and what it cost."""
    wins, measured, cost, refused = 0, 0, 0, ""
    usable = [r for r in requests if r.target_true is not None]
    for r in usable:
        if budget_left - cost < 2:
            break
        answer = ask({"kind": "logprobs", "prompt": r.text, "candidates": [r.target_new, r.target_true]})
        if not answer["ok"]:
            refused = answer["reason"]
            break
        cost += answer["cost"]
        (lp_new, lp_true), (n_new, n_true) = answer["logprobs"], answer["tokens"]
        wins += -lp_new / n_new < -lp_true / n_true
        measured += 1
    return {"efficacy": wins / measured if measured else None, "measured": measured,
            "skipped": len(requests) - measured, "cost": cost, "refused": refused or None}
