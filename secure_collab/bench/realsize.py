"""(h) Real-size sessions: the real roles over CurveZMQ on loopback with synthetic statistics of a 7-8B model's shapes.

One row is one session of one edited layer: a solver, a coordinator and P parties, each its own process
(``realsize_role``), one math thread each, with d_k and d_v of a real model (Llama-3-8B: 14,336 / 4,096; GPT-J:
16,384 / 4,096). Each party holds its full float64 statistics before the session starts: G = K Kᵀ of rank N (unit
keys K, d_k × N) and B = R Kᵀ (unit residuals R, d_v × N), seeded per party; no model is loaded and nothing is
computed on request. The solver solves with ``solve_update`` against a dense synthetic C (a decaying diagonal,
held as a dense (d_k, d_k) float64 matrix, as a solver holds C). The session is the path as it is (issue 22 item 1,
streaming, is not built): a party packs and keeps its statistics, the coordinator keeps one running sum per
statistic, the solver receives, opens and checks whole statistics and releases ΔW as one message.

Measured per row: wall time from the go signal (every role ready) to the last role ended; bytes each party sent and
received; each role's peak resident memory from the OS (VmHWM of /proc/<pid>/status: read by the role at its end,
and by the driver while it runs, which also samples VmRSS); protect, add and open seconds per
million values (this thread's CPU time and wall time inside those calls), the plausibility checks (party and
solver: an eigendecomposition of the whole G) and the float64 solve.

Memory guard: the driver reads the machine's used memory (MemTotal − MemAvailable) while a row runs and kills the
row's processes when it passes ``memory_limit`` (the row is then recorded as stopped, with what was measured). A
row whose parties' statistics alone (P × full float64 G and B, all held at once) do not fit beside what the machine
already uses is not started, and says so.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from secure_collab.protection import triangle_size

LAMBDA = 1.0  # λ of the synthetic solve: λC + ΣG with C's spectrum in [1e-3, 1] is positive definite
ROLE_MODULE = "secure_collab.bench.realsize_role"
SHAPES = {14336: "Llama-3-8B", 16384: "GPT-J 6B", 1536: "SmolLM2-135M", 6400: "GPT-2 XL", 28672: "Llama-3-70B"}


def synthetic_statistics(d_k: int, d_v: int, rank: int, seed: int) -> dict[str, Any]:
    """One party's {"G": (d_k, d_k), "B": (d_v, d_k), "N": rank} float64: G = K Kᵀ, B = R Kᵀ with unit-norm random
    keys and residuals (so |G_ij|, |B_ij| ≤ N, tr G = N, ‖B‖_F ≤ N: inside bounds of 2N, 2 and 2)."""
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((d_k, rank))  # (d_k, N)
    k /= np.linalg.norm(k, axis=0)
    r = rng.standard_normal((d_v, rank))  # (d_v, N)
    r /= np.linalg.norm(r, axis=0)
    return {"G": k @ k.T, "B": r @ k.T, "N": rank}


def synthetic_covariance(d_k: int) -> np.ndarray:
    """A dense (d_k, d_k) float64 C with a decaying spectrum (1 to 1e-3): the memory and the factorisation of a
    real C, without a model or a corpus."""
    return np.diag(np.geomspace(1.0, 1e-3, d_k))


def values_per_party(d_k: int, d_v: int) -> int:
    """Values one party sends for one layer: the upper triangle of G, all of B and the count N."""
    return triangle_size(d_k) + d_v * d_k + 1


def full_statistics_bytes(d_k: int, d_v: int) -> int:
    """float64 bytes of one party's statistics as its engine holds them: full G and B."""
    return 8 * (d_k * d_k + d_v * d_k)


