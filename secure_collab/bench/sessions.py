"""(a) Whole sessions in each protection mode: wall time, bytes on the wire per party, ratios to plain.

A session is `secure-collab demo` without its Global-Edit reference: solver, coordinator and parties as separate
processes over CurveZMQ on loopback, one math thread each, parties computing in turn. Its wall time runs from
the first role process started to the last one ended (model loads, the parties' evaluation before and after,
statistics, protection, transport, solve, releases). The targets z* come from the shared target cache, filled
before the first timed session, so every mode is timed on the same work and none pays for the optimisation.

Modes run in turn within each repetition (plain, shares, ckks, then the next repetition in reverse order), and
a ratio is the median over repetitions of (mode / the plain run of the same repetition).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from secure_collab.bench.timing import paired_ratio, summary
from secure_collab.protection import MODES, triangle_size

ORDER = MODES[::-1]  # plain, shares, ckks: the baseline first, then by cost


def run_session(mode: str, parties: int, edits: int, requests: str, model: str, workdir: Path,
                cache: Path | None = None, timeout: float = 3600.0) -> dict[str, Any]:
    """One whole session as `secure-collab demo` runs it (no reference); its JSON result."""
    out = workdir / "result.json"
    argv = [sys.executable, "-m", "secure_collab", "demo", "--mode", mode, "--parties", str(parties),
            "--edits-per-party", str(edits), "--requests", requests, "--model", model, "--no-reference",
            "--threads", "1", "--workdir", str(workdir), "--json", str(out), "--quiet",
            "--timeout", str(timeout)] + (["--cache-dir", str(cache)] if cache else [])
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if not out.is_file():
        raise RuntimeError(f"session {mode}/{parties} wrote no result (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}; logs in {workdir / 'logs'}")
    result = json.loads(out.read_text())
    if not result.get("ok"):
        raise RuntimeError(f"session {mode}/{parties} failed: see {workdir / 'logs'}")
    return result


def values_per_party(d_k: int, d_v: int, layers: int) -> int:
    """Statistic values one party sends per session: the upper triangle of G and all of B, per layer."""
    return layers * (triangle_size(d_k) + d_v * d_k)


def bench_sessions(party_counts: tuple[int, ...], reps: int, edits: int, requests: str, model: str,
                   dims: tuple[int, int, int], cache: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every mode at every party count, ``reps`` interleaved repetitions; ``dims`` = (d_k, d_v, edited layers)."""
    say = progress or (lambda _m: None)
    out: dict[str, Any] = {}
    n_values = values_per_party(*dims)
    for p in party_counts:
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in ORDER}
        for rep in range(reps):
            for mode in (ORDER if rep % 2 == 0 else ORDER[::-1]):
                say(f"sessions: {p} parties, {mode}, repetition {rep + 1}/{reps}")
                with tempfile.TemporaryDirectory(prefix=f"bench-{mode}-p{p}-") as tmp:
                    r = run_session(mode, p, edits, requests, model, Path(tmp), cache)
                sent = [v for v in r["bytes_to_coordinator"].values() if v is not None]
                received = [v for v in (r.get("bytes_from_coordinator") or {}).values() if v is not None]
                runs[mode].append({"seconds": r["session_seconds"], "bytes_sent_per_party": max(sent),
                                   "bytes_received_per_party": max(received) if received else None,
                                   "party_compute_seconds": [q.get("compute_seconds") for q in r["per_party"].values()],
                                   "efficacy": r.get("efficacy"),
                                   "delta_identical": r.get("parties_applied_identical_updates")})
        row: dict[str, Any] = {"parties": p, "edits_per_party": edits, "values_per_party": n_values}
        for mode in ORDER:
            secs = [x["seconds"] for x in runs[mode]]
            row[mode] = {"seconds": summary(secs), "runs": runs[mode],
                         "bytes_sent_per_party": runs[mode][-1]["bytes_sent_per_party"],
                         "bytes_received_per_party": runs[mode][-1]["bytes_received_per_party"],
                         "bytes_per_value": runs[mode][-1]["bytes_sent_per_party"] / n_values}
            if mode != "plain":
                row[f"{mode}_over_plain"] = paired_ratio(secs, [x["seconds"] for x in runs["plain"]])
        out[str(p)] = row
    return out
