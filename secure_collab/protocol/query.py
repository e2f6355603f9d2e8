"""A served release's queries: what a party asks the solver's edited model, what it answers, and their bounds.

With ``session.release = "served"`` no party receives ΔW; the solver's host applies it and answers queries. A query
travels party -> coordinator -> solver as a QUERY message, its answer solver -> coordinator -> party as an ANSWER
(``protocol.messages``); the coordinator relays both unread. The payload frame of each is one fixed-size plaintext
encrypted on the party's channel with the solver (``protection.sealing.encrypt_channel`` under ``channel_key``,
associated data ``statements.query_label(session, config, party, counter, direction)``)::

    plaintext  = u32 big-endian n || n bytes of UTF-8 JSON || zero bytes up to QUERY_BYTES (ANSWER_BYTES)
    frame      = 12-byte nonce || ChaCha20-Poly1305 ciphertext of plaintext || 16-byte tag   (CHANNEL_OVERHEAD)

so every query has one size and every answer another, whatever they say. The JSON of a query is one of::

    {"kind": "logprobs", "prompt": P, "candidates": [C, ...]}   log P(" " + C | P) under the edited model, per C
    {"kind": "generate", "prompt": P, "max_tokens": N}           N greedy tokens after P, decoded
    {"kind": "done"}                                              this party asks nothing more (costs nothing)

and of an answer ``{"ok", "reason", "kind", "cost", "used", "budget"}`` with, when ok, ``logprobs`` (the summed
log-probability of each candidate's tokens, float64) and ``tokens`` (their counts) or ``text``.

Cost: the forward passes the query takes. A logprobs query costs one per candidate (each candidate is one pass
over prompt + candidate), a generate query ``max_tokens`` (one pass per greedy token, whether or not generation
stops early), ``done`` nothing; a query that does not fit what is left of the party's budget is refused whole.
Every field is bounded by the tables below before it is used; the token bounds (``MAX_PROMPT_TOKENS``,
``MAX_CANDIDATE_TOKENS``) need the tokenizer and are checked by the solver.
"""

from __future__ import annotations

import json
from typing import Any

from secure_collab.protection.public import CHANNEL_OVERHEAD
from secure_collab.protocol.schema import Bool, Field, Int, ListOf, MapOf, OneOf, ProtocolError, Str

QUERY_KINDS = ("logprobs", "generate", "done")
# why a query was refused, as the coordinator may see it (the detail, which may describe the query, is only
# inside the encrypted answer): it could not be authenticated (forged, altered, redirected), its counter was not
# above the last one (replayed or reordered), it is malformed, over the budget, the model is not yet served (a step
# is not released), or the party said it was done
REFUSALS = ("", "authentication", "replay", "malformed", "budget", "not-ready", "closed")
UNANSWERED = ("authentication", "replay")  # refused without an encrypted answer: no frame, nothing charged
MAX_QUERY_BUDGET = 10**7  # per party and session (session.query_budget)
MAX_PROMPT_CHARS = 2000
MAX_PROMPT_TOKENS = 256
MAX_CANDIDATES = 16
MAX_CANDIDATE_CHARS = 200
MAX_CANDIDATE_TOKENS = 64
MAX_NEW_TOKENS = 64
MAX_ANSWER_TEXT = 4096  # characters of a generated continuation
MAX_REASON = 512
MAX_QUERY_COST = max(MAX_CANDIDATES, MAX_NEW_TOKENS)
QUERY_BYTES = 32 << 10  # holds the largest query: 2000 + 16 × 200 characters at up to 6 bytes each in JSON
ANSWER_BYTES = 32 << 10
QUERY_FRAME_BYTES = QUERY_BYTES + CHANNEL_OVERHEAD
ANSWER_FRAME_BYTES = ANSWER_BYTES + CHANNEL_OVERHEAD

