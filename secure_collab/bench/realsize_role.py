"""One role of a real-size bench session as its own process: `python -m secure_collab.bench.realsize_role ROLE`.

The roles are the real runtimes (``parties.runner.run_party_session``, ``coordinator.server.run_coordinator``,
``solver.server.run_solver``) behind the plug-in points they already have: a party's engine is a
``PartyEngine`` whose ``compute_statistics`` hands over statistics generated before the session starts
(``realsize.synthetic_statistics``: no model, nothing computed on request), and the solver's ``solve`` is
``editing.solve.solve_update`` with a synthetic C (no model, no corpus). Each role imports only its own runtime,
so the coordinator's process loads neither the solver nor the parties.

Every role prepares (statistics, C), writes ``--ready``, waits for ``--go`` (so the session's wall time starts
when every role holds what it needs), runs, and writes ``--out``: its outcome, the time spent in the calls the
bench names (protect, add, open, the plausibility checks, the solve: wall and this thread's CPU seconds) and its
memory from the OS (VmRSS when ready, VmHWM at the end).

The timers wrap the calls by name on this process's own objects (a bench-only instrument: nothing else changes).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class Timers:
    """Wall and this thread's CPU seconds of each wrapped call, summed by name, with the values it handled."""

    def __init__(self, partial: Path | None = None, every: float = 2.0) -> None:
        """``partial``: where the figures so far are written, at most every ``every`` seconds (a row stopped by the
        memory guard is killed, and keeps what its roles measured until then)."""
        self.rows: dict[str, dict[str, float]] = {}
        self.partial, self.every, self.flushed = partial, every, time.monotonic()

    def flush(self, force: bool = False) -> None:
        if self.partial is None or not (force or time.monotonic() - self.flushed >= self.every):
            return
        self.flushed = time.monotonic()
        tmp = self.partial.with_suffix(".tmp")
        tmp.write_text(json.dumps({"timers": self.rows, "vm_hwm": proc_status().get("VmHWM"), "partial": True}))
        tmp.replace(self.partial)

    def wrap(self, owner: Any, attr: str, name: str | None = None,
             values: Callable[..., int] | None = None) -> None:
        """Replace ``owner.attr`` by a timed call; ``values(*args, **kwargs)`` counts the values it handles.

        A bound method of ``owner`` is held by a weak reference: a closure holding ``owner`` and set on it would be a
        reference cycle, so each wrapped object (every chunk's accumulator in the coordinator) would outlive its last
        use until Python's cyclic collector ran. It did: at d_k 8,192 the coordinator held about 120 dropped running
        sums beside its window of 30, and the bench reported 300-350 MB for a process whose sessions hold far less."""
        key = name or attr
        method, strong = self._held(getattr(owner, attr), owner)

        def timed(*args: Any, **kwargs: Any) -> Any:
            fn = strong if method is None else method()
            assert fn is not None, "a timed method outlived its object"
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                row = self.rows.setdefault(key, {"calls": 0, "wall_s": 0.0, "cpu_s": 0.0, "values": 0})
                row["calls"] += 1
                row["wall_s"] += time.perf_counter() - wall
                row["cpu_s"] += time.thread_time() - cpu
                if values is not None:
                    row["values"] += values(*args, **kwargs)
                self.flush()

        setattr(owner, attr, timed)

    @staticmethod
    def _held(fn: Callable[..., Any], owner: Any) -> tuple[weakref.WeakMethod | None, Callable[..., Any] | None]:
        """(a weak reference to ``fn``, None) when it is a bound method of ``owner``, else (None, ``fn``)."""
        if getattr(fn, "__self__", None) is owner:
            return weakref.WeakMethod(fn), None  # type: ignore[arg-type]
        return None, fn


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process from the OS (bytes)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _ready_then_wait(ready: Path, go: Path, timeout: float = 3600.0) -> int:
    rss = proc_status().get("VmRSS", 0)
    ready.write_text(json.dumps({"pid": os.getpid(), "rss": rss}))
    deadline = time.monotonic() + timeout
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("realsize_role: no go signal")
        time.sleep(0.05)
    return rss


