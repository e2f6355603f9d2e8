"""The coordinator under a long fuzz and under floods, as a separate process: rates, memory, ledger growth.

    PYTHONPATH=. .venv/bin/python benchmarks/fuzz_coordinator.py --json benchmarks/results/fuzz_coordinator.json

Scenarios (each a real session over CurveZMQ on loopback; solver and honest parties a and b run in this
process, the coordinator in its own, so its memory can be read from /proc):

- ``parser``: party c fuzzes with ``--messages`` mutated messages from its roster key, with a budget so large
  that it is never cut off (every message is parsed), plus a key not in the roster and raw TCP junk; then c
  takes part honestly. The ΔW must equal the single-process reference.
- ``budget``: the same fuzz under the default budgets: c is cut off and the rest is dropped unread; b holds
  the session open until the fuzz is over, then a and b finish without c.
- ``big``: c sends ``--big`` well-formed 8 MiB messages as fast as it can (max_message_bytes 16 MiB), once
  with the default budgets and once with a budget that never cuts it off (what then bounds the coordinator's
  memory is RCVHWM = recv_buffer_bytes // max_message_bytes complete messages per connection).

Figures per scenario: messages, frames and bytes sent, send rate, the coordinator's resident memory when the
fuzz starts and ends and its peak (VmHWM), ledger rows (and bytes of their text fields) added during the
fuzz, session outcome.
Seeds: development used 1-18 and 20240601 (the test); report on --seed (default 101), not tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NET = ROOT / "tests" / "network"
sys.path[:0] = [str(ROOT), str(NET)]

import numpy as np  # noqa: E402
import zmq  # noqa: E402
from fuzzing import fuzz_roster_key, fuzz_session  # noqa: E402
from network_doubles import (  # noqa: E402
    RawClient,
    SyntheticEngine,
    Threads,
    closed_form_solve,
    make_config,
    reference_deltas,
)

from parties import run_party  # noqa: E402
from secure_collab.ledger import read_ledger  # noqa: E402
from secure_collab.protection import get_scheme  # noqa: E402
from secure_collab.protocol.messages import Message, MsgType  # noqa: E402
from solver.server import run_solver  # noqa: E402


class CoordinatorProcess:
    """tests/network/coordinator_process.py for a config, with its memory and ledger size on demand."""

    def __init__(self, cfg: Any, config_path: Path) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(NET)]), OMP_NUM_THREADS="1")
        self.cfg = cfg
        self.proc = subprocess.Popen([sys.executable, str(NET / "coordinator_process.py"), str(config_path)],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.samples: dict[str, dict[str, int]] = {}

    def memory(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def ledger(self) -> dict[str, int]:
        """Rows of the ledger's message table and the bytes of their variable fields (the WAL file holds
        whole page images per insert, so its size says little about what was stored)."""
        rows = read_ledger(self.cfg.paths.ledger, ("messages",))["messages"]
        text = sum(len(r[k]) for r in rows for k in ("peer", "type", "digest", "outcome", "reason"))
        return {"ledger_rows": len(rows), "ledger_text_bytes": text}

    def sample(self, phase: str) -> None:
        self.samples[phase] = {**self.memory(), **self.ledger()}

    def wait(self, timeout: float = 600) -> Any:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"coordinator failed: {err[-2000:]}")
        doc = json.loads(out)
        return SimpleNamespace(ok=doc["ok"], reason=doc["reason"])


def _config(work: Path, network: dict) -> tuple[Any, Path]:
    cfg = make_config(work, network={"stage_timeout_s": 600.0, "join_timeout_s": 60.0, "solve_timeout_s": 60.0,
                                     "heartbeat_s": 0.2, **network})
    return cfg, next(work.glob("config-*.toml"))


def _figures(stats: Any, seconds: float, coord: CoordinatorProcess, outcome: Any) -> dict[str, Any]:
    start, end = coord.samples["start"], coord.samples["end"]
    return {
        "messages": stats.messages, "frames": stats.frames, "bytes": stats.nbytes,
        "seconds": round(seconds, 3), "messages_per_s": round(stats.messages / seconds, 1),
        "coordinator_rss_mb_start": round(start["VmRSS"] / 2**20, 1),
        "coordinator_rss_mb_end": round(end["VmRSS"] / 2**20, 1),
        "coordinator_peak_rss_mb": round(end["VmHWM"] / 2**20, 1),
        "ledger_rows_added": end["ledger_rows"] - start["ledger_rows"],
        "ledger_text_bytes_added": end["ledger_text_bytes"] - start["ledger_text_bytes"],
        "session_ok": outcome.ok, "session_reason": outcome.reason,
    }


def parser_scenario(work: Path, messages: int, seed: int) -> dict[str, Any]:
    cfg, path = _config(work, {"budget_headroom": 1e6, "connects_per_minute": 60000.0, "welcome_interval_s": 0.2})
    coord = CoordinatorProcess(cfg, path)
    report = fuzz_session(cfg, count=messages, unknown=messages // 10, tcp=500, seed=seed, time_limit=1800.0,
                          coordinator=coord.wait, on_fuzz=coord.sample)
    ref = reference_deltas(cfg, ["a", "b", "c"])
    error = max(float(np.max(np.abs(report.solver.releases[k] - v))) for k, v in ref.items())
    return {**_figures(report.roster_key, report.fuzz_seconds, coord, report.outcome),
            "by_mutation": report.roster_key.by_kind,
            "unknown_key": {"messages": report.unknown_key.messages, "bytes": report.unknown_key.nbytes},
            "raw_tcp": {"connections": report.raw_tcp.messages, "bytes": report.raw_tcp.nbytes},
            "delta_max_abs_error_vs_reference": error, "parties_ok": all(p.ok for p in report.parties.values())}


def _held_session(cfg: Any, coord: CoordinatorProcess, attack: Any) -> tuple[Any, Any]:
    """a and b honest (b's layer 2 waits until ``attack`` returns); c is ``attack``. Returns (outcome, attack
    result)."""
    scheme, th, gate = get_scheme(cfg.session.mode), Threads(), threading.Event()
    a, b = SyntheticEngine("a", cfg), SyntheticEngine("b", cfg)
    b_compute = b.compute_statistics

    def gated(round_: int, layer: int) -> Any:
        if layer == 2:
            gate.wait(1800)
        return b_compute(round_, layer)

    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
    th.start("coordinator", coord.wait)
    th.start("a", lambda: run_party(cfg, "a", scheme, a.compute_statistics, a.apply_delta))
    th.start("b", lambda: run_party(cfg, "b", scheme, gated, b.apply_delta))

    def attacker() -> Any:
        try:
            ctx = zmq.Context()
            client = RawClient(cfg, "c", ctx)  # joins, so the first step has started when the attack begins
            client.send(Message(MsgType.HELLO, cfg.session.id, sender="c", seq=1, config=cfg.digest,
                                body={"role": "party", "public": False}).to_frames())
            client.recv(MsgType.REQUEST)
            client.close()
            ctx.term()
            coord.sample("start")
            result = attack()
            time.sleep(1.0)  # let the coordinator drain what is queued
            coord.sample("end")
            return result
        finally:
            gate.set()

    th.start("c", attacker)
    th.join(3600)
    return th.results["coordinator"], th.results["c"]


def budget_scenario(work: Path, messages: int, seed: int) -> dict[str, Any]:
    cfg, path = _config(work, {})  # b's gate holds layer 2 open: the stage timeout must outlast the attack
    coord = CoordinatorProcess(cfg, path)
    t0: dict[str, float] = {}

    def attack() -> Any:
        t0["t"] = time.monotonic()
        stats = fuzz_roster_key(cfg, "c", seed, messages, time.monotonic() + 1800, reconnect_every=10**9)
        t0["seconds"] = time.monotonic() - t0["t"]
        return stats

    outcome, stats = _held_session(cfg, coord, attack)
    return {**_figures(stats, t0["seconds"], coord, outcome), "cut_off": _cut_off_rows(cfg)}


def _cut_off_rows(cfg: Any) -> list[str]:
    return [f"{r['peer']}: {r['reason']}" for r in read_ledger(cfg.paths.ledger, ("messages",))["messages"]
            if r["outcome"] in ("cut off", "dropped")]


def big_scenario(work: Path, count: int, headroom: float) -> dict[str, Any]:
    size = 8 << 20
    # without a budget c is not cut off: the first step waits stage_timeout_s for it, which must outlast the
    # attack (b's gate holds layer 2 open until then)
    cfg, path = _config(work, {"max_message_bytes": 16 << 20, "budget_headroom": headroom, "stage_timeout_s": 30.0})
    coord = CoordinatorProcess(cfg, path)
    t0: dict[str, float] = {}

    def attack() -> Any:
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx)
        blob = os.urandom(size)  # the same buffer each time, sent zero-copy: the sender needs no memory
        stats = SimpleNamespace(messages=0, frames=0, nbytes=0)
        t0["t"] = time.monotonic()
        try:
            for _ in range(count):
                msg = client.msg(MsgType.ERROR, body={"refused_seq": 1, "reason": "x"}, frames=(blob,))
                try:
                    client.sock.send_multipart(msg.to_frames(), copy=False)
                except zmq.Again:
                    break
                stats.messages += 1
                stats.frames += 2
                stats.nbytes += size
        finally:
            t0["seconds"] = time.monotonic() - t0["t"]
            client.close()
            ctx.term()
        return stats

    outcome, stats = _held_session(cfg, coord, attack)
    return {**_figures(stats, t0["seconds"], coord, outcome), "cut_off": _cut_off_rows(cfg), "message_bytes": size,
            "rcvhwm": cfg.network.recv_buffer_bytes // cfg.network.max_message_bytes,
            "budget_headroom": headroom}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000, help="fuzzed messages from the roster key")
    p.add_argument("--big", type=int, default=120, help="8 MiB messages in the 'big' scenario")
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--scenarios", default="parser,budget,big")
    p.add_argument("--json", default=None, metavar="OUT", help="write the figures as JSON ('-' for stdout)")
    args = p.parse_args()
    results: dict[str, Any] = {"seed": args.seed, "python": sys.version.split()[0], "zmq": zmq.zmq_version()}
    with tempfile.TemporaryDirectory(prefix="fuzz-coordinator-") as tmp:
        for name in args.scenarios.split(","):
            print(f"scenario {name} ...", file=sys.stderr, flush=True)
            work = Path(tmp) / name
            if name == "parser":
                results[name] = parser_scenario(work, args.messages, args.seed)
            elif name == "budget":
                results[name] = budget_scenario(work, args.messages, args.seed)
            elif name == "big":
                results["big_default_budget"] = big_scenario(work / "default", args.big, 4.0)
                results["big_no_budget"] = big_scenario(work / "none", args.big, 1e6)
            print(json.dumps(results.get(name) or results.get("big_no_budget"), indent=1), file=sys.stderr)
    text = json.dumps(results, indent=1)
    if args.json in (None, "-"):
        print(text)
    else:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
