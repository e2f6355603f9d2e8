"""`secure-collab demo` on a tiny model: real processes over CurveZMQ, compared with Global-Edit."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from secure_collab.cli import main

FIELDS = {"mode", "variant", "parties", "edits", "efficacy", "generalization", "specificity", "score", "pre",
          "delta_rel_diff_vs_global", "bytes_to_coordinator", "seconds"}


PUBLIC = {"session.toml", "roster.toml"}  # the configuration and the roster of public keys (and *.public.toml)


@pytest.mark.parametrize(("mode", "variant", "tolerance", "umask", "json_out"), [
    ("shares", "sequential", 1e-9, 0o000, "file"),
    ("shares", "oneshot", 1e-9, 0o022, "file"),
    ("ckks", "sequential", 1e-6, 0o022, "-"),
])
def test_demo_session_equals_global_edit(tmp_path, capsys, mode, variant, tolerance, umask, json_out):
    # no chdir: the demo's processes import secure_collab as this one does (from the checkout beside the cwd)
    assert not Path("-").exists()
    out = tmp_path / "demo.json"
    old = os.umask(umask)  # inherited by the demo's processes
    try:
        rc = _demo(tmp_path, mode, variant, out if json_out == "file" else "-")
    finally:
        os.umask(old)
    if json_out == "-":  # stdout is the JSON document alone
        out.write_text(capsys.readouterr().out)
        assert not Path("-").exists()  # with --json -, a file named "-" would land in the cwd
    else:
        assert stat.S_IMODE(out.stat().st_mode) == 0o600  # per-party reports and edit counts
    _check_demo(out, rc, mode, variant, tolerance, tmp_path / "c")
    # the work directory's secrets (requests, keys, reports, patches, logs, ledger, solver state) are private
    work = tmp_path / "work"
    secret = [p for p in [work, *work.rglob("*")] if p.name not in PUBLIC and not p.name.endswith(".public.toml")]
    loose = {str(p.relative_to(work)): oct(stat.S_IMODE(p.stat().st_mode)) for p in secret
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)}
    assert loose == {}


def test_demo_streams_steps_larger_than_the_coordinators_memory_bound_and_equals_global_edit(tmp_path):
    """Issue 22's acceptance on a real model: the demo's real processes on tiny-llama, 64 values a chunk and a
    coordinator bound of 4 KiB of running sums, a few chunks' worth where each layer's statistics take dozens: it
    completes, ΔW equals Global-Edit, and the coordinator's ledger says it never held more than the bound."""
    out = tmp_path / "demo.json"
    rc = main(["demo", "--model", "tiny-llama", "--mode", "shares", "--variant", "sequential", "--parties", "3",
               "--edits-per-party", "2", "--workdir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "c"),
               "--timeout", "600", "--json", str(out), "--quiet", "--chunk-values", "64",
               "--coordinator-memory", "4096"])
    _check_demo(out, rc, "shares", "sequential", 1e-9, tmp_path / "c")
    with sqlite3.connect(json.loads(out.read_text())["ledger"]) as db:
        windows = [json.loads(d) for e, d in db.execute("SELECT event, detail FROM stages") if e == "handoff"]
        chunks = db.execute("SELECT MAX(chunk) FROM handoffs WHERE stat = 'G'").fetchone()[0] + 1
    assert windows and all(0 < w["peak_held_bytes"] <= 4096 == w["memory_bound"] for w in windows)
    assert all(w["window_chunks"] < chunks for w in windows)


def _demo(tmp_path, mode, variant, out):
    return main(["demo", "--model", "tiny-llama", "--mode", mode, "--variant", variant, "--parties", "3",
                 "--edits-per-party", "2", "--workdir", str(tmp_path / "work"), "--cache-dir",
                 str(tmp_path / "c"), "--timeout", "600", "--json", str(out), "--quiet"])


def _check_demo(out, rc, mode, variant, tolerance, cache):
    r = json.loads(out.read_text())
    assert rc == 0, r
    assert FIELDS <= set(r)
    assert r["ok"] and r["mode"] == mode and r["variant"] == variant and r["edits"] == 6
    assert r["delta_rel_diff_vs_global"] <= tolerance
    assert r["parties_applied_identical_updates"]
    assert set(r["bytes_to_coordinator"]) == {"a", "b", "c"} and min(r["bytes_to_coordinator"].values()) > 0
    assert set(r["bytes_from_coordinator"]) == {"a", "b", "c"} and min(r["bytes_from_coordinator"].values()) > 0
    assert 0 < r["session_seconds"] < r["seconds"]  # the processes' span, inside the whole command's
    # each party kept its targets in the shared cache (a session in another mode reuses them)
    assert len(list((cache / "targets").rglob("*.safetensors"))) == 6
    # the solver only ever received aggregates: every hand-off in the ledger covers at least min_parties
    with sqlite3.connect(r["ledger"]) as db:
        db.row_factory = sqlite3.Row
        handoffs = db.execute("SELECT * FROM handoffs").fetchall()
        contribs = db.execute("SELECT * FROM messages WHERE type = 'contrib' AND outcome = 'accepted'").fetchall()
    assert handoffs and contribs
    assert all(len(json.loads(h["parties"])) >= 2 for h in handoffs)


