"""Generation, fluency and zsRE metrics on a hand-made model whose every prediction is known.

``bigram``: a Llama with no decoder layers, one-hot embeddings and an unembedding that is a chosen map, so the
next token is always ``NEXT[this token]`` (sampling with top-k 5 puts 1 − 5e-7 of the mass on it). With
NEXT = {s→' ', ' '→P, P→a, a→r, r→i, i→s, ?→' '} the model continues "X is" with " Paris Paris …".
"""

from __future__ import annotations

import math

import pytest
import torch

from secure_collab.data.requests import Request
from secure_collab.evaluation import (
    evaluate_zsre,
    fluency,
    fluency_prompts,
    generate,
    generation_metrics,
    loc_predictions,
    ngram_entropy,
    says,
)
from secure_collab.models import load_model

NEXT = {"s": " ", " ": "P", "P": "a", "a": "r", "r": "i", "i": "s", "?": " ", "X": "Y", "Y": "X", "Q": "s"}


@pytest.fixture(scope="module")
def bigram():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_model("tiny-llama").tokenizer
    v, d = len(tok), 264
    cfg = LlamaConfig(vocab_size=v, hidden_size=d, intermediate_size=8, num_hidden_layers=0, num_attention_heads=4,
                      num_key_value_heads=4, tie_word_embeddings=False, bos_token_id=256, eos_token_id=256,
                      pad_token_id=256)
    model = LlamaForCausalLM(cfg).to(torch.float64).eval()
    one = {ch: tok(ch, add_special_tokens=False)["input_ids"][0] for ch in set(NEXT) | set(NEXT.values())}
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(math.sqrt(d) * torch.eye(v, d, dtype=torch.float64))  # RMS 1
        model.model.norm.weight.fill_(1.0)
        head = torch.zeros(v, d, dtype=torch.float64)
        for i in range(v):  # default: stay on the same token
            head[i, i] = 0.5
        for a, b in NEXT.items():
            head[one[a], one[a]] = 0.0
            head[one[b], one[a]] = 1.0
        model.lm_head.weight.copy_(head)
    return model, tok


def test_says_reads_the_first_words():
    assert says(" Paris, France", "Paris") and says("Paris", "Paris") and says("  Paris\n", "Paris")
    assert says(" New  York is big", "New York")
    assert not says(" Parisian", "Paris") and not says(" Rome", "Paris") and not says(" the Paris", "Paris")


def test_greedy_continuation_is_the_known_chain(bigram):
    model, tok = bigram
    assert generate(model, tok, ["X is", "Q"], 8) == [" Paris P", "s Paris "]


def test_generation_metrics_by_hand(bigram):
    model, tok = bigram
    reqs = [Request(subject="X", prompt="{} is", target_new="Paris", paraphrase_prompts=("Q", "X is", "XY")),
            Request(subject="X", prompt="{} is", target_new="Par"),  # says "Paris": a longer word is no match
            Request(subject="Q", prompt="{}", target_new="s Paris", paraphrase_prompts=("Q",))]
    res = generation_metrics(model, tok, reqs)
    # request 1: the edit prompt says Paris; of the paraphrases "X is" does ("Q" says "s Paris", "XY" says "XYX")
    assert res.gen_efficacy == pytest.approx(2 / 3)
    assert res.gen_generalization == pytest.approx((1 / 3 + 1.0) / 2)
    assert res.counts == {"gen_efficacy": 3, "gen_generalization": 2}


def test_batched_greedy_equals_a_plain_loop():
    lm = load_model("tiny-gpt2")
    prompts = ["The capital of France is", "Hi", "A longer prompt about the river and the"]
    got = generate(lm.model, lm.tokenizer, prompts, 6, batch_size=3)
    for prompt, text in zip(prompts, got, strict=True):
        ids = list(lm.tokenizer(prompt)["input_ids"])
        for _ in range(6):
            with torch.no_grad():
                ids.append(int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        assert text == lm.tokenizer.decode(ids[-6:], skip_special_tokens=True)


def test_ngram_entropy_by_hand():
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # bigrams ab, ba, ab
    h3 = 1.0  # trigrams aba, bab
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert ngram_entropy("go go go go go") == 0.0
    assert ngram_entropy("one, two.") == pytest.approx((2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2)  # 4 words


def test_fluency_of_a_looping_model_is_known(bigram):
    model, tok = bigram
    # "Q" + 11 new tokens: "Qs Paris Pa" -> words Qs, Paris, Pa: bigrams 2 distinct, trigram 1
    assert fluency(model, tok, ["Q"], max_len=12) == pytest.approx((2 / 3 * 1.0 + 4 / 3 * 0.0) / 2)
    reqs = [Request(subject="X", prompt="{} is", target_new="a", generation_prompts=("g1", "g2", "g3")),
            Request(subject="X", prompt="{} was", target_new="a")]
    assert fluency_prompts(reqs, 2, 2) == ["g1", "g2", "X was"]
    assert fluency(model, tok, []) is None


def test_zsre_token_metrics_by_hand(bigram):
    model, tok = bigram
    # teacher forcing: position t predicts NEXT[token t]. "X is" + " Paris": predictions after s, ' ', P, a, r, i
    # are ' ', P, a, r, i, s against the target ' ', P, a, r, i, s: 6/6
    r1 = Request(subject="X", prompt="{} is", target_new="Paris", paraphrase_prompts=("Q?",),
                 extra={"loc": "Q", "loc_ans": "ar"})
    # "X" + " Pa": after X, ' ', P the model says Y, P, a against ' ', P, a: 2/3; paraphrase "Q?" + " Paris": 6/6
    r2 = Request(subject="X", prompt="{}", target_new="Pa", paraphrase_prompts=("Q?", "X"))
    before = loc_predictions(model, tok, [r1, r2])
    assert before[1] is None and len(before[0]) == 3  # "Q?" + " ar": after ?, ' ', a -> ' ', P, r
    res = evaluate_zsre(model, tok, [r1, r2], before)
    assert res.efficacy == pytest.approx((1.0 + 2 / 3) / 2)
    # r2's paraphrases: "Q?" + " Pa" 3/3, "X" + " Pa" 2/3
    assert res.generalization == pytest.approx((1.0 + (1.0 + 2 / 3) / 2) / 2)
    assert res.locality == 1.0  # the same model before and after
    assert res.loc_answer_accuracy == pytest.approx(2 / 3)  # ' ', P, r against ' ', a, r
    assert res.score == pytest.approx(3 / (1 / res.efficacy + 1 / res.generalization + 1.0))
    missing = evaluate_zsre(model, tok, [r1], None)
    assert missing.locality is None and missing.score is None and "locality" in missing.skipped
    other = [[t + 1 for t in before[0]], None]  # an "unedited" model that predicted otherwise everywhere
    assert evaluate_zsre(model, tok, [r1, r2], other).locality == 0.0
