"""`secure-collab bench` on tiny sizes: the anchors against independent sums, the summary's fields, resuming,
the path without Flower (the optional ``bench`` extra), and the CLI's refusals. The timings are not asserted."""

from __future__ import annotations

import numpy as np
import pytest

from secure_collab.bench import anchors
from secure_collab.bench.runner import BenchConfig, run_bench
from secure_collab.cli import main

ISSUE_FIELDS = {"shares_bytes_per_value", "ckks_bytes_per_value", "flower_secagg_bytes_per_value",
                "nvflare_ckks_bytes_per_value", "coordinator_peak_bytes", "target_seconds_per_edit"}


def _vectors(parties: int = 3, n: int = 5000, scale: float = 40.0) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.uniform(-scale, scale, n) for _ in range(parties)]


def _tiny(**changes) -> BenchConfig:
    base = dict(model="tiny-llama", session_parties=(2,), session_reps=1, session_edits=1, anchor_parties=(2,),
                memory_parties=(2, 3), memory_dims=(12,), solve_dims=(48,), solve_reps=1, covariance_tokens=200,
                covariance_reps=1, target_requests="bundled", target_offset=2, target_edits=2, target_reps=1,
                target_flop_edits=1, key_edits=2, key_reps=1, efficacy=True,
                sections=("anchors", "memory", "solve", "covariance", "targets"))
    return BenchConfig(quick=True, **{**base, **changes})


def test_flower_masking_opens_to_the_sum_within_its_quantisation():
    pytest.importorskip("flwr")
    vecs = _vectors()
    bound, levels = 64.0, 1 << 22
    r = anchors.measure_flower(vecs, bound, levels, 1 << 32)
    step = 2 * bound / levels  # stochastic rounding moves each party's value by less than one step
    assert 0 < r["max_abs_err"] <= len(vecs) * step
    assert 8.0 <= r["bytes_per_value"] <= 8.0 + 200 / 5000  # int64 values and np.save's header


def test_flower_finest_quantisation_keeps_the_sum_inside_the_modulus():
    for parties in (2, 3, 10, 20):
        q = anchors.flower_finest(parties)
        assert parties * q["quantization_range"] <= q["modulus_range"] and q["quantization_range"] < 2**31


def test_nvflare_ckks_opens_close_to_the_sum():
    vecs = _vectors(parties=2, n=5000)
    r = anchors.measure_nvflare_ckks(vecs)
    assert r["max_abs_err"] < 1e-5  # scale 2^40: ~1e-8 absolute
    assert r["bytes_per_value"] > 40  # two 4,096-slot ciphertexts of N = 8192 at two data primes


def test_ckks_precision_for_the_anchor_error_is_the_fewest_bits_that_reach_it():
    from secure_collab.protection.ckks import choose_parameters, grid_bits

    def err(bits: int, parties: int, bound: float) -> float:
        c = choose_parameters(parties, bits)
        return parties * 2.0 ** -(grid_bits(c["error_bits"], parties) - int(np.ceil(np.log2(bound))) + 1)

    for target in (1e-5, 1e-8):
        bits = anchors.ckks_precision_for(target, 3, 64.0)
        assert err(bits, 3, 64.0) <= target < err(bits - 1, 3, 64.0)


def test_anchor_rows_without_flower_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(anchors, "flower_available", lambda: False)
    rows = anchors.measure_all(_vectors(parties=2, n=3000), bound=64.0)
    assert "pip install" in rows["flower-secagg+"]["skipped"]
    assert rows["ours-shares"]["max_rel_err"] < 1e-12 and rows["ours-shares"]["data_bytes_per_value"] == 8.0
    # our ckks at NVFlare's error: equal or better error
    assert rows["ours-ckks-matched"]["max_abs_err"] <= rows["nvflare-ckks"]["max_abs_err"]
    from secure_collab.bench.report import summarise

    s = summarise({"anchors": {"by_parties": {"2": {"methods": rows}}}})
    assert s["flower_secagg_bytes_per_value"] is None and "pip install" in s["flower_secagg_skipped"]
    missing = [c for c in s["targets_check"] if "flower" in c["target"]]
    assert missing and all(not c["met"] and "not installed" in c["note"] for c in missing)


def test_bench_writes_the_issue_fields_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    cfg = _tiny()
    first = run_bench(cfg, out, tmp_path / "cache")
    assert ISSUE_FIELDS - {"flower_secagg_bytes_per_value"} <= {k for k, v in first.items() if v is not None}
    assert set(first["coordinator_peak_bytes"]) == {"plain", "shares", "ckks"}
    assert set(first["coordinator_peak_bytes"]["shares"]["12"]) == {"2", "3"}
    assert first["shares_bytes_per_value"] == 8.0
    assert first["target_speedup"] > 0 and first["sections"]["targets"]["cpu"]["same_steps"]
    assert (out / "protection_overhead.png").is_file() and (out / "seconds_per_edit.png").is_file()
    # a second run with the same settings reads every section back; changed settings measure again
    import secure_collab.bench.runner as runner

    def refuse(*_a, **_k):
        raise AssertionError("a kept section was measured again")

    monkeypatch.setattr(runner, "_solve", refuse)
    again = run_bench(cfg, out, tmp_path / "cache")
    assert again["solve_seconds"] == first["solve_seconds"]
    monkeypatch.undo()
    changed = run_bench(_tiny(solve_dims=(40,), sections=("solve",)), out, tmp_path / "cache")
    assert set(changed["solve_seconds"]) == {"40"}


