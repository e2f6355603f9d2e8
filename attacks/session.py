"""A real networked session with uneven edit counts per party, for the metadata attack and the audit.

Solver, coordinator and parties run as separate ``secure-collab`` processes over CurveZMQ on loopback, exactly
as ``secure-collab demo`` starts them; the difference is that each party gets its own number of edits. The
ground truth (edit count per party) is written to ``edits.json`` beside the ledger, for scoring only.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from secure_collab.data.requests import Request


def run_session(work: Path, model: str, mode: str, shares: dict[str, list[Request]], *, timeout: float = 900.0,
                cache: Path | None = None, say=print) -> Path:
    """Run one session; returns the coordinator's ledger path (raises if a process failed)."""
    from secure_collab.config import write_config
    from secure_collab.data.formats import write_jsonl
    from secure_collab.editing.hparams import auto_request_batch, default_hparams
    from secure_collab.editing.session import session_hparams
    from secure_collab.keys import init_keys
    from secure_collab.models import load_model
    from secure_collab.models.specs import down_weight, n_layers
    from secure_collab.protocol.transport import free_loopback_endpoint

    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    lm = load_model(model, cache=cache)
    depth = n_layers(lm.model, lm.spec)
    hp = session_hparams(model, depth, default_hparams(model, depth).layers, "sequential", 0, {},
                         auto_request_batch(lm.device.type))
    d_v, d_k = down_weight(lm.model, lm.spec, hp.layers[0]).shape
    names = list(shares)
    init_keys(work / "keys", names)
    endpoint = free_loopback_endpoint()
    # an unset value (mom2_past_weight: λ unless set) is left out: TOML has no null (as session_file does)
    table = {k: v for k, v in hp.to_dict().items() if k not in ("layers", "variant", "template_seed",
                                                                 "request_batch") and v is not None}
    cfg_path = work / "session.toml"
    cfg = write_config(cfg_path, session={
        "id": f"attack-{secrets.token_hex(4)}", "mode": mode, "variant": "sequential", "rounds": 1,
        "layers": list(hp.layers), "d_k": int(d_k), "d_v": int(d_v), "min_parties": 2, "value_bound": 1e5,
        "model": model, "template_seed": hp.template_seed, "hparams": table,
        "protection": {"precision_bits": 48} if mode == "ckks" else {},
    }, network={"coordinator_bind": endpoint, "coordinator_endpoint": endpoint, "join_timeout_s": 900.0,
                "stage_timeout_s": 900.0, "solve_timeout_s": 600.0, "request_in_turn": True},
       paths={"keys": "keys", "roster": "keys/roster.toml", "ledger": "coordinator/ledger.sqlite",
              "solver_state": "solver"})
    common = ["--threads", "1"] + (["--cache-dir", str(cache)] if cache else [])
    procs = {"solver": _spawn(work, "solver", ["solver", "--config", str(cfg_path), *common]),
             "coordinator": _spawn(work, "coordinator", ["coordinator", "--config", str(cfg_path)])}
    for name, reqs in shares.items():
        path = write_jsonl(reqs, work / f"requests-{name}.jsonl")
        procs[name] = _spawn(work, f"party-{name}", ["party", "--config", str(cfg_path), "--name", name,
                                                    "--requests", str(path), *common])
    say(f"session {cfg.session.id} ({mode}): {', '.join(f'{n}={len(r)}' for n, r in shares.items())} edits")
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs.values()):
        if time.monotonic() > deadline:
            for p in procs.values():
                p.kill()
            raise RuntimeError(f"session timed out; logs in {work / 'logs'}")
        time.sleep(0.5)
    bad = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
    if bad:
        raise RuntimeError(f"session processes failed {bad}; logs in {work / 'logs'}")
    ledger = Path(cfg.paths.ledger)
    (ledger.parent / "edits.json").write_text(json.dumps({n: len(r) for n, r in shares.items()}))
    return ledger


def _spawn(work: Path, role: str, argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with (work / "logs" / f"{role}.log").open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "secure_collab", *argv], stdout=log, stderr=subprocess.STDOUT,
                                env=env, stdin=subprocess.DEVNULL)
