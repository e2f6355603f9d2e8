"""CounterFact metrics: a hand-checkable unigram model, batching/padding against a manual computation, BPE."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from secure_collab.cache import cache_dir
from secure_collab.data.requests import Request
from secure_collab.evaluation import (
    completion_nlls,
    encode_completion,
    evaluate,
    evaluate_requests,
    harmonic_mean,
    score_of,
)
from secure_collab.models import load_model


class Unigram(nn.Module):
    """Predicts the same distribution at every position, so every NLL can be worked out by hand."""

    def __init__(self, logp: torch.Tensor) -> None:
        super().__init__()
        self.logp = nn.Parameter(logp, requires_grad=False)  # (V,)

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return SimpleNamespace(logits=self.logp.expand(*input_ids.shape, -1))  # (b, t, V)


@pytest.fixture(scope="module")
def byte_tok():
    return load_model("tiny-gpt2", device="cpu").tokenizer


@pytest.fixture(scope="module")
def unigram(byte_tok):
    probs = {"Ġ": 0.5, "b": 0.2, "a": 0.1, "z": 0.01}  # "Ġ" is the byte-level space
    ids = {byte_tok.convert_tokens_to_ids(t): p for t, p in probs.items()}
    v = len(byte_tok)
    rest = (1 - sum(probs.values())) / (v - len(probs))
    p = torch.tensor([ids.get(i, rest) for i in range(v)], dtype=torch.float64)
    return Unigram(p.log()), probs


def test_nll_by_hand(byte_tok, unigram):
    model, p = unigram
    (got,) = completion_nlls(model, byte_tok, [("X is", "ab")])
    assert got == pytest.approx(-(math.log(p["Ġ"]) + math.log(p["a"]) + math.log(p["b"])) / 3, rel=1e-12)


def test_metrics_by_hand(byte_tok, unigram):
    model, _ = unigram  # NLL order: " b" < " a" < " z"
    reqs = [
        Request(subject="X", prompt="{} is", target_new="a", target_true="z", case_id="r1",
                paraphrase_prompts=("X p", "X q"), neighborhood_prompts=("Y is", "W is"),
                neighborhood_targets=("b", "z")),  # rewrite ok; paraphrases 2/2; neighbours: b beats a, z does not
        Request(subject="Q", prompt="{} is", target_new="z", target_true="a", case_id="r2",
                neighborhood_prompts=("R is",)),  # rewrite fails; neighbour (true a) beats z
        Request(subject="S", prompt="{} is", target_new="b", case_id="r3"),  # no target_true: NLL only
    ]
    res = evaluate_requests(model, byte_tok, reqs, batch_size=2)
    assert res.efficacy == 0.5 and res.generalization == 1.0 and res.specificity == 0.75
    assert res.score == pytest.approx(3 / (1 / 0.5 + 1 / 1.0 + 1 / 0.75))
    assert res.counts == {"efficacy": 2, "generalization": 1, "specificity": 2}
    assert res.skipped == {}
    r1, r2, r3 = res.details
    assert r1.rewrite_success and not r2.rewrite_success and r3.rewrite_success is None
    assert r3.nll_true is None and r3.paraphrase == [] and r1.neighborhood_success == 0.5
    assert set(res.summary()) >= {"efficacy", "generalization", "specificity", "score", "skipped"}


def test_missing_prompts_are_skipped_and_said(byte_tok, unigram):
    model, _ = unigram
    reqs = [Request(subject="X", prompt="{} is", target_new="a", target_true="z")]
    res = evaluate_requests(model, byte_tok, reqs)
    assert res.efficacy == 1.0 and res.generalization is None and res.specificity is None
    assert set(res.skipped) == {"generalization", "specificity"}
    assert res.score is None  # MEMIT's score needs all three metrics; two are missing
    none = evaluate_requests(model, byte_tok, [Request(subject="X", prompt="{} is", target_new="a")])
    assert none.score is None and set(none.skipped) == {"efficacy", "generalization", "specificity"}


def test_harmonic_mean():
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.0, 1.0]) == 0.0


def test_score_is_exactly_three_metrics():
    assert score_of([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert score_of([1.0, None, 0.5]) is None  # not the harmonic mean of the two that are there
    with pytest.raises(ValueError, match="three"):
        score_of([1.0, 0.5])


def manual_nll(loaded, prompt: str, target: str) -> float:
    ids, n = encode_completion(loaded.tokenizer, prompt, target)
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([ids])).logits[0]  # (t, V), one unpadded sequence
    logp = torch.log_softmax(logits.double(), -1)
    return float(-sum(logp[len(ids) - n - 1 + j, ids[len(ids) - n + j]] for j in range(n)) / n)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_batched_padded_equals_one_at_a_time(name):
    lm = load_model(name, device="cpu")
    pairs = [("The capital of France is", "Paris"), ("Hi", "a much longer target string"),
             ("A somewhat longer prompt about Rome and", "x"), ("Q", "Berlin")]
    batched = completion_nlls(lm.model, lm.tokenizer, pairs, batch_size=4)
    manual = [manual_nll(lm, p, t) for p, t in pairs]
    assert batched == pytest.approx(manual, rel=1e-6, abs=1e-8)


def test_evaluate_on_loaded_model():
    lm = load_model("tiny-llama", device="cpu")
    reqs = [Request(subject="France", prompt="The capital of {} is", target_new="Rome", target_true="Paris",
                    paraphrase_prompts=("France's capital is",), neighborhood_prompts=("The capital of Spain is",),
                    neighborhood_targets=("Madrid",))]
    res = evaluate(lm, reqs)
    assert res.counts == {"efficacy": 1, "generalization": 1, "specificity": 1}
    assert res.details[0].nll_new == pytest.approx(manual_nll(lm, "The capital of France is", "Rome"), rel=1e-6)


class MergingTokenizer:
    """Character tokenizer that merges 's ' into one token: the target does not follow the prompt's tokens."""

    def __call__(self, text: str, add_special_tokens: bool = True):
        ids, i = ([0] if add_special_tokens else []), 0
        while i < len(text):
            if text[i:i + 2] == "s ":
                ids.append(1000)
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return {"input_ids": ids}


