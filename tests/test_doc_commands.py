"""The cheap commands in the docs reproduce their figures as written (issue 17, item 5).

Every ``secure-collab experiment …`` the docs show on a tiny model (seconds to run) is run exactly as written, with
only ``--out`` moved to a temporary directory, and its results.json must equal the one committed under the
``--out`` the docs name: every number but wall-clock times (tiny models run in float64, so the figures are
reproducible to rounding), and each figure the docs quote in the text is checked against the fresh run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from secure_collab.cli import main

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "command", "edit_seconds", "eval_seconds", "work_dir"}


def doc_commands() -> list[tuple[str, list[str]]]:
    """(doc, argv) of every backticked `secure-collab experiment …` on a tiny model in docs/*.md."""
    out = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text()
        for span in re.findall(r"`(secure-collab experiment [^`]*)`", text):
            argv = span.split()[1:]
            if "--model" in argv and argv[argv.index("--model") + 1].startswith("tiny-"):
                out.append((doc.name, argv))
    return out


def _compare(fresh, committed, path: str = "") -> list[str]:
    if isinstance(committed, dict):
        assert isinstance(fresh, dict), path
        return [d for k in committed if k not in TIMING for d in _compare(fresh.get(k), committed[k], f"{path}.{k}")]
    if isinstance(committed, list):
        assert isinstance(fresh, list) and len(fresh) == len(committed), path
        pairs = enumerate(zip(fresh, committed, strict=True))
        return [d for i, (f, c) in pairs for d in _compare(f, c, f"{path}[{i}]")]
    if isinstance(committed, float):
        return [] if fresh == pytest.approx(committed, rel=1e-6, abs=1e-12) else [f"{path}: {fresh} != {committed}"]
    return [] if fresh == committed else [f"{path}: {fresh!r} != {committed!r}"]


def test_the_docs_show_cheap_commands():
    assert doc_commands(), "no tiny-model command found in docs/: the test below would check nothing"


@pytest.mark.parametrize(("doc", "argv"), doc_commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x[:2]))
def test_a_cheap_doc_command_reproduces_its_committed_results(doc, argv, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the docs' relative paths (../shared/data, benchmarks/results) are from the checkout
    out = argv[argv.index("--out") + 1]
    run = list(argv)
    run[run.index("--out") + 1] = str(tmp_path / "out")
    assert main([*run, "-q"]) == 0
    fresh = json.loads((tmp_path / "out" / "results.json").read_text())
    committed = json.loads((ROOT / out / "results.json").read_text())
    diffs = _compare(fresh, committed)
    assert not diffs, f"{doc}: `secure-collab {' '.join(argv)}` no longer gives its committed figures: {diffs[:5]}"
    text = (ROOT / "docs" / doc).read_text()
    if fresh.get("experiment") == "overlap":  # the figures docs/rounds.md quotes for it, as it writes them (4.1e-2)
        for row in fresh["rows"]:
            a, b = (re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{row[k]:.1e}")
                    for k in ("dedupe_delta_rel_diff", "no_dedupe_delta_rel_diff"))
            assert f"| {row['copies']} | 1/{row['copies']} | {a} | {b} |" in text, (a, b)