def _party(args: argparse.Namespace, cfg: Any, timers: Timers) -> dict[str, Any]:
    import parties.client as client
    from parties.runner import PartyEngine, run_party_session
    from secure_collab.bench.realsize import synthetic_statistics
    from secure_collab.protection import get_scheme

    s = cfg.session
    held: dict[str, Any] = synthetic_statistics(s.d_k, s.d_v, args.rank, args.seed)  # full float64, before the session
    sizes = {"full_bytes": int(held["G"].nbytes + held["B"].nbytes),
             "packed_bytes": int(8 * (s.n_values("G") + s.n_values("B")))}
    rss_ready = _ready_then_wait(args.ready, args.go)

    def hand_over(round_: int, layer: int) -> dict[str, Any]:
        stats = dict(held)  # the runtime keeps them (packed) until the release: this engine keeps no copy
        held.clear()
        if not stats:
            raise RuntimeError("statistics asked for twice")
        return stats

    digests: list[str] = []

    def apply(layer: int, delta: np.ndarray) -> None:  # the bench has no model: remember what arrived
        import hashlib

        digests.append(hashlib.sha256(np.ascontiguousarray(delta).tobytes()).hexdigest())

    scheme = get_scheme(s.mode)
    timers.wrap(scheme, "protect", values=lambda values, *a, **k: int(np.asarray(values).size))
    timers.wrap(client, "pack_statistics", "pack")
    timers.wrap(client, "plausibility_problems", "check")
    report = run_party_session(cfg, args.name, scheme, PartyEngine(hand_over, apply))
    return {"ok": bool(report["ok"]), "reason": report["reason"], "bytes_sent": report["bytes_sent"],
            "bytes_received": report["bytes_received"], "seconds": report["seconds"],
            "applied": report["applied"], "delta_sha256": digests, "statistics": sizes, "rss_ready": rss_ready}


def _coordinator(args: argparse.Namespace, cfg: Any, timers: Timers) -> dict[str, Any]:
    from coordinator.server import run_coordinator
    from secure_collab.protection import public_scheme

    scheme = public_scheme(cfg.session.mode)
    make = scheme.accumulator

    def accumulator(public: bytes, n_values: int, ctx: Any) -> Any:
        acc = make(public, n_values, ctx)
        timers.wrap(acc, "add", values=lambda *a, **k: n_values)
        return acc

    scheme.accumulator = accumulator  # type: ignore[method-assign]
    timers.wrap(scheme, "check_signature", "signature")
    rss_ready = _ready_then_wait(args.ready, args.go)
    outcome = run_coordinator(cfg, scheme)
    return {"ok": bool(outcome.ok), "reason": outcome.reason, "rss_ready": rss_ready,
            "releases": {f"{r}/{lay}": sha for (r, lay), sha in outcome.releases.items()}}


def _solver(args: argparse.Namespace, cfg: Any, timers: Timers) -> dict[str, Any]:
    import torch

    import solver.server as server
    from secure_collab.bench.realsize import LAMBDA, synthetic_covariance
    from secure_collab.editing.solve import solve_update
    from secure_collab.protection import get_scheme

    torch.set_num_threads(1)
    s = cfg.session
    cov = torch.from_numpy(synthetic_covariance(s.d_k))  # (d_k, d_k) dense, as a solver holds C per layer
    kept: dict[str, Any] = {}

    def solve(round_: int, layer: int, g_sum: np.ndarray, b_sum: np.ndarray,
              past_g: np.ndarray | None = None) -> np.ndarray:
        delta = solve_update(torch.from_numpy(b_sum), torch.from_numpy(g_sum), cov, LAMBDA).numpy()  # (d_v, d_k)
        if args.keep_delta is not None:
            np.save(args.keep_delta, delta)
        kept["delta_norm"] = float(np.linalg.norm(delta))
        return delta

    scheme = get_scheme(s.mode)
    timers.wrap(scheme, "open", values=lambda payload, keys, ctx, auth: int(ctx_values(s, ctx)))
    timers.wrap(scheme, "authenticate")
    timers.wrap(server, "plausibility_problems", "check")
    solve_timed = _timed_callable(timers, "solve", solve)
    rss_ready = _ready_then_wait(args.ready, args.go)
    result = server.run_solver(cfg, scheme, solve_timed)
    return {"ok": bool(result.ok), "reason": result.reason, "rss_ready": rss_ready,
            "releases": sorted(f"{r}/{lay}" for r, lay in result.releases), **kept}