def test_boundary_merge_falls_back_to_separate_target():
    ids, n = encode_completion(MergingTokenizer(), "it is", "ok")
    assert ids == [0, ord("i"), ord("t"), ord(" "), ord("i"), ord("s"), ord(" "), ord("o"), ord("k")]
    assert n == 3  # " ok" tokenised alone, without the leading special token
    ids, n = encode_completion(MergingTokenizer(), "it", "ok")
    assert n == 3 and ids[-3:] == [ord(" "), ord("o"), ord("k")]


def test_smollm2_bpe_target_tokens():
    dirs = sorted((cache_dir() / "models").glob("smollm2-135m-*/tokenizer.json"))
    if not dirs:
        pytest.skip("converted SmolLM2 not in the cache")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dirs[0].parent)
    for prompt, target in [("The capital of France is", "Paris"), ("Danielle Darrieux, a native", "French"),
                           ("What is the product made by UniFirst?", "unmanned aircraft")]:
        ids, n = encode_completion(tok, prompt, target)
        assert ids[-n:] == tok(" " + target, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids[-n:]) == " " + target


def test_margins_by_hand():
    """The three continuous margins (NLL(true) − NLL(new), nats), computed by hand on three requests, one without
    target_true (left out) and one without paraphrases (left out of that margin only)."""
    from secure_collab.evaluation import RequestEval, summarize

    details = [
        RequestEval("0", nll_new=1.0, nll_true=4.0, paraphrase=[(2.0, 3.0), (1.0, 5.0)], neighborhood=[(6.0, 1.0)]),
        RequestEval("1", nll_new=3.0, nll_true=2.0, paraphrase=[], neighborhood=[(2.0, 2.5), (4.0, 1.0)]),
        RequestEval("2", nll_new=0.5, nll_true=None),
    ]
    m = summarize(details).margins
    assert m["target_margin"] == pytest.approx((3.0 + -1.0) / 2)
    assert m["paraphrase_margin"] == pytest.approx((1.0 + 4.0) / 2)  # request 0 only
    assert m["neighbourhood_margin"] == pytest.approx(((1.0 - 6.0) + ((2.5 - 2.0) + (1.0 - 4.0)) / 2) / 2)
    s = summarize(details).summary()
    assert set(m) <= set(s) and s["efficacy"] == pytest.approx(0.5)