def machine_memory() -> tuple[int, int]:
    """(total, used) bytes of this machine: used = MemTotal − MemAvailable."""
    info: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    return info["MemTotal"], info["MemTotal"] - info["MemAvailable"]


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a live process (bytes; empty once it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def write_session(work: Path, d_k: int, d_v: int, parties: int, mode: str, rank: int, *, precision_bits: int,
                  in_turn: bool, timeout: float, network: dict[str, Any] | None = None) -> Path:
    """Keys, roster and session.toml for one real-size session of one layer; the config's path."""
    from secure_collab.config import write_config
    from secure_collab.keys import init_keys
    from secure_collab.protocol.transport import free_loopback_endpoint

    names = [chr(ord("a") + i) for i in range(parties)]
    init_keys(work / "keys", names)
    endpoint = free_loopback_endpoint()
    session: dict[str, Any] = {
        "id": f"realsize-{secrets.token_hex(4)}", "mode": mode, "layers": [0], "d_k": d_k, "d_v": d_v,
        "min_parties": 2, "value_bound": 2.0 * rank, "key_norm_bound": 2.0, "residual_norm_bound": 2.0,
        "max_edits_per_party": rank, "model": "synthetic", "variant": "sequential", "rounds": 1}
    if mode == "ckks":
        session["protection"] = {"precision_bits": precision_bits}
    # the network's defaults (64 MiB messages, a 64 MiB coordinator window): statistics stream in chunks and a
    # release larger than one message travels in RELEASE_PARTs (docs/network.md "Streaming"), as in a real session
    network = {"coordinator_bind": endpoint, "coordinator_endpoint": endpoint, "join_timeout_s": timeout,
               "stage_timeout_s": timeout, "solve_timeout_s": timeout, "request_in_turn": in_turn, **(network or {})}
    paths = {"keys": "keys", "roster": "keys/roster.toml", "ledger": "coordinator/ledger.sqlite",
             "solver_state": "solver-state"}
    path = work / "session.toml"
    write_config(path, session, network, paths)
    return path


class _Roles:
    """The role processes of one row: start, wait for ready, watch memory, reap with their rusage."""

    def __init__(self, work: Path, logs: Path, memory_limit: int) -> None:
        self.work, self.logs, self.limit = work, logs, memory_limit
        self.procs: dict[str, subprocess.Popen] = {}
        self.codes: dict[str, int] = {}
        self.hwm: dict[str, int] = {}  # the last VmHWM read while it ran (its peak until then), bytes
        self.sampled: dict[str, int] = {}  # the largest VmRSS seen while it ran
        self.used_max = 0
        self.stopped: str | None = None

    def start(self, role: str, argv: list[str]) -> None:
        root = str(Path(__file__).resolve().parents[2])  # this checkout, also in the children
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
        with open(self.logs / f"{role}.log", "w") as log:
            self.procs[role] = subprocess.Popen(
                [sys.executable, "-m", ROLE_MODULE, argv[0], *argv[1:]], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=self.work)

    def poll(self) -> None:
        """Reap exited roles, read the live ones' VmRSS and VmHWM, stop all past the memory limit.

        Not ``ru_maxrss`` from wait4: Linux carries the parent's RSS at fork into the child's maxrss across exec,
        so a child of a large driver (one that loaded torch) would report at least the driver's size."""
        for role, p in self.procs.items():
            if role in self.codes:
                continue
            st = _status(p.pid)
            pid, status = os.waitpid(p.pid, os.WNOHANG)
            if pid:
                self.codes[role] = os.waitstatus_to_exitcode(status)
                p.returncode = self.codes[role]
            if st:
                self.hwm[role] = max(self.hwm.get(role, 0), st.get("VmHWM", 0))
                self.sampled[role] = max(self.sampled.get(role, 0), st.get("VmRSS", 0))
        _, used = machine_memory()
        self.used_max = max(self.used_max, used)
        if used > self.limit and self.stopped is None:
            self.kill(f"stopped: the machine used {used / 2**30:.1f} GiB, over the limit of "
                      f"{self.limit / 2**30:.1f} GiB")

    def kill(self, reason: str) -> None:
        self.stopped = reason
        for role, p in self.procs.items():
            if role not in self.codes:
                p.kill()

    def peak(self, role: str, out: dict[str, Any] | None) -> int | None:
        """A role's peak resident memory: the VmHWM it read at its end (or last wrote before it was stopped), or
        the last one read here while it ran, whichever is larger."""
        got = [x for x in ((out or {}).get("vm_hwm"), self.hwm.get(role)) if x]
        return max(got) if got else None

    @property
    def running(self) -> bool:
        return len(self.codes) < len(self.procs)


def run_row(d_k: int, d_v: int, parties: int, mode: str, rank: int, work: Path, logs: Path, *,
            memory_limit: int, timeout: float, precision_bits: int = 48, in_turn: bool = True,
            keep_delta: Path | None = None, network: dict[str, Any] | None = None) -> dict[str, Any]:
    """One real-size session (see the module doc); its figures. ``network``: settings of the session's [network]
    table over the bench's own."""
    cfg_path = write_session(work, d_k, d_v, parties, mode, rank, precision_bits=precision_bits, in_turn=in_turn,
                             timeout=timeout, network=network)
    logs.mkdir(parents=True, exist_ok=True)
    names = [chr(ord("a") + i) for i in range(parties)]
    go = work / "go"
    roles = _Roles(work, logs, memory_limit)
    _, used_before = machine_memory()
    common = ["--config", str(cfg_path), "--go", str(go), "--rank", str(rank)]
    t_start = time.perf_counter()
    for i, name in enumerate(names):
        roles.start(f"party-{name}", ["party", *common, "--name", name, "--seed", str(1000 + i),
                                      "--ready", str(work / f"ready-party-{name}"),
                                      "--out", str(work / f"party-{name}.json")])
    for role in ("coordinator", "solver"):
        extra = ["--keep-delta", str(keep_delta)] if role == "solver" and keep_delta else []
        roles.start(role, [role, *common, "--ready", str(work / f"ready-{role}"),
                           "--out", str(work / f"{role}.json"), *extra])
    deadline = time.monotonic() + timeout
    while roles.running and not all((work / f"ready-{r}").exists() for r in roles.procs):
        roles.poll()
        if roles.codes and roles.stopped is None:
            roles.kill(f"a role ended before the session started: {roles.codes}")
        if time.monotonic() > deadline and roles.stopped is None:
            roles.kill(f"stopped: not ready after {timeout:.0f} s")
        time.sleep(0.1)
    t_ready = time.perf_counter()
    go.touch()
    t_go = time.perf_counter()
    while roles.running:
        roles.poll()
        if time.monotonic() > deadline and roles.stopped is None:
            roles.kill(f"stopped: the row ran past {timeout:.0f} s")
        time.sleep(0.25)
    wall = time.perf_counter() - t_go
    outs = {role: _read(work / f"{role}.json") for role in roles.procs}
    row = summarise_row(d_k, d_v, parties, mode, rank, roles, outs, wall, t_ready - t_start, used_before)
    from secure_collab.config import load_config

    net = load_config(cfg_path).network
    row["network"] = {k: getattr(net, k) for k in ("max_message_bytes", "recv_buffer_bytes", "request_in_turn",
                                                   "send_timeout_s", "hwm")}
    return row


def run_solve_row(d_k: int, d_v: int, parties: int, rank: int, work: Path, logs: Path, *, memory_limit: int,
                  timeout: float) -> dict[str, Any]:
    """The solver's work after opening, in a process of its own (``realsize_role solve-only``): the plausibility
    check of one sum of ``parties`` parties' statistics and the float64 solve; seconds and peak memory."""
    cfg_path = write_session(work, d_k, d_v, parties, "plain", rank, precision_bits=48, in_turn=True,
                             timeout=timeout)
    logs.mkdir(parents=True, exist_ok=True)
    roles = _Roles(work, logs, memory_limit)
    go = work / "go"
    roles.start("solve-only", ["solve-only", "--config", str(cfg_path), "--go", str(go), "--rank", str(rank),
                               "--parties", str(parties), "--ready", str(work / "ready"),
                               "--out", str(work / "solve-only.json")])
    deadline = time.monotonic() + timeout
    while roles.running and not (work / "ready").exists():
        roles.poll()
        time.sleep(0.1)
    go.touch()
    while roles.running:
        roles.poll()
        if time.monotonic() > deadline and roles.stopped is None:
            roles.kill(f"stopped: ran past {timeout:.0f} s")
        time.sleep(0.25)
    out = _read(work / "solve-only.json") or {}
    timers = out.get("timers", {})
    return {"d_k": d_k, "d_v": d_v, "shape": SHAPES.get(d_k, "synthetic"), "parties": parties, "rank": rank,
            "ok": bool(out.get("ok")) and roles.stopped is None, "stopped": roles.stopped,
            "check_seconds": (timers.get("check") or {}).get("wall_s"),
            "solve_seconds": (timers.get("solve") or {}).get("wall_s"),
            "check_cpu_seconds": (timers.get("check") or {}).get("cpu_s"),
            "solve_cpu_seconds": (timers.get("solve") or {}).get("cpu_s"),
            "peak_rss_bytes": roles.peak("solve-only", out), "rss_ready_bytes": out.get("rss_ready"),
            "machine_used_max_bytes": roles.used_max}


def _read(path: Path) -> dict[str, Any] | None:
    """A role's result, or what it had measured when it was stopped (its partial file), or None."""
    for candidate in (path, path.with_suffix(".partial.json")):
        try:
            return dict(json.loads(candidate.read_text()))
        except (OSError, ValueError):
            continue
    return None


def _per_mvalue(rows: list[dict[str, Any] | None], name: str, values: int | None = None) -> dict[str, Any] | None:
    """Seconds per million values in the calls ``name`` of each role in ``rows`` (CPU and wall): the median over the
    roles, with the spread. ``values``: the count to divide by (default: what the timer counted)."""
    cpu, wall = [], []
    for r in rows:
        t = (r or {}).get("timers", {}).get(name)
        n = values if values is not None else (t or {}).get("values", 0)
        if t and n:
            cpu.append(t["cpu_s"] / (n / 1e6))
            wall.append(t["wall_s"] / (n / 1e6))
    if not cpu:
        return None
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall), "cpu_max": max(cpu),
            "wall_max": max(wall), "n": len(cpu)}