def test_demo_with_rank_truncation_equals_the_truncated_global_edit(tmp_path):
    """--defence rank:2 reaches the solver process through the session file: every ΔW the parties applied has rank 2
    and equals Global-Edit truncated the same way (the reference's own rank), as the undefended demo equals it."""
    import torch

    from secure_collab.patch import read_patch

    out = tmp_path / "demo.json"
    rc = main(["demo", "--model", "tiny-llama", "--mode", "shares", "--parties", "3", "--edits-per-party", "2",
               "--defence", "rank:2", "--workdir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "c"),
               "--timeout", "600", "--json", str(out), "--quiet"])
    r = json.loads(out.read_text())
    assert rc == 0 and r["ok"] and r["defence"] == "rank:2", r
    assert r["delta_rel_diff_vs_global"] <= 1e-9
    deltas = read_patch(tmp_path / "work" / "patch-a.safetensors").deltas
    assert deltas and all(int(torch.linalg.matrix_rank(d.double())) == 2 for d in deltas.values())


def test_demo_with_a_served_release_keeps_dw_with_the_solver_and_answers_as_global_edit(tmp_path):
    """--release served: the parties write no patch and apply nothing; each measures its efficacy through queries,
    and one served answer per party equals the same query on the Global-Edit model (oneshot: collab = global)."""
    out = tmp_path / "demo.json"
    rc = main(["demo", "--model", "tiny-llama", "--mode", "shares", "--parties", "3", "--edits-per-party", "2",
               "--release", "served", "--workdir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "c"),
               "--timeout", "600", "--json", str(out), "--quiet"])
    r = json.loads(out.read_text())
    assert rc == 0 and r["ok"] and r["release"] == "served" and r["variant"] == "oneshot", r
    assert r["served_vs_global_logprob_diff"] <= 1e-6
    assert not list((tmp_path / "work").glob("patch-*")) and r["delta_rel_diff_vs_global"] is None
    for name, rep in r["per_party"].items():
        assert rep["applied"] == {} and rep["noticed"] and rep["noticed"] == r["per_party"]["a"]["noticed"], name
        assert rep["served"]["measured"] == 2 and rep["post"]["efficacy"] is not None, name
    assert all(q["ok"] and q["used"] == 6 for q in r["served_queries"].values())  # 2 × 2 for its edits, 2 more
    with sqlite3.connect(r["ledger"]) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM queries WHERE outcome = 'accepted'")]
    assert kinds.count("logprobs") == 9 and kinds.count("done") == 3


def test_demo_with_noise_runs_its_parties_csprng_noise_through_separate_processes(tmp_path):
    """--defence noise:0.05 in the demo's separate party, coordinator and solver processes: each party clips to the
    declared bounds and adds noise from a fresh secret key (nothing seeded), the solver's checks admit the noised sums,
    and the session ends with every release applied; ΔW is then not Global-Edit's (the noise and clipping are the
    parties' own), and the ledger holds the session's (ε, δ)."""
    import sqlite3

    out = tmp_path / "demo.json"
    rc = main(["demo", "--model", "tiny-llama", "--mode", "shares", "--parties", "3", "--edits-per-party", "2",
               "--defence", "noise:0.05", "--key-norm-bound", "32", "--residual-norm-bound", "1", "--workdir",
               str(tmp_path / "work"), "--cache-dir", str(tmp_path / "c"), "--timeout", "600", "--json", str(out),
               "--quiet"])
    r = json.loads(out.read_text())
    assert rc == 0 and r["ok"] and r["defence"] == "noise:0.05", r
    assert r["delta_rel_diff_vs_global"] > 1e-3
    with sqlite3.connect(tmp_path / "work" / "coordinator" / "ledger.sqlite") as db:
        detail = json.loads(db.execute("SELECT detail FROM stages WHERE event = 'joining'").fetchone()[0])
    assert detail["defence"] == "noise:0.05" and detail["epsilon"] > 0 and detail["delta"] == 1e-6


def test_demo_with_the_malmen_backend_equals_its_global_edit(tmp_path):
    """--backend malmen --hypernet DIR: the solver, coordinator and parties as separate processes read the backend and
    the pinned digest from the session file; the applied ΔW equals run_malmen_edit's Global-Edit (float64 tiny
    model, shares)."""
    from secure_collab.data.bundled import bundled_requests
    from secure_collab.models import load_model
    from tests.editing.test_malmen import make_hypernet

    make_hypernet(load_model("tiny-llama"), bundled_requests(4)).save(tmp_path / "net")
    out = tmp_path / "demo.json"
    rc = main(["demo", "--model", "tiny-llama", "--mode", "shares", "--parties", "3", "--edits-per-party", "2",
               "--backend", "malmen", "--hypernet", str(tmp_path / "net"), "--workdir", str(tmp_path / "work"),
               "--cache-dir", str(tmp_path / "c"), "--timeout", "600", "--json", str(out), "--quiet"])
    r = json.loads(out.read_text())
    assert rc == 0, r
    assert r["ok"] and r["backend"] == "malmen" and r["variant"] == "oneshot" and r["edits"] == 6
    assert r["delta_rel_diff_vs_global"] <= 1e-12 and r["parties_applied_identical_updates"]
    assert all(rep["backend"] == "malmen" for rep in r["per_party"].values())
    assert main(["demo", "--model", "tiny-llama", "--backend", "malmen", "--hypernet", str(tmp_path / "net"),
                 "--variant", "sequential", "--workdir", str(tmp_path / "w2"), "--quiet"]) == 2