@pytest.mark.slow
def test_bench_sessions_on_tiny_llama(tmp_path):
    """Whole sessions (processes over CurveZMQ) in the three modes: ratios and bytes per party."""
    r = run_bench(_tiny(sections=("sessions",), warmup=False), tmp_path / "bench", tmp_path / "cache")
    assert set(r["shares_over_plain"]) == {"2"} and r["shares_over_plain"]["2"] > 0
    assert r["ckks_over_plain"]["2"] > 0
    sent = r["session_bytes_per_party"]["2"]
    assert sent["ckks"]["sent"] > sent["shares"]["sent"] > 0 and sent["shares"]["received"] > 0


def test_bench_cli_refuses_unknown_sections_and_writes_json(tmp_path, capsys):
    assert main(["bench", "--only", "sessions,nonsense", "--out", str(tmp_path)]) == 2
    assert "nonsense" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "--quick" in capsys.readouterr().out


def test_bench_set_changes_one_setting_and_refuses_bad_ones(tmp_path, capsys):
    cfg = BenchConfig.preset(False).with_settings(["session_parties=3,10", "session_reps=2", "efficacy=no"])
    assert cfg.session_parties == (3, 10) and cfg.session_reps == 2 and cfg.efficacy is False
    assert cfg.memory_dims == BenchConfig.preset(False).memory_dims  # the rest of the preset stays
    for bad in ("session_reps=two", "nonsense=1", "session_reps", "efficacy=maybe", "target_edits=-1", "quick=1"):
        with pytest.raises(ValueError, match="--set"):
            BenchConfig.preset(True).with_settings([bad])
    assert main(["bench", "--set", "session_reps=two", "--only", "solve", "--out", str(tmp_path)]) == 2
    assert "session_reps" in capsys.readouterr().err and not (tmp_path / "sections").exists()


def test_bench_memory_measures_the_large_dim_at_its_own_party_counts(tmp_path):
    r = run_bench(_tiny(sections=("memory",), memory_parties=(2, 3), memory_dims=(8, 16), memory_large_parties=(2,)),
                  tmp_path / "bench")
    rows = r["sections"]["memory"]["rows"]
    assert {(x["dim"], x["sending"]) for x in rows if x["kind"] == "own"} == {(8, 2), (8, 3), (16, 2)}
    flat = [c["target"] for c in r["targets_check"] if c["target"].startswith("coordinator memory flat")]
    assert flat and not [t for t in flat if "d = 16" in t]  # one party count says nothing about flatness


def test_backends_section_times_memit_against_malmen_on_the_same_edits(tmp_path):
    """(g): both backends' statistics timed on the same requests, the ratio summarised and checked against 10x,
    the table written; a model with no bundled hypernetwork is skipped with a note."""
    from secure_collab.data.bundled import bundled_requests
    from secure_collab.editing.malmen.hparams import DEFAULTS
    from secure_collab.editing.malmen.train import TrainConfig
    from secure_collab.editing.malmen.trainer import train_hypernet
    from secure_collab.models import load_model

    reqs = bundled_requests(12)
    train_hypernet(load_model("tiny-llama"), DEFAULTS["tiny-llama"],
                   TrainConfig(steps=1, edits_per_step=2, norm_edits=4, val_every=0, val_edits=2), reqs[:8],
                   reqs[8:10], tmp_path / "run")
    whole = run_bench(_tiny(sections=("backends",), backend_edits=2, backend_reps=2,
                            backend_hypernet=str(tmp_path / "run")), tmp_path / "bench")
    c = whole["sections"]["backends"]["cpu"]
    assert c["edits"] == 2 and c["memit_seconds_per_edit"]["n"] == 2 and c["malmen_seconds_per_edit"]["n"] == 2
    memit, malmen = c["memit_seconds_per_edit"]["runs"], c["malmen_seconds_per_edit"]["runs"]
    ratios = [m / n for m, n in zip(memit, malmen, strict=True)]
    assert c["memit_over_malmen"]["median"] == pytest.approx(sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2, rel=1e-3)
    assert whole["statistics_seconds_per_edit"]["malmen"] == c["malmen_seconds_per_edit"]["median"]
    [check] = [ch for ch in whole["targets_check"] if "MALMEN" in ch["target"]]
    assert check["limit"] == 10.0 and check["met"] == (check["value"] >= 10.0)
    assert "(g) A party's statistics per edit" in (tmp_path / "bench" / "bench.md").read_text()
    skipped = run_bench(_tiny(sections=("backends",)), tmp_path / "bench2")
    assert "no hypernetwork bundled for tiny-llama" in skipped["sections"]["backends"]["skipped"]
