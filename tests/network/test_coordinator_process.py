"""The trust split in the running process: a real coordinator (`secure-collab coordinator`, its own process) runs
a whole session in each protection mode (and a served release, relaying queries) and never loads the solver, a
party, or any module that handles a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from network_doubles import HERE, ROOT, SyntheticEngine, Threads, ToyServedModel, closed_form_solve, make_config

from secure_collab.protection import get_scheme

# what holds or derives a secret: the solver's package (its state, OPRF key, opening), the parties' runtime, the
# hazmat door, and the recipes behind it (sealing, the tag OPRF, the MAC and its compiled kernels, the full schemes);
# numba too (the MAC's compiler: ~55 MB the coordinator's memory bound has no room for)
FORBIDDEN_PREFIXES = ("solver", "parties", "attacks", "numba", "llvmlite")
FORBIDDEN = {"secure_collab.protection._primitives", "secure_collab.protection.sealing",
             "secure_collab.protection.oprf", "secure_collab.protection.integrity",
             "secure_collab.protection.scheme", "secure_collab.protection.ckks", "secure_collab.protection.shares",
             "secure_collab.protection.plain", "secure_collab.protection.randomness",
             "secure_collab.protection._kernels"}


@pytest.mark.parametrize(("mode", "release", "defence"), [
    ("shares", "weights", "none"), ("ckks", "weights", "none"), ("plain", "weights", "none"),
    ("shares", "served", "none"), ("shares", "weights", "noise:1")])
def test_a_real_coordinator_process_never_loads_secret_handling_modules(tmp_path, mode, release, defence):
    """With noise:Z the coordinator computes the session's (ε, δ) for its ledger from the session file alone, and in a
    served release it relays the parties' queries: either way it loads no secret-handling module (nor the parties'
    noise words)."""
    from parties import run_party
    from parties.queries import QueryClient
    from solver.server import run_solver

    served = {"release": "served", "variant": "oneshot"} if release == "served" else {}
    room = {"value_bound": 1e8} if defence != "none" else {}  # for 40σ of noise at the default κ = ρ = 1000
    cfg = make_config(tmp_path, mode=mode, defence=defence, network={"max_message_bytes": 64 << 20}, **served,
                      **room)
    config_path = next(tmp_path.glob("config-*.toml"))
    modules = tmp_path / "modules.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), OMP_NUM_THREADS="1")
    coordinator = subprocess.Popen([sys.executable, str(HERE / "modules_probe.py"), str(modules), "coordinator",
                                    "--config", str(config_path)], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scheme, th = get_scheme(mode), Threads()
    model = ToyServedModel(cfg) if served else None
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve, served=model))
    for name in ("a", "b", "c"):
        engine = SyntheticEngine(name, cfg)
        th.start(name, lambda n=name, e=engine: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
    try:
        if served:  # the parties end once served; then each asks the served model and says it is done
            for name in ("a", "b", "c"):
                th.threads[1 + "abc".index(name)].join(120)
                with QueryClient(cfg, name) as client:
                    assert client.ask({"kind": "logprobs", "prompt": "p", "candidates": ["x"]})["ok"]
                    assert client.ask({"kind": "done"})["ok"]
            assert model is not None and len(model.answered) == 3
        th.join(120)
        out, err = coordinator.communicate(timeout=60)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.communicate()
    assert coordinator.returncode == 0, err[-3000:]
    assert all(th.results[n].ok for n in "abc"), {n: th.results[n].reason for n in "abc"}
    loaded = set(json.loads(modules.read_text()))
    assert "coordinator.server" in loaded and "secure_collab.protection.public" in loaded  # the probe saw it run
    assert ("dp_accounting.rdp" in loaded) == (defence != "none")  # it computed ε only for the noised session
    leaked = sorted(m for m in loaded if m in FORBIDDEN or m.split(".")[0] in FORBIDDEN_PREFIXES)
    assert not leaked, f"the coordinator's process loaded {leaked}"


def test_the_probe_sees_secret_handling_modules_where_a_command_loads_them(tmp_path):
    """Positive control: the same probe around a command that protects and opens statistics reports the hazmat
    module and the full schemes, so an empty report above is not the probe's blindness."""
    modules = tmp_path / "modules.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(HERE / "modules_probe.py"), str(modules), "protection-check", "--mode",
                           "shares", "--parties", "2", "--dim", "8", "-q"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(modules.read_text()))
    assert {"secure_collab.protection._primitives", "secure_collab.protection.sealing",
            "secure_collab.protection.scheme"} <= loaded