def _solve_only(args: argparse.Namespace, cfg: Any, timers: Timers) -> dict[str, Any]:
    """The solver's work after opening, alone: the plausibility check of a sum of ``parties`` synthetic parties'
    statistics and the float64 solve against a dense C (no session, no sockets)."""
    import torch

    from secure_collab.bench.realsize import LAMBDA, synthetic_covariance, synthetic_statistics
    from secure_collab.editing.solve import solve_update
    from secure_collab.protocol.plausibility import Bounds, plausibility_problems

    torch.set_num_threads(1)
    s = cfg.session
    cov = torch.from_numpy(synthetic_covariance(s.d_k))  # (d_k, d_k)
    total = synthetic_statistics(s.d_k, s.d_v, args.rank * args.parties, args.seed)  # one sum of P·N edits
    rss_ready = _ready_then_wait(args.ready, args.go)
    check = _timed_callable(timers, "check", plausibility_problems)
    solve = _timed_callable(timers, "solve", solve_update)
    problems = check(total["G"], total["B"], float(total["N"]), args.parties,
                     Bounds(s.key_norm_bound, s.residual_norm_bound, s.max_edits_per_party))
    delta = solve(torch.from_numpy(total["B"]), torch.from_numpy(total["G"]), cov, LAMBDA)
    timers.flush(force=True)
    return {"ok": not problems, "reason": "; ".join(map(str, problems)), "rss_ready": rss_ready,
            "delta_norm": float(torch.linalg.norm(delta))}


def ctx_values(session: Any, ctx: Any) -> int:
    """Values in the aggregate chunk a StatContext names."""
    total = session.n_values(ctx.statistic)
    return min(session.chunk_values, total - ctx.chunk * session.chunk_values)


def _timed_callable(timers: Timers, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    holder = type("Holder", (), {name: staticmethod(fn)})
    timers.wrap(holder, name)
    return getattr(holder, name)  # type: ignore[no-any-return]


ROLES = {"party": _party, "coordinator": _coordinator, "solver": _solver, "solve-only": _solve_only}


def main(argv: list[str] | None = None) -> int:
    from secure_collab.config import load_config

    p = argparse.ArgumentParser(prog="realsize_role", description=__doc__.splitlines()[0])
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--name", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--parties", type=int, default=3, help="solve-only: the parties in the sum")
    p.add_argument("--ready", type=Path, required=True)
    p.add_argument("--go", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--keep-delta", type=Path, default=None, help="solver: write the released ΔW here (tests)")
    args = p.parse_args(argv)  # one math thread: the driver sets OMP_NUM_THREADS and the like in our environment
    cfg = load_config(args.config)
    timers = Timers(args.out.with_suffix(".partial.json"))
    started = time.perf_counter()
    body = ROLES[args.role](args, cfg, timers)
    status = proc_status()
    args.out.write_text(json.dumps({"role": args.role, "name": args.name, **body, "timers": timers.rows,
                                    "role_seconds": time.perf_counter() - started,
                                    "vm_hwm": status.get("VmHWM"), "vm_rss_end": status.get("VmRSS")}))
    return 0 if body["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
