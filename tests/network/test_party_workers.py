"""`secure-collab party --workers 2` in a real session: party a as two processes (its own command and the worker it
spawns, gloo), party b, the coordinator and the solver as their commands over loopback sockets. The released ΔW
equals the single-machine collab edit of the same requests (the simulation, an independent one-process path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from network_doubles import ROOT, Threads, make_config, run_role_cli, simulation_of

HP = {"mom2_tokens": 600, "v_num_grad_steps": 4, "n_templates": 1, "template_length": 3}


def _write(path: Path, requests: list) -> str:
    path.write_text("".join(json.dumps({"subject": r.subject, "prompt": r.prompt, "target_new": r.target_new,
                                        "case_id": r.case_id}) + "\n" for r in requests))
    return str(path)


def test_a_party_of_two_workers_takes_part_and_its_release_equals_the_simulation(tmp_path, capitals, monkeypatch):
    from secure_collab.cli import coordinator as coordinator_cli
    from secure_collab.cli import party as party_cli
    from secure_collab.cli import solver as solver_cli
    from secure_collab.editing.memit import rel_diff_per_layer, run_edit
    from secure_collab.patch import read_patch

    cache = tmp_path / "cache"
    monkeypatch.setenv("SECURE_COLLAB_CACHE", str(cache))
    cfg = make_config(tmp_path, parties=("a", "b"), mode="shares", model="tiny-llama", d_k=96, d_v=64, layers=[1, 2],
                      chunk_values=8192, value_bound=1e5, hparams=HP,
                      network={"max_message_bytes": 1 << 20, "stage_timeout_s": 180.0, "solve_timeout_s": 120.0,
                               "join_timeout_s": 120.0})
    config_path = str(tmp_path / "config-s1.toml")
    split = {"a": capitals[:3], "b": capitals[3:5]}
    files = {n: _write(tmp_path / f"{n}.jsonl", reqs) for n, reqs in split.items()}

    th = Threads()
    th.start("coordinator", lambda: run_role_cli(coordinator_cli, ["--config", config_path]))
    th.start("solver", lambda: run_role_cli(solver_cli, ["--config", config_path]))
    th.start("b", lambda: run_role_cli(party_cli, ["--config", config_path, "--name", "b", "--requests", files["b"],
                                                   "--patch", str(tmp_path / "b.safetensors")]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "secure_collab", "-q", "party", "--config", config_path, "--name", "a",
                           "--requests", files["a"], "--workers", "2", "--threads", "1",
                           "--patch", str(tmp_path / "a.safetensors"), "--json", str(tmp_path / "a.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    th.join(240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert th.results["b"] == 0 and th.results["coordinator"] == 0 and th.results["solver"] == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["ok"] and report["workers"] == 2 and report["edits"] == 3
    assert sorted(report["applied"]) == ["0/1", "0/2"]

    got = read_patch(tmp_path / "a.safetensors").per_layer()
    other = read_patch(tmp_path / "b.safetensors").per_layer()
    assert all(torch.equal(got[k], other[k]) for k in got)
    lm, hp, covs, templates = simulation_of(cfg.session, cache)
    want = run_edit(lm, [split["a"], split["b"]], hp, covs, "collab", templates).deltas
    diffs = rel_diff_per_layer(got, want)
    assert max(diffs.values()) < 1e-9, diffs  # the shares' fixed-point encoding, not the split (1e-15 there)


def _dying(rank: int, port: int, out: str) -> None:
    import time

    from parties.workers import Launch, LeadEditor, WorkerGroup, WorkerLost

    group = WorkerGroup.join(Launch(rank, 2, rank, f"tcp://127.0.0.1:{port}"), "cpu", worker_timeout_s=30)
    group.ready()
    if rank == 1:
        os._exit(9)  # a worker killed between two calls
    time.sleep(1.0)
    started = time.monotonic()
    try:
        LeadEditor(None, group).compute_statistics(0, 1)
    except WorkerLost as exc:
        Path(out).write_text(f"{time.monotonic() - started:.3f}\n{exc}")
    group.children = []
    group.close()


def test_a_worker_that_dies_fails_the_party_at_once_in_one_line(tmp_path):
    import torch.multiprocessing as mp

    from parties.workers import free_port

    out = tmp_path / "error.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_dying, args=(rank, port, str(out))) for port in [free_port()] for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert not any(p.is_alive() for p in procs)
    seconds, message = out.read_text().split("\n", 1)
    assert float(seconds) < 10 and "\n" not in message  # no wait for the timeout, one line
    assert message.startswith("a worker of this party stopped during the statistics of round 0 layer 1"), message
