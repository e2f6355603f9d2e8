"""zsRE's token-level metrics (as MEND, ROME and MEMIT report them): efficacy, generalization, locality, Score.

Every measure is teacher-forced: the question, then " " + answer, and at each position that predicts an answer
token the model's argmax is compared with a token.
- efficacy: per request the fraction of target_new's tokens predicted after the question; mean over requests.
- generalization: the same after the rephrased question (``paraphrase_prompts``).
- locality: the unrelated NQ question ``extra["loc"] + "?"`` with ``extra["loc_ans"]`` teacher-forced: per
  request the fraction of answer positions where the edited model's argmax equals the unedited model's
  (EasyEdit's locality: what the edit changed elsewhere). MEMIT's zsRE "specificity" compares the same
  argmax with loc_ans itself, which mostly measures whether the model knew the NQ answer; it is reported as
  ``loc_answer_accuracy`` beside.
- score: the harmonic mean of the three (``score_of``); None when one is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from secure_collab.data.requests import Request
from secure_collab.evaluation.counterfact import completion_argmax, score_of


def _accuracy(pred: list[int], want: list[int]) -> float:
    return sum(p == w for p, w in zip(pred, want, strict=True)) / len(want)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def loc_pair(r: Request) -> tuple[str, str] | None:
    if "loc" not in r.extra or "loc_ans" not in r.extra:
        return None
    return r.extra["loc"] + "?", r.extra["loc_ans"]


def loc_predictions(model, tokenizer, requests: Sequence[Request], batch_size: int = 32) -> list[list[int] | None]:
    """The argmax tokens at the loc answer's positions, per request (None without loc): take them before the edit."""
    pairs = [loc_pair(r) for r in requests]
    got = completion_argmax(model, tokenizer, [p for p in pairs if p is not None], batch_size)
    it = iter(got)
    return [None if p is None else next(it)[0] for p in pairs]


@dataclass
class ZsreResult:
    efficacy: float | None
    generalization: float | None
    locality: float | None
    score: float | None
    loc_answer_accuracy: float | None
    counts: dict[str, int]
    skipped: dict[str, str]

    def summary(self) -> dict:
        return {"efficacy": self.efficacy, "generalization": self.generalization, "locality": self.locality,
                "score": self.score, "loc_answer_accuracy": self.loc_answer_accuracy, "counts": dict(self.counts),
                "skipped": dict(self.skipped)}


def evaluate_zsre(model, tokenizer, requests: Sequence[Request], unedited_loc: Sequence[list[int] | None] | None,
                  batch_size: int = 32) -> ZsreResult:
    """The metrics of ``model`` on zsRE ``requests``; ``unedited_loc`` from ``loc_predictions`` on the unedited
    model (None: locality is missing, and so is the score)."""
    edit = [(r.text, r.target_new) for r in requests]
    para = [(p, r.target_new) for r in requests for p in r.paraphrase_prompts]
    locs = [loc_pair(r) for r in requests]
    got = completion_argmax(model, tokenizer, edit + para + [p for p in locs if p is not None], batch_size)
    eff = [_accuracy(*got[j]) for j in range(len(edit))]
    gen, k = [], len(edit)
    for r in requests:
        n = len(r.paraphrase_prompts)
        if n:
            gen.append(sum(_accuracy(*got[k + i]) for i in range(n)) / n)
            k += n
    loc_got = iter(got[k:])
    local, answer = [], []
    for j, pair in enumerate(locs):
        if pair is None:
            continue
        pred, want = next(loc_got)
        answer.append(_accuracy(pred, want))
        before = None if unedited_loc is None else unedited_loc[j]
        if before is not None:
            local.append(_accuracy(pred, before))
    metrics = {"efficacy": _mean(eff), "generalization": _mean(gen), "locality": _mean(local)}
    reasons = {"efficacy": "no requests", "generalization": "no request has a rephrased question",
               "locality": "no request has loc / loc_ans, or no unedited predictions were given"}
    return ZsreResult(**metrics, score=score_of(list(metrics.values())), loc_answer_accuracy=_mean(answer),
                      counts={"efficacy": len(eff), "generalization": len(gen), "locality": len(local)},
                      skipped={k_: reasons[k_] for k_, v in metrics.items() if v is None})
