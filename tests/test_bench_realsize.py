"""`secure-collab bench --only realsize` at a tiny size: the real roles as processes over CurveZMQ on loopback with
synthetic statistics, every reported field present and sane, the released ΔW equal to an independent float64
solve of the parties' summed statistics, and the rows that cannot run or are stopped recorded as such. No timing
is asserted (speed targets live in the bench and BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from secure_collab.bench import realsize
from secure_collab.bench.report import realsize_table, summarise
from secure_collab.bench.runner import BenchConfig, run_bench

D_K, D_V, RANK = 24, 8, 3


def _reference_delta(parties: int) -> np.ndarray:
    """ΔW = ΣB (λC + ΣG)⁻¹ from each party's seeded statistics, by numpy's LU solve (not solve_update)."""
    stats = [realsize.synthetic_statistics(D_K, D_V, RANK, 1000 + i) for i in range(parties)]
    g = sum(s["G"] for s in stats)
    b = sum(s["B"] for s in stats)
    a = realsize.LAMBDA * realsize.synthetic_covariance(D_K) + g
    return np.linalg.solve(a, b.T).T  # a is symmetric: (a⁻¹ bᵀ)ᵀ = b a⁻¹


def test_synthetic_statistics_have_the_declared_shape_rank_and_bounds():
    s = realsize.synthetic_statistics(D_K, D_V, RANK, 5)
    assert s["G"].shape == (D_K, D_K) and s["B"].shape == (D_V, D_K) and s["N"] == RANK
    assert s["G"].dtype == np.float64 and np.linalg.matrix_rank(s["G"]) == RANK
    assert np.allclose(s["G"], s["G"].T) and np.linalg.eigvalsh(s["G"]).min() > -1e-12
    assert abs(np.trace(s["G"]) - RANK) < 1e-12 and np.abs(s["B"]).max() <= RANK
    assert not np.array_equal(s["G"], realsize.synthetic_statistics(D_K, D_V, RANK, 6)["G"])  # seeded per party


@pytest.mark.parametrize("mode", ["shares", "ckks"])
def test_a_row_releases_the_reference_update_and_reports_every_figure(tmp_path, mode):
    work = tmp_path / "work"
    work.mkdir()
    keep = tmp_path / "delta.npy"
    row = realsize.run_row(D_K, D_V, 3, mode, RANK, work, tmp_path / "logs", memory_limit=1 << 50, timeout=240,
                           keep_delta=keep)
    assert row["ok"] and row["stopped"] is None and row["identical_deltas"], row
    delta = np.load(keep)
    err = np.abs(delta - _reference_delta(3)).max() / np.abs(delta).max()
    assert err < (1e-6 if mode == "ckks" else 1e-10)
    assert row["values_per_party"] == D_K * (D_K + 1) // 2 + D_V * D_K + 1
    assert row["wall_seconds"] > 0 and row["ready_seconds"] > 0
    assert row["bytes_sent_per_party"] >= 8 * row["values_per_party"] and row["bytes_received_per_party"] > 0
    assert row["bytes_per_value"] == row["bytes_sent_per_party"] / row["values_per_party"]
    assert row["party_statistics_bytes"] == {"full_bytes": 8 * (D_K * D_K + D_V * D_K),
                                             "packed_bytes": 8 * (D_K * (D_K + 1) // 2 + D_V * D_K)}
    assert set(row["roles"]) == {"party-a", "party-b", "party-c", "coordinator", "solver"}
    for role, r in row["roles"].items():
        assert r["exit"] == 0, role
        # the OS's high-water mark: at least the VmHWM the role read at its end and what it held when ready
        assert r["peak_rss_bytes"] >= r["vm_hwm_bytes"] >= r["rss_ready_bytes"] > 0
        assert r["sampled_max_rss_bytes"] is None or r["sampled_max_rss_bytes"] <= r["peak_rss_bytes"]
    peaks = {k: row[f"{k}_peak_bytes"] for k in ("coordinator", "solver", "party")}
    assert all(v and v > 0 for v in peaks.values())
    # each role's own memory, not the driver's (a child's ru_maxrss would carry this test process's RSS at fork):
    # the coordinator imports neither torch nor the roles' engines
    assert peaks["coordinator"] < 150e6
    for name in ("protect", "add", "open"):
        rate = row[f"{name}_seconds_per_mvalue"]
        assert rate["cpu"] > 0 and rate["wall"] > 0 and rate["n"] == (3 if name == "protect" else 1)
    for name in ("party_check", "party_pack", "coordinator_signature", "solver_authenticate", "solver_check",
                 "solve"):
        assert row[f"{name}_seconds"]["wall"] > 0 and row[f"{name}_seconds"]["calls"] >= 1, name
    assert row["roles"]["coordinator"]["timers"]["add"]["calls"] == 3 * 3  # 3 parties × G, B and N (one chunk)
    assert row["machine_used_max_bytes"] > 0


def test_the_section_summary_checks_the_issue_targets_and_writes_its_table(tmp_path, monkeypatch):
    cfg = BenchConfig(quick=True, sections=("realsize",), realsize_dk=(D_K,), realsize_dv=D_V, realsize_parties=(3,),
                      realsize_modes="plain,shares", realsize_rank=RANK, realsize_timeout_s=240.0)
    monkeypatch.chdir(tmp_path)  # `bench --out runs/x`: a relative directory (the roles run in their own)
    r = run_bench(cfg, Path("bench"))
    sec = r["sections"]["realsize"]
    assert set(sec["rows"]) == {f"dk{D_K}-dv{D_V}-p3-{m}-n{RANK}" for m in ("plain", "shares")}
    assert all(row["ok"] for row in sec["rows"].values())
    solve = sec["solves"][f"solve-dk{D_K}-dv{D_V}-p3-n{RANK}"]
    assert solve["ok"] and solve["solve_seconds"] > 0 and solve["check_seconds"] > 0 and solve["peak_rss_bytes"] > 0
    targets = {c["target"]: c for c in r["targets_check"] if c["target"].startswith("real size")}
    # nothing at d_k 14,336 here: the coordinator targets say "not measured"; a party's and the protect rate are
    # checked on every row
    assert [c for t, c in targets.items() if "coordinator" in t and c["note"] == "not measured"]
    assert any("party peak" in t for t in targets) and any("shares protect" in t for t in targets)
    assert (tmp_path / "bench" / "realsize" / "rows" / f"dk{D_K}-dv{D_V}-p3-shares-n{RANK}.json").is_file()
    assert "(h) Real-size sessions" in (tmp_path / "bench" / "bench.md").read_text()
    # a second run reads the rows back (kept one by one), and the summary of the realsize section alone holds
    assert summarise({"realsize": sec})["realsize_rows"].keys() == sec["rows"].keys()
    assert "realsize" not in BenchConfig(quick=False).sections  # only when named


def test_rows_that_cannot_fit_or_run_too_long_are_recorded_not_lost(tmp_path):
    out = realsize.bench_realsize((D_K,), D_V, (3,), ("plain",), RANK, tmp_path / "a", memory_limit=1,
                                  timeout=60, solve=False)
    row = out["rows"][f"dk{D_K}-dv{D_V}-p3-plain-n{RANK}"]
    assert not row["ok"] and "limit" in row["not_run"]
    assert "not run" in "\n".join(realsize_table(out))
    work = tmp_path / "work"
    work.mkdir()
    stopped = realsize.run_row(D_K, D_V, 3, "plain", RANK, work, tmp_path / "logs", memory_limit=1 << 50,
                               timeout=0.2)
    assert not stopped["ok"] and stopped["stopped"].startswith("stopped")
    assert all(r["exit"] is not None for r in stopped["roles"].values())  # every role reaped, none left behind


def test_a_real_size_session_file_streams_with_the_network_defaults(tmp_path):
    """Since streaming, a bench session is a default session: one Llama-3-8B ΔW (470 MB) no longer has to fit one
    message (it travels in RELEASE_PARTs), so the bench keeps the default message size, receive buffer (room for two
    messages per connection: RCVHWM 1 hung a session before its first step) and the coordinator's window (64 MiB)."""
    from secure_collab.config import NetworkConfig, load_config
    from secure_collab.protocol.transport import router_rcvhwm

    cfg = load_config(realsize.write_session(tmp_path, 14336, 4096, 3, "shares", 16, precision_bits=48,
                                             in_turn=True, timeout=60))
    default = NetworkConfig()
    for field in ("max_message_bytes", "recv_buffer_bytes", "coordinator_memory_bytes"):
        assert getattr(cfg.network, field) == getattr(default, field), field
    assert 8 * 4096 * 14336 > cfg.network.max_message_bytes and router_rcvhwm(cfg.network) >= 2


def test_a_timed_method_does_not_keep_its_object_alive():
    """The bench times every chunk accumulator's ``add`` in the coordinator. Wrapping a bound method in a closure set
    on its own object made a reference cycle, so each dropped running sum lived until the cyclic collector ran: at
    d_k 8,192 the coordinator's peak read 300-350 MB, 190 MB without the cycle (BENCHMARKS.md, "Real-size
    sessions"). With the collector off, the wrapped object goes with its last reference; the timing still counts."""
    import gc
    import weakref

    from secure_collab.bench.realsize_role import Timers

    class Sum:
        def __init__(self) -> None:
            self.total = 0

        def add(self, x: int) -> int:
            self.total += x
            return self.total

    timers = Timers()
    was = gc.isenabled()
    gc.disable()
    try:
        s = Sum()
        timers.wrap(s, "add", values=lambda x: x)
        assert s.add(2) == 2 and s.add(3) == 5
        ref = weakref.ref(s)
        del s
        assert ref() is None, "the timed wrapper kept its object alive (a reference cycle)"
    finally:
        if was:
            gc.enable()
    assert timers.rows["add"]["calls"] == 2 and timers.rows["add"]["values"] == 5
