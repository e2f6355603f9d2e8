"""`secure-collab stats` on a tiny model: builds, then loads from the cache, and writes its JSON summary."""

from __future__ import annotations

import argparse
import json

import pytest

from secure_collab.cli import main
from secure_collab.cli.stats import parse_layers


def test_parse_layers():
    assert parse_layers("3-7") == [3, 4, 5, 6, 7]
    assert parse_layers("3,5, 4") == [3, 4, 5]
    assert parse_layers("1,3-4") == [1, 3, 4]
    for bad in ("", "7-3", "a", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_layers(bad)


def test_stats_builds_then_loads(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(f"paragraph number {i} " * (i + 1) for i in range(8)))
    argv = ["stats", "--model", "tiny-llama", "--device", "cpu", "--layers", "1-2", "--corpus", str(corpus),
            "--tokens", "400", "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "s.json")]
    assert main(argv) == 0
    first = json.loads((tmp_path / "s.json").read_text())
    assert [r["layer"] for r in first["layers"]] == [1, 2]
    row = first["layers"][0]
    assert row["shape"] == [96, 96] and row["tokens"] == 400 and not row["from_cache"]
    assert row["eig_max"] >= row["eig_min"] and row["trace"] > 0 and len(row["sha256"]) == 64
    assert main(argv) == 0
    second = json.loads((tmp_path / "s.json").read_text())
    assert all(r["from_cache"] for r in second["layers"])
    assert second["layers"][0]["sha256"] == row["sha256"]
    assert "cached" in capsys.readouterr().out