_PROMPT = Str(MAX_PROMPT_CHARS, min_len=1)
QUERY_SCHEMA: dict[str, Field] = {
    "logprobs": MapOf({"kind": OneOf("logprobs"), "prompt": _PROMPT,
                       "candidates": ListOf(Str(MAX_CANDIDATE_CHARS, min_len=1), MAX_CANDIDATES, min_len=1)}),
    "generate": MapOf({"kind": OneOf("generate"), "prompt": _PROMPT, "max_tokens": Int(1, MAX_NEW_TOKENS)}),
    "done": MapOf({"kind": OneOf("done")}),
}
ANSWER_SCHEMA = MapOf({
    "ok": Bool(), "reason": Str(MAX_REASON), "kind": OneOf("", *QUERY_KINDS), "cost": Int(0, MAX_QUERY_COST),
    "used": Int(0, MAX_QUERY_BUDGET), "budget": Int(0, MAX_QUERY_BUDGET),
    "logprobs": ListOf(Field("float"), MAX_CANDIDATES), "tokens": ListOf(Int(1, MAX_CANDIDATE_TOKENS), MAX_CANDIDATES),
    "text": Str(MAX_ANSWER_TEXT),
}, optional=("logprobs", "tokens", "text"))


def query_cost(query: dict[str, Any]) -> int:
    """Forward passes a checked query takes (see the module docstring)."""
    kind = query["kind"]
    if kind == "logprobs":
        return len(query["candidates"])
    if kind == "generate":
        return int(query["max_tokens"])
    return 0


def check_query(query: Any) -> dict[str, Any]:
    """The query if it is one of the forms with every field in bounds; ProtocolError naming what is wrong."""
    if type(query) is not dict or query.get("kind") not in QUERY_KINDS:
        raise ProtocolError(f"a query is a map whose kind is one of {', '.join(QUERY_KINDS)}")
    QUERY_SCHEMA[query["kind"]].check(query, "query")
    return query


def check_answer(answer: Any) -> dict[str, Any]:
    ANSWER_SCHEMA.check(answer, "answer")
    assert isinstance(answer, dict)
    if answer["ok"] and len(answer.get("logprobs", ())) != len(answer.get("tokens", ())):
        raise ProtocolError("answer: one token count per log-probability")
    return answer


def encode_query(query: dict[str, Any]) -> bytes:
    """A checked query as its fixed-size plaintext (ProtocolError if it is malformed or too large)."""
    return _pad(json.dumps(check_query(query), ensure_ascii=False, separators=(",", ":")).encode(), QUERY_BYTES)


def decode_query(plain: bytes) -> dict[str, Any]:
    return check_query(_unpad(plain, QUERY_BYTES, "query"))


def encode_answer(answer: dict[str, Any]) -> bytes:
    return _pad(json.dumps(check_answer(answer), ensure_ascii=False, separators=(",", ":")).encode(), ANSWER_BYTES)


def decode_answer(plain: bytes) -> dict[str, Any]:
    return check_answer(_unpad(plain, ANSWER_BYTES, "answer"))


def _pad(data: bytes, size: int) -> bytes:
    if len(data) > size - 4:
        raise ProtocolError(f"encoded to {len(data)} bytes; at most {size - 4} fit")
    return len(data).to_bytes(4, "big") + data + bytes(size - 4 - len(data))


def _unpad(plain: bytes, size: int, what: str) -> Any:
    if len(plain) != size:
        raise ProtocolError(f"{what}: {len(plain)} bytes, not {size}")
    n = int.from_bytes(plain[:4], "big")
    if n > size - 4 or any(plain[4 + n:]):
        raise ProtocolError(f"{what}: bad length prefix or padding")
    try:
        return json.loads(plain[4:4 + n].decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: '[' nested 32k deep
        raise ProtocolError(f"{what}: not UTF-8 JSON ({type(exc).__name__})") from None


def _no_constant(name: str) -> Any:  # NaN, Infinity: not JSON, and no bound can hold them
    raise ValueError(f"non-finite constant {name}")
