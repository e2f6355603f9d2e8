"""`secure-collab experiment merge` on a tiny model: files, fields, collab = global, and a resumed run."""

from __future__ import annotations

import json

from secure_collab.cli import main


def test_merge_grid_writes_results_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "grid"
    argv = ["experiment", "merge", "--model", "tiny-gpt2", "--requests", "bundled", "--parties", "3",
            "--edits", "3,6", "--methods", "global,collab,ta,sa,ties,sa-lockstep", "--variant", "both",
            "--out", str(out), "--threads", "1", "--quiet", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 6
    need = {"method", "variant", "edits", "parties", "efficacy", "generalization", "specificity", "score",
            "gen_efficacy", "delta_rel_diff_vs_global"}
    assert all(need <= set(r) for r in rows)
    by = {(r["method"], r["variant"], r["edits"]): r for r in rows}
    for variant in ("sequential", "oneshot"):
        for n in (3, 6):
            assert by["collab", variant, n]["delta_rel_diff_vs_global"] <= 1e-12
            assert by["global", variant, n]["delta_rel_diff_vs_global"] == 0.0
            assert by["sa", variant, n]["delta_rel_diff_vs_global"] > 1e-3
            assert by["collab", variant, n]["edits_per_party"] == [n // 3] * 3
    # oneshot: a lockstep merge is the independent one (same cell); sequential: they differ
    assert by["sa-lockstep", "oneshot", 6]["delta_rel_diff_vs_global"] == by["sa", "oneshot", 6][
        "delta_rel_diff_vs_global"]
    assert by["sa-lockstep", "sequential", 6]["delta_rel_diff_vs_global"] != by["sa", "sequential", 6][
        "delta_rel_diff_vs_global"]
    assert {d["method"] for d in result["falls_10_points"]} == {"ta", "sa", "ties", "sa-lockstep"}
    for name in ("results.csv", "results.md", "results.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "fig1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["method", "variant", "edits", "parties", "edits_per_party"]

    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    part = [*argv[:argv.index("--methods") + 1], "global,collab,ta,sa,ties,sa-lockstep,ta-lockstep",
            *argv[argv.index("--methods") + 2:], "--cached-only"]
    assert main(part) == 0  # a cut-short grid reports what is finished and computes nothing
    partial = json.loads((tmp_path / "r.json").read_text())
    assert [r for r in partial["rows"] if r["method"] != "ta-lockstep"] == rows
    # ta-lockstep was never run: in oneshot it is ta's cell (finished), in sequential it is left out
    assert {r["variant"] for r in partial["rows"] if r["method"] == "ta-lockstep"} == {"oneshot"}
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps
    assert main(argv) == 0  # resumed: every cell read back, none recomputed
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == rows


def test_merge_refuses_bad_input(tmp_path, capsys):
    base = ["experiment", "merge", "--model", "tiny-gpt2", "--requests", "bundled", "--out", str(tmp_path)]
    assert main([*base, "--parties", "4", "--edits", "3"]) == 2
    assert "at least the number of parties" in capsys.readouterr().err
    assert main([*base, "--parties", "2", "--edits", "4", "--methods", "collab,avg"]) == 2
    assert "unknown methods" in capsys.readouterr().err
    assert main([*base, "--parties", "2", "--edits", "4", "--variant", "sideways"]) == 2
    assert "--variant" in capsys.readouterr().err


def test_ten_point_drop_is_the_first_edit_count_10_points_below_collab():
    from secure_collab.experiments.merge import MergeGrid, ten_point_drops

    grid = MergeGrid(edits=(10, 30, 100), parties=10, methods=("collab", "ta", "sa"), variants=("sequential",))
    scores = {"collab": (0.90, 0.88, 0.85), "ta": (0.89, 0.80, 0.70), "sa": (0.85, 0.84, 0.80)}
    rows = [{"method": m, "variant": "sequential", "edits": n, "score": s[i]}
            for m, s in scores.items() for i, n in enumerate((10, 30, 100))]
    drops = {d["method"]: d for d in ten_point_drops(rows, grid)}
    assert drops["ta"] == {"method": "ta", "variant": "sequential", "edits": 100, "edits_per_party_max": 10,
                           "largest_measured": 100}
    assert drops["sa"] == {"method": "sa", "variant": "sequential", "edits": None, "edits_per_party_max": None,
                           "largest_measured": 100}


def test_eval_per_party_measures_each_partys_first_edits(tmp_path, monkeypatch):
    """--eval-per-party 1: the metrics are those of the evaluator run directly on each party's first request."""
    from secure_collab.cli.edit import load_request_set
    from secure_collab.editing.memit import split_parties
    from secure_collab.evaluation import evaluate
    from secure_collab.experiments.merge import eval_sample
    from secure_collab.models import load_model

    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path / "cache"))
    argv = ["experiment", "merge", "--model", "tiny-gpt2", "--requests", "bundled", "--parties", "3", "--edits", "6",
            "--methods", "global", "--variant", "sequential", "--eval-per-party", "1", "--out", str(tmp_path / "g"),
            "--threads", "1", "--quiet", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    requests = load_request_set("bundled", None, 6)
    sample = eval_sample(split_parties(requests, 3), 1)
    assert [r.prompt for r in sample] == [requests[i].prompt for i in (0, 2, 4)]
    assert result["pre"][0]["evaluated"] == result["rows"][0]["evaluated"] == 3
    want = evaluate(load_model("tiny-gpt2"), sample).summary()  # the unedited model, independently
    assert result["pre"][0]["efficacy"] == want["efficacy"]
    assert result["pre"][0]["specificity"] == want["specificity"]
    assert result["setup"]["eval_per_party"] == 1
    assert result["setup"]["command"] == "secure-collab " + " ".join(argv)
    assert "each party's first 1 edited records" in (tmp_path / "g" / "results.md").read_text()


def test_holders_share_every_fact_and_collab_still_equals_global(tmp_path, monkeypatch):
    """--holders 2: each fact at two parties (dedupe off). Global-Edit edits the 2·N requests, which the sum of the
    statistics equals; TA lands a shared fact twice (its reach about doubles), collab once; per-record values and
    paired intervals are reported."""
    from secure_collab.experiments.merge import holder_blocks

    assert holder_blocks(6, 3, 2) == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 0, 1]]
    assert holder_blocks(3, 3, 1) == [[0], [1], [2]]
    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path / "cache"))
    argv = ["experiment", "merge", "--model", "tiny-gpt2", "--requests", "bundled", "--parties", "3", "--edits", "3",
            "--holders", "2", "--methods", "global,collab,ta", "--variant", "oneshot", "--out", str(tmp_path / "g"),
            "--threads", "1", "--quiet", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    by = {r["method"]: r for r in result["rows"]}
    assert by["collab"]["edits_per_party"] == [2, 2, 2] and by["collab"]["evaluated"] == 3
    assert by["collab"]["delta_rel_diff_vs_global"] <= 1e-12
    for r in by.values():
        per = r["per_record"]
        assert len(per["z_reach"]) == len(per["target_margin"]) == 3
        assert abs(sum(per["target_margin"]) / 3 - r["target_margin"]) < 1e-12
        assert abs(sum(per["z_reach"]) / 3 - r["z_reach"]) < 1e-12
        lo, hi = r["z_reach_ci"]
        assert min(per["z_reach"]) <= lo <= r["z_reach"] <= hi <= max(per["z_reach"])
    assert by["ta"]["z_reach"] > 1.5 * by["collab"]["z_reach"]  # each holder's own solve lands the fact
    (adv,) = result["advantage"]
    want = sum(abs(1 - a) - abs(1 - b) for a, b in zip(by["ta"]["per_record"]["z_reach"],
                                                       by["collab"]["per_record"]["z_reach"], strict=True)) / 3
    assert abs(adv["reach"][0] - want) < 1e-12 and adv["beats"] == (want >= 0.10)
    assert "every fact held by 2 parties" in (tmp_path / "g" / "results.md").read_text()


def test_paired_interval_is_the_bootstrap_of_the_differences():
    from secure_collab.evaluation.intervals import bootstrap_ci, paired_ci

    a, b = [1.0, 2.0, None, 4.0], [0.5, 1.0, 3.0, 1.0]
    assert paired_ci(a, b) == bootstrap_ci([0.5, 1.0, 3.0])
    mean, lo, hi = bootstrap_ci([0.5, 1.0, 3.0])
    assert mean == 1.5 and 0.5 <= lo < mean < hi <= 3.0


def test_merge_grid_with_the_malmen_backend(tmp_path, monkeypatch, capsys):
    """`experiment merge --backend malmen` on tiny-gpt2: collab = Global-Edit ≤ 1e-12 (run_malmen_edit), the naive
    merges differ, no z_reach; its cells are keyed by the hypernetwork's digest (another network recomputes them,
    the same one resumes); MEMIT-only options and a sequential variant are refused in one line."""
    import torch

    from secure_collab.cli.edit import load_request_set
    from secure_collab.editing.malmen.net import load_hypernet
    from secure_collab.models import load_model
    from tests.editing.test_malmen import make_hypernet

    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path / "cache"))
    lm = load_model("tiny-gpt2")
    make_hypernet(lm, load_request_set("bundled", None, 4)).save(tmp_path / "net")
    out = tmp_path / "grid"
    argv = ["experiment", "merge", "--model", "tiny-gpt2", "--requests", "bundled", "--parties", "3",
            "--edits", "3,6", "--backend", "malmen", "--hypernet", str(tmp_path / "net"), "--fluency-sample", "2,1",
            "--out", str(out), "--threads", "1", "--quiet", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["setup"]["backend"] == "malmen"
    by = {(r["method"], r["variant"], r["edits"]): r for r in result["rows"]}
    assert {r["variant"] for r in result["rows"]} == {"oneshot"} and len(by) == 2 * 5
    for n in (3, 6):
        assert by["collab", "oneshot", n]["delta_rel_diff_vs_global"] <= 1e-12
        assert by["global", "oneshot", n]["delta_rel_diff_vs_global"] == 0.0
        assert by["sa", "oneshot", n]["delta_rel_diff_vs_global"] > 1e-3
        assert by["ta", "oneshot", n]["z_reach"] is None
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    assert main(argv) == 0  # the same network: every cell read back
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps
    other = load_hypernet(tmp_path / "net")
    with torch.no_grad():
        next(iter(other.nets.values())).lamda.add_(0.25)
    other.save(tmp_path / "other")
    other_argv = [*argv[:argv.index("--hypernet") + 1], str(tmp_path / "other"), *argv[argv.index("--hypernet") + 2:]]
    at = other_argv.index("--edits")
    assert main([*other_argv[:at + 1], "3", *other_argv[at + 2:]]) == 0
    new = set((out / "cells").iterdir()) - set(stamps)
    assert len([p for p in new if p.suffix == ".json" and not p.name.startswith("pre-")]) == 5  # its own cells
    capsys.readouterr()
    for extra, why in ((["--lambda", "5"], "MEMIT options"), (["--variant", "sequential"], "oneshot only")):
        assert main([*argv, *extra]) == 2
        assert why in capsys.readouterr().err
    assert main([*argv[:argv.index("--hypernet")], *argv[argv.index("--hypernet") + 2:]]) == 2
    assert "--hypernet DIR goes with --backend malmen" in capsys.readouterr().err


def test_exclude_case_ids_runs_the_grid_on_the_records_not_listed(tmp_path, monkeypatch):
    """--exclude-case-ids FILE: the requests whose case_id is in FILE are dropped after --start, the grid edits the
    next ones in order, and the setup records which case ids were edited."""
    from secure_collab.data.bundled import bundled_requests
    from secure_collab.data.formats import write_jsonl

    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(tmp_path / "cache"))
    from dataclasses import replace

    reqs = [replace(r, case_id=f"cf{100 + i}") for i, r in enumerate(bundled_requests(12))]
    write_jsonl(reqs, tmp_path / "all.jsonl")
    write_jsonl([reqs[i] for i in (1, 2, 5)], tmp_path / "seen.jsonl")
    argv = ["experiment", "merge", "--model", "tiny-gpt2", "--requests", str(tmp_path / "all.jsonl"), "--start", "1",
            "--exclude-case-ids", str(tmp_path / "seen.jsonl"), "--parties", "2", "--edits", "4",
            "--methods", "global,collab", "--out", str(tmp_path / "grid"), "--threads", "1", "--quiet",
            "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    setup = json.loads((tmp_path / "r.json").read_text())["setup"]
    assert setup["case_ids"] == [reqs[i].case_id for i in (3, 4, 6, 7)]
    assert main([*argv[:-2], "--edits", "10", "--json", str(tmp_path / "r2.json")]) == 2  # 8 left after the filter
