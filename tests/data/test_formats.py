"""Request parsers: one test per malformed-record error, and format detection on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secure_collab.data.formats import FORMATS, detect_format, load_requests, parse_records
from secure_collab.data.requests import Request, RequestError
from tests.conftest import SHARED  # noqa: E402

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not on this machine")


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def cf_record(**rewrite) -> dict:
    rw = {"prompt": "The capital of {} is", "subject": "France", "relation_id": "P36",
          "target_new": {"str": "Rome"}, "target_true": {"str": "Paris"}}
    rw.update(rewrite)
    return {"case_id": 7, "requested_rewrite": rw, "paraphrase_prompts": ["France's capital is"],
            "neighborhood_prompts": ["The capital of Gaul is"]}


PLAIN = {"subject": "France", "prompt": "The capital of {} is", "target_new": "Rome"}


def load_one(tmp_path: Path, record: dict, fmt: str | None = None) -> list[Request]:
    return load_requests(write_jsonl(tmp_path / "r.jsonl", [PLAIN, record]), fmt)


def test_plain_jsonl_roundtrip(tmp_path):
    rec = dict(PLAIN, target_true=" Paris ", relation="capital")
    (r,) = load_requests(write_jsonl(tmp_path / "r.jsonl", [rec]))
    assert (r.subject, r.prompt, r.target_new, r.target_true, r.relation) == (
        "France", "The capital of {} is", "Rome", "Paris", "capital")
    assert r.case_id == "0" and r.text == "The capital of France is"


def test_missing_placeholder_names_record_and_field(tmp_path):
    with pytest.raises(RequestError, match=r"r\.jsonl: record 1 \(line 2\).*'prompt'.*'\{\}'"):
        load_one(tmp_path, dict(PLAIN, prompt="The capital of France is"))


def test_two_placeholders(tmp_path):
    with pytest.raises(RequestError, match=r"record 1.*'prompt'.*exactly one"):
        load_one(tmp_path, dict(PLAIN, prompt="{} and {}"))


def test_empty_subject(tmp_path):
    with pytest.raises(RequestError, match=r"record 1.*'subject' is empty"):
        load_one(tmp_path, dict(PLAIN, subject="  "))


def test_empty_target(tmp_path):
    with pytest.raises(RequestError, match=r"record 1.*'target_new' is empty"):
        load_one(tmp_path, dict(PLAIN, target_new=""))


def test_wrong_type(tmp_path):
    with pytest.raises(RequestError, match=r"record 1.*'target_new' must be str, got int"):
        load_one(tmp_path, dict(PLAIN, target_new=3))


def test_wrong_type_in_list(tmp_path):
    with pytest.raises(RequestError, match=r"record 1.*'paraphrase_prompts\[1\]' must be str"):
        load_one(tmp_path, dict(PLAIN, paraphrase_prompts=["ok", 5]))


def test_missing_key(tmp_path):
    rec = dict(PLAIN)
    del rec["target_new"]
    with pytest.raises(RequestError, match=r"record 1.*'target_new' is missing"):
        load_one(tmp_path, rec, fmt="jsonl")


def test_bad_json_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(PLAIN) + "\n{not json\n")
    with pytest.raises(RequestError, match=r"r\.jsonl: record 1 \(line 2\): bad JSON line"):
        load_requests(path)


def test_record_not_an_object(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([PLAIN, ["a", "list"]]))
    with pytest.raises(RequestError, match=r"record 1: expected a JSON object, got list"):
        load_requests(path, "jsonl")


def test_counterfact_errors_name_case_id_and_nested_field(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([cf_record(), cf_record(target_new={"id": "Q1"})]))
    with pytest.raises(RequestError, match=r"record 1 \(case_id 7\).*'requested_rewrite\.target_new\.str' is missing"):
        load_requests(path)


def test_counterfact_missing_requested_rewrite(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([{"case_id": 3}]))
    with pytest.raises(RequestError, match=r"case_id 3.*'requested_rewrite' is missing"):
        load_requests(path, "counterfact")


def test_neighbour_targets_must_match_prompts(tmp_path):
    rec = dict(PLAIN, neighborhood_prompts=["a", "b"], neighborhood_targets=["x"])
    with pytest.raises(RequestError, match=r"record 1.*'neighborhood_targets' has 1 entries for 2"):
        load_one(tmp_path, rec)


def test_zsre_subject_not_in_question(tmp_path):
    rec = {"subject": "Zorblax", "src": "Who founded Acme?", "alt": "Bob", "answers": ["Al"]}
    path = tmp_path / "z.json"
    path.write_text(json.dumps([rec]))
    with pytest.raises(RequestError, match=r"record 0.*'src' does not contain the subject 'Zorblax'"):
        load_requests(path)


def test_zsre_case_insensitive_fallback(tmp_path):
    rec = {"subject": "acme corp", "src": "Who founded Acme Corp?", "alt": "Bob", "answers": ["Al"],
           "rephrase": "Acme Corp was founded by whom?", "loc": "nq question: x", "loc_ans": "y"}
    path = tmp_path / "z.json"
    path.write_text(json.dumps([rec]))
    (r,) = load_requests(path)
    assert (r.prompt, r.subject, r.target_new, r.target_true) == ("Who founded {}?", "Acme Corp", "Bob", "Al")
    assert r.extra["subject_source"] == "acme corp" and r.extra["loc_ans"] == "y"
    assert r.neighborhood_prompts == ()  # NQ locality questions are not neighbours of the subject


def test_unknown_format_override(tmp_path):
    with pytest.raises(ValueError, match="unknown request format"):
        load_requests(write_jsonl(tmp_path / "r.jsonl", [PLAIN]), "nope")


def test_undetectable_format(tmp_path):
    with pytest.raises(RequestError, match="cannot tell the format"):
        load_requests(write_jsonl(tmp_path / "r.jsonl", [{"foo": 1}]))


def test_parse_records_in_memory():
    (r,) = parse_records([cf_record()], "counterfact", source="mem")
    assert r.case_id == "7" and r.relation == "P36" and r.neighborhood_prompts == ("The capital of Gaul is",)


@needs_shared
@pytest.mark.parametrize(("name", "fmt"), [
    ("counterfact.json", "counterfact"),
    ("counterfact_mend/counterfact-edit.json", "counterfact_mend"),
    ("counterfact_mend/counterfact-val.json", "counterfact_mend"),
    ("zsre_mend_train_1k.json", "zsre"),
    ("mquake.json", "mquake"),
])
def test_detects_real_files(name, fmt):
    path = SHARED / name
    assert detect_format(path) == fmt
    reqs = load_requests(path, limit=5)
    assert len(reqs) >= 5 and all(isinstance(r, Request) for r in reqs)
    assert all(r.prompt.count("{}") == 1 and r.target_new for r in reqs)


@needs_shared
def test_real_counterfact_first_record():
    r = load_requests(SHARED / "counterfact.json", limit=1)[0]
    assert (r.case_id, r.subject, r.prompt, r.target_new, r.target_true, r.relation) == (
        "0", "Danielle Darrieux", "The mother tongue of {} is", "English", "French", "P103")
    assert len(r.paraphrase_prompts) == 2 and len(r.neighborhood_prompts) == 10


@needs_shared
def test_mend_counterfact_agrees_with_upstream_record():
    upstream = load_requests(SHARED / "counterfact.json", limit=1)[0]
    mend = next(r for r in load_requests(SHARED / "counterfact_mend/counterfact-edit.json", limit=50)
                if r.case_id == upstream.case_id)
    assert (mend.subject, mend.prompt, mend.target_new, mend.target_true) == (
        upstream.subject, upstream.prompt, upstream.target_new, upstream.target_true)
    assert mend.neighborhood_prompts[0] in upstream.neighborhood_prompts


@needs_shared
def test_real_zsre_malformed_records_are_refused_or_skipped():
    path = SHARED / "zsre_mend_train_1k.json"
    with pytest.raises(RequestError, match=r"record 429.*'alt' is empty"):
        load_requests(path)
    reqs = load_requests(path, skip_invalid=True)
    assert len(reqs) == 798
    assert reqs[0].prompt == "What is the product made by {}?" and reqs[0].target_true == "uniform"


@needs_shared
def test_override_wrong_format_is_an_error():
    with pytest.raises(RequestError, match="'requested_rewrite' is missing"):
        load_requests(SHARED / "zsre_mend_train_1k.json", "counterfact", limit=2)


def test_formats_listed():
    assert set(FORMATS) == {"counterfact", "counterfact_mend", "zsre", "mquake", "jsonl"}