def _seconds(rows: list[dict[str, Any] | None], name: str) -> dict[str, Any] | None:
    """Wall and CPU seconds in the calls ``name``: the median over the roles, and the largest."""
    got = [(r or {}).get("timers", {}).get(name) for r in rows]
    got = [t for t in got if t]
    if not got:
        return None
    return {"wall": statistics.median(t["wall_s"] for t in got), "cpu": statistics.median(t["cpu_s"] for t in got),
            "wall_max": max(t["wall_s"] for t in got), "calls": got[0]["calls"], "n": len(got)}


def summarise_row(d_k: int, d_v: int, parties: int, mode: str, rank: int, roles: _Roles,
                  outs: dict[str, dict[str, Any] | None], wall: float, ready_seconds: float,
                  used_before: int) -> dict[str, Any]:
    """The figures of one row from what each role wrote and what the OS said about it."""
    party_outs = [o for role, o in outs.items() if role.startswith("party-")]
    coord, solver = outs.get("coordinator"), outs.get("solver")
    n_values = values_per_party(d_k, d_v)
    sent = [o["bytes_sent"] for o in party_outs if o and "bytes_sent" in o]
    received = [o["bytes_received"] for o in party_outs if o and "bytes_received" in o]
    deltas = {d for o in party_outs if o for d in o.get("delta_sha256", [])}
    complete = all(o is not None and not o.get("partial") for o in outs.values())
    ok = (roles.stopped is None and complete and all(c == 0 for c in roles.codes.values())
          and all(bool(o and o.get("ok")) for o in outs.values()))
    role_rows = {role: {"exit": roles.codes.get(role), "peak_rss_bytes": roles.peak(role, outs[role]),
                        "vm_hwm_bytes": (outs[role] or {}).get("vm_hwm"),
                        "rss_ready_bytes": (outs[role] or {}).get("rss_ready"),
                        "sampled_max_rss_bytes": roles.sampled.get(role),
                        "timers": (outs[role] or {}).get("timers")} for role in roles.procs}
    party_peaks = [r["peak_rss_bytes"] for role, r in role_rows.items() if role.startswith("party-")
                   and r["peak_rss_bytes"] is not None]
    own = {"full_bytes": full_statistics_bytes(d_k, d_v), "packed_bytes": 8 * (n_values - 1)}
    stats_bytes = next((o["statistics"] for o in party_outs if o and "statistics" in o), own)
    return {
        "d_k": d_k, "d_v": d_v, "shape": SHAPES.get(d_k, "synthetic"), "parties": parties, "mode": mode,
        "rank": rank, "layers": 1, "values_per_party": n_values, "ok": ok, "stopped": roles.stopped,
        "wall_seconds": wall, "ready_seconds": ready_seconds,
        "bytes_sent_per_party": max(sent) if sent else None,
        "bytes_received_per_party": max(received) if received else None,
        "bytes_per_value": max(sent) / n_values if sent else None,
        "coordinator_peak_bytes": role_rows.get("coordinator", {}).get("peak_rss_bytes"),
        "solver_peak_bytes": role_rows.get("solver", {}).get("peak_rss_bytes"),
        "party_peak_bytes": max(party_peaks) if party_peaks else None,
        "party_statistics_bytes": stats_bytes,
        "protect_seconds_per_mvalue": _per_mvalue(party_outs, "protect"),
        "add_seconds_per_mvalue": _per_mvalue([coord], "add", parties * n_values if coord else None),
        "open_seconds_per_mvalue": _per_mvalue([solver], "open"),
        "party_check_seconds": _seconds(party_outs, "check"), "party_pack_seconds": _seconds(party_outs, "pack"),
        "coordinator_signature_seconds": _seconds([coord], "signature"),
        "solver_authenticate_seconds": _seconds([solver], "authenticate"),
        "solver_check_seconds": _seconds([solver], "check"), "solve_seconds": _seconds([solver], "solve"),
        "identical_deltas": len(deltas) == 1 and all(o and len(o.get("delta_sha256", [])) == 1 for o in party_outs),
        "machine_used_before_bytes": used_before, "machine_used_max_bytes": roles.used_max,
        "roles": role_rows,
    }


