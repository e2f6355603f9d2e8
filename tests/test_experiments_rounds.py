"""`secure-collab experiment forgetting|overlap|conflict` on a tiny model: JSON fields, plots, the overlap
acceptance (dedupe equals one copy), resumed forgetting runs."""

from __future__ import annotations

import json

from secure_collab.cli import main
from secure_collab.editing import target_cache
from tests.conftest import SHARED

CF = str(SHARED / "counterfact.json")


def _run(tmp_path, *argv):
    out = tmp_path / "out"
    rc = main(["experiment", *argv, "--model", "tiny-llama", "--requests", CF, "--tokens", "600", "--steps", "4",
               "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--json", str(tmp_path / "r.json"),
               "--quiet"])
    assert rc == 0
    return json.loads((tmp_path / "r.json").read_text()), out


def test_overlap_dedupe_equals_one_copy(tmp_path):
    r, out = _run(tmp_path, "overlap", "--parties", "3", "--edits-per-party", "2")
    assert r["dedupe_delta_rel_diff"] <= 1e-9
    assert r["no_dedupe_delta_rel_diff"] > 1e-3  # k copies without dedupe really are over-weighted
    assert [row["withdrawn"] for row in r["rows"]] == [0, 0]  # every copy kept, at weight 1/k (issue 18)
    assert [row["holders"] for row in r["rows"]] == [[2], [3]]
    assert all(row["decisions"] == ["duplicate"] for row in r["rows"])
    assert (out / "overlap.png").stat().st_size > 1000 and "dedupe_delta_rel_diff" in (out / "results.md").read_text()


def test_conflict_resolves_and_augments(tmp_path):
    r, out = _run(tmp_path, "conflict", "--facts", "3", "--augment", "2", "--rules", "memit-dynamic")
    assert {"winner_efficacy_augmented", "winner_efficacy_plain", "unresolved_landing"} <= set(r)
    assert r["unresolved"]["contributed"] == [{"a": 3, "b": 3}]  # nothing resolved
    assert r["plain"]["contributed"] == [{"a": 3, "b": 0}] and r["augmented"]["contributed"] == [{"a": 9, "b": 0}]
    assert r["augmented"]["decisions"] == ["conflict"] * 3
    assert r["cross_round"]["memit-dynamic"]["augmented"]["contributed"] == [{"a": 0, "b": 3}, {"a": 9, "b": 0}]
    assert (out / "conflict.png").is_file()


def test_forgetting_reports_retention_per_rule_and_resumes(tmp_path, monkeypatch):
    argv = ["forgetting", "--rounds", "2", "--parties", "2", "--edits-per-party", "1"]
    first, out = _run(tmp_path, *argv)
    assert set(first["retention"]) == {"memit-static", "memit-dynamic", "alphaedit"}
    assert len(first["rounds"]) == 6 and (out / "forgetting.png").is_file()
    calls = []
    monkeypatch.setattr(target_cache, "compute_targets", lambda *a, **k: calls.append(a) or None)
    again, _ = _run(tmp_path, *argv)  # every round is cached: nothing is optimised or edited again
    assert calls == [] and again["rounds"] == first["rounds"]
