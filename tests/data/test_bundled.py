"""The bundled countryinfo set: deterministic, well-formed, and readable back as CounterFact."""

from __future__ import annotations

import pytest

from secure_collab.data.bundled import bundled_records, bundled_requests, country_facts, write_bundled
from secure_collab.data.formats import detect_format, load_requests


def test_same_seed_same_set():
    assert bundled_requests(40, seed=3) == bundled_requests(40, seed=3)
    assert bundled_records(40, seed=3) == bundled_records(40, seed=3)


def test_other_seed_other_set():
    assert bundled_requests(40, seed=3) != bundled_requests(40, seed=4)


def test_requests_are_counterfactual_and_complete():
    reqs = bundled_requests(60, seed=0)
    assert {r.relation for r in reqs} <= {"P36", "P30", "P37", "P38"}
    for r in reqs:
        assert r.target_new != r.target_true
        assert len(r.paraphrase_prompts) == 2 and all(r.subject in p for p in r.paraphrase_prompts)
        assert len(r.neighborhood_prompts) == len(r.neighborhood_targets) == 10
        assert r.target_new not in r.neighborhood_targets  # otherwise the neighbour pair cannot be compared
        assert all(r.subject not in p for p in r.neighborhood_prompts)


def test_known_fact_present():
    facts = {(f.subject, f.relation): f.obj for f in country_facts()}
    assert facts[("France", "P36")] == "Paris"
    assert facts[("Japan", "P37")] == "Japanese"
    assert facts[("Germany", "P30")] == "Europe"


def test_write_and_reload(tmp_path):
    path = write_bundled(tmp_path / "bundled.json", n=25, seed=1)
    assert detect_format(path) == "counterfact"
    assert load_requests(path) == bundled_requests(25, seed=1)


def test_n_out_of_range():
    with pytest.raises(ValueError, match="n must be in"):
        bundled_requests(0)
    with pytest.raises(ValueError, match="n must be in"):
        bundled_requests(len(country_facts()) + 1)


def test_module_entry_point(tmp_path):
    from secure_collab.data.bundled import main

    assert main([str(tmp_path / "b.json"), "--n", "5", "--seed", "2"]) == 0
    assert load_requests(tmp_path / "b.json") == bundled_requests(5, seed=2)