def row_key(d_k: int, d_v: int, parties: int, mode: str, rank: int, precision_bits: int, in_turn: bool) -> str:
    bits = f"-b{precision_bits}" if mode == "ckks" else ""
    return f"dk{d_k}-dv{d_v}-p{parties}-{mode}-n{rank}{bits}{'' if in_turn else '-together'}"


def bench_realsize(d_ks: tuple[int, ...], d_v: int, party_counts: tuple[int, ...], modes: tuple[str, ...], rank: int,
                   out: Path, *, memory_limit: int, timeout: float, precision_bits: int = 48, in_turn: bool = True,
                   fresh: bool = False, solve: bool = True,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """With ``solve``, first the solver's check and solve alone at each (d_k, parties) (``run_solve_row``); then
    every (d_k, parties, mode) row in turn, each kept in ``out/rows`` as it finishes (read back unless
    ``fresh``); a row that cannot fit is recorded as not run, with why."""
    import tempfile

    say = progress or (lambda _m: None)
    out = out.resolve()  # the roles run in their own working directories: every path handed to them is absolute
    (out / "rows").mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    solves: dict[str, Any] = {}
    for d_k in d_ks if solve else ():
        for p in party_counts:
            key = f"solve-dk{d_k}-dv{d_v}-p{p}-n{rank}"
            path = out / "rows" / f"{key}.json"
            if path.is_file() and not fresh:
                solves[key] = json.loads(path.read_text())
                continue
            say(f"realsize: {key}: measuring the solver's check and solve alone")
            with tempfile.TemporaryDirectory(prefix=f"realsize-{key}-", dir=out) as tmp:
                solves[key] = run_solve_row(d_k, d_v, p, rank, Path(tmp), out / "logs" / key,
                                            memory_limit=memory_limit, timeout=timeout)
            path.write_text(json.dumps(solves[key], indent=1) + "\n")
    for d_k in d_ks:
        for p in party_counts:
            for mode in modes:
                key = row_key(d_k, d_v, p, mode, rank, precision_bits, in_turn)
                path = out / "rows" / f"{key}.json"
                if path.is_file() and not fresh:
                    say(f"realsize: {key}: kept from {path}")
                    rows[key] = json.loads(path.read_text())
                    continue
                _, used = machine_memory()
                own = full_statistics_bytes(d_k, d_v)
                if used + p * own > memory_limit:
                    rows[key] = {"d_k": d_k, "d_v": d_v, "shape": SHAPES.get(d_k, "synthetic"), "parties": p,
                                 "mode": mode, "rank": rank, "ok": False,
                                 "not_run": f"the parties' statistics alone ({p} × {own / 1e9:.2f} GB, held at once) "
                                            f"and the {used / 2**30:.1f} GiB already in use pass the "
                                            f"{memory_limit / 2**30:.1f} GiB limit"}
                    say(f"realsize: {key}: not run ({rows[key]['not_run']})")
                    continue
                say(f"realsize: {key}: measuring")
                with tempfile.TemporaryDirectory(prefix=f"realsize-{key}-", dir=out) as tmp:
                    row = run_row(d_k, d_v, p, mode, rank, Path(tmp), out / "logs" / key, memory_limit=memory_limit,
                                  timeout=timeout, precision_bits=precision_bits, in_turn=in_turn)
                row["precision_bits"] = precision_bits if mode == "ckks" else None
                row["in_turn"] = in_turn
                rows[key] = row
                path.write_text(json.dumps(row, indent=1) + "\n")
                say(f"realsize: {key}: {'ok' if row['ok'] else row['stopped'] or 'FAILED'}, "
                    f"{row['wall_seconds']:.0f} s")
    return {"rows": rows, "solves": solves, "memory_limit_bytes": memory_limit, "timeout_s": timeout}
