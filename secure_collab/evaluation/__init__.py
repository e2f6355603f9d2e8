"""What an edit did to the model: CounterFact's probability metrics (``counterfact``), greedy-generation and
fluency metrics (``generation``) and zsRE's token-level metrics (``zsre``); the public API re-exported here."""

from secure_collab.evaluation.counterfact import (
    MARGINS,
    EvalResult,
    RequestEval,
    completion_argmax,
    completion_nlls,
    encode_completion,
    evaluate,
    evaluate_requests,
    harmonic_mean,
    nll_to_prob,
    score_of,
    summarize,
)
from secure_collab.evaluation.generation import (
    GenerationResult,
    fluency,
    fluency_prompts,
    generate,
    generation_metrics,
    ngram_entropy,
    says,
)
from secure_collab.evaluation.zsre import ZsreResult, evaluate_zsre, loc_pair, loc_predictions

__all__ = [
    "MARGINS",
    "EvalResult",
    "GenerationResult",
    "RequestEval",
    "ZsreResult",
    "completion_argmax",
    "completion_nlls",
    "encode_completion",
    "evaluate",
    "evaluate_requests",
    "evaluate_zsre",
    "fluency",
    "fluency_prompts",
    "generate",
    "generation_metrics",
    "harmonic_mean",
    "loc_pair",
    "loc_predictions",
    "ngram_entropy",
    "nll_to_prob",
    "says",
    "score_of",
    "summarize",
]
