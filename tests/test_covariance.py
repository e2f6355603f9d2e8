"""Covariance: pure math, hooked keys against a manual MLP recomputation, the stop trick, and the cache."""

from __future__ import annotations

import json

import pytest
import torch

import secure_collab.covariance as cov_mod
from secure_collab.covariance import (
    MomentAccumulator,
    corpus_texts,
    covariance_entries,
    layer_covariances,
    second_moment,
)
from secure_collab.data.corpus import open_corpus
from secure_collab.models import load_model
from secure_collab.models.hooks import capture_input

WORDS = ("the river city north old stone bridge market king song winter field light paper "
         "iron garden voice tower harbour island").split()


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def tiny(request):
    return load_model(request.param, device="cpu")


@pytest.fixture
def corpus_file(tmp_path):
    paragraphs = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + 5 * i)) + "."
                  for i in range(11)]  # 11 documents of different lengths: padding in every batch
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def test_second_moment_matches_definition():
    keys = torch.randn(50, 6, dtype=torch.float32)
    expected = sum(torch.outer(k, k) for k in keys.double()) / 50
    torch.testing.assert_close(second_moment(keys), expected, rtol=1e-12, atol=1e-12)
    assert second_moment(keys).dtype == torch.float64


def test_accumulator_over_batches_equals_one_shot():
    keys = torch.randn(37, 5)
    acc = MomentAccumulator()
    for part in keys.split([10, 0, 20, 7]):
        acc.add(part)
    assert acc.count == 37
    torch.testing.assert_close(acc.moment(), second_moment(keys), rtol=1e-12, atol=1e-12)


def test_accumulator_refuses_empty_and_bad_shapes():
    with pytest.raises(ValueError):
        MomentAccumulator().moment()
    with pytest.raises(ValueError):
        MomentAccumulator().add(torch.zeros(2, 3, 4))


def manual_down_inputs(loaded, layer: int, text: str) -> torch.Tensor:
    """(t, d_k): the MLP's input captured, then its first half recomputed by hand, one unpadded document."""
    mlp = loaded.model.get_submodule(loaded.spec.down_name(layer).rsplit(".", 1)[0])
    ids = loaded.tokenizer(text, truncation=True, max_length=256, return_tensors="pt")["input_ids"]
    with torch.no_grad(), capture_input(mlp) as seen:
        loaded.model(input_ids=ids)
    x = seen[0][0]  # (t, d_model)
    with torch.no_grad():
        if loaded.spec.family == "gpt2":
            return mlp.act(mlp.c_fc(x))  # Conv1D c_fc: x @ W + b
        return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)  # llama: SwiGLU


def test_hooked_covariance_equals_manual_recomputation(tiny, corpus_file, tmp_path):
    corpus = open_corpus(corpus_file)
    layers = [1, 2]
    entries = covariance_entries(tiny, layers, corpus, tokens=10**6, batch_size=4, cache=tmp_path,
                                 progress=False)
    for layer in layers:
        keys = torch.cat([manual_down_inputs(tiny, layer, t) for t in corpus_texts(corpus, 0)])  # (n, d_k)
        assert entries[layer].tokens_used == keys.shape[0]  # all tokens, no padding
        torch.testing.assert_close(entries[layer].cov, second_moment(keys), rtol=1e-5, atol=1e-7)


def test_token_budget_is_exact(tiny, corpus_file, tmp_path):
    e = covariance_entries(tiny, [0], corpus_file, tokens=137, batch_size=3, cache=tmp_path, progress=False)
    assert e[0].tokens_used == 137 and e[0].key.tokens == 137


def test_several_budgets_in_one_pass_equal_separate_passes(tiny, corpus_file, tmp_path):
    budgets = [50, 51, 137, 10**6]  # two inside one batch, one mid-corpus, one past its end
    together = cov_mod.covariance_budget_entries(tiny, [0, 2], budgets, corpus_file, batch_size=3,
                                                 cache=tmp_path / "a", progress=False)
    for b in budgets:
        alone = covariance_entries(tiny, [0, 2], corpus_file, tokens=b, batch_size=3, cache=tmp_path / "b",
                                   progress=False)
        for layer in (0, 2):
            assert together[b][layer].tokens_used == alone[layer].tokens_used
            torch.testing.assert_close(together[b][layer].cov, alone[layer].cov, rtol=1e-13, atol=1e-15)
            assert together[b][layer].key == alone[layer].key
    assert together[50][0].tokens_used == 50 and together[10**6][0].tokens_used < 10**6


def test_forward_stops_after_highest_layer(tiny, corpus_file):
    calls = []
    later = tiny.model.get_submodule(tiny.spec.block_name(3))
    handle = later.register_forward_hook(lambda *a: calls.append(1))
    try:
        layer_covariances(tiny, [0, 2], corpus_file, tokens=200, use_cache=False, progress=False)
    finally:
        handle.remove()
    assert calls == []


def test_cache_hit_second_time(tiny, corpus_file, tmp_path, monkeypatch):
    first = covariance_entries(tiny, [1, 3], corpus_file, tokens=300, cache=tmp_path, progress=False)
    assert not any(e.from_cache for e in first.values())
    meta = json.loads(first[1].path.with_suffix(".json").read_text())
    assert meta["key"]["layer"] == 1 and meta["key"]["tokens"] == 300 and meta["sha256"] == first[1].file_sha256

    def no_forward(*args, **kwargs):
        raise AssertionError("cache miss: the model was run")

    monkeypatch.setattr(cov_mod, "accumulate_budget_moments", no_forward)
    second = covariance_entries(tiny, [1, 3], corpus_file, tokens=300, cache=tmp_path, progress=False)
    assert all(e.from_cache for e in second.values())
    for layer in (1, 3):
        assert torch.equal(first[layer].cov, second[layer].cov)
        assert second[layer].cov.dtype == torch.float64
    with pytest.raises(AssertionError, match="cache miss"):  # another budget is another key
        covariance_entries(tiny, [1], corpus_file, tokens=301, cache=tmp_path, progress=False)


def test_corrupt_cache_file_is_recomputed(tiny, corpus_file, tmp_path):
    first = covariance_entries(tiny, [1], corpus_file, tokens=200, cache=tmp_path, progress=False)
    data = bytearray(first[1].path.read_bytes())
    data[-1] ^= 0xFF
    first[1].path.write_bytes(bytes(data))
    again = covariance_entries(tiny, [1], corpus_file, tokens=200, cache=tmp_path, progress=False)
    assert not again[1].from_cache
    assert torch.equal(again[1].cov, first[1].cov)


def test_layer_out_of_range(tiny, corpus_file):
    with pytest.raises(ValueError, match="layers must be"):
        layer_covariances(tiny, [4], corpus_file, tokens=10, use_cache=False, progress=False)
