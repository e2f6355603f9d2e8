"""The coordinator's view: the bytes it receives, tests of their uniformity, and what sizes and timing reveal.

``coordinator_frames`` is the one place that turns a party's statistics into the multipart messages the
coordinator receives, through the party's own code path: ``pack_statistics``, ``chunk_bounds``,
``get_scheme(mode).protect`` under the public parameters of a real ``solver_setup``, and
``Message.to_frames``. When the protocol changes (signed contributions, integrity tags), only this function
follows it.

Attacks on the bytes:
- the ranking attack of the `gram` view, run on the payload read as if it were the plaintext statistic
  (the words of the payload as signed 64-bit integers, unpacked into a symmetric matrix): its recall is
  compared with chance by an exact one-sided binomial test;
- Pearson's χ² goodness-of-fit test of the payload bytes against the uniform distribution on 0..255 (what
  masked shares must pass; CKKS ciphertexts are serialised polynomials, not uniform bytes, so for them the
  relevant test is the next one);
- Pearson's χ² two-sample homogeneity test of byte histograms: payload of a real statistic vs. payload of the
  all-zero statistic of the same shape under the same public parameters. Indistinguishable payloads give
  p-values spread uniformly on [0, 1].
Metadata: from a finished session's ledger, each party's message sizes and the time between the
coordinator's request and the party's first contribution, against the party's edit count.
"""

from __future__ import annotations

import json
import math
import time
from argparse import Namespace
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_collab.ledger import read_ledger
from secure_collab.protection import ProtectionParams, StatContext, get_scheme
from secure_collab.protocol.messages import MsgType, build
from secure_collab.protocol.statistics import chunk_body, chunk_bounds

SESSION = "attack-wire"
UNIFORMITY = "Pearson chi-square goodness-of-fit, bytes vs uniform(0..255)"
SIZE_TEST = "two-sided permutation test of the mean message size, real vs all-zero statistic"
HOMOGENEITY = "Pearson chi-square two-sample homogeneity, byte histograms (real vs all-zero statistic)"


class ByteTest(TypedDict):
    """A χ² test of payload bytes: its name, statistic, degrees of freedom and p-value (and the bytes tested)."""

    test: str
    statistic: float
    df: int
    p_value: float
    bytes: NotRequired[int]


@dataclass
class WireSession:
    """A real solver setup and the parties' own keys: what it takes to produce exactly a party's messages."""

    scheme: Any
    keys: Any  # SolverKeys: .public and .bundles are what parties and coordinator receive
    signing: dict[str, Ed25519PrivateKey]
    secrets: dict[str, Any]  # each party's opened bundle (MAC and release keys)

    @property
    def public(self) -> bytes:
        return self.keys.public


def solver_public(mode: str, parties: int, bound: float, precision_bits: int = 48) -> WireSession:
    """A real solver_setup for parties "a", "b", ... each with its own long-term keys, and their bundles opened."""
    scheme = get_scheme(mode)
    extra = {"precision_bits": precision_bits} if mode == "ckks" else {}
    names = [chr(ord("a") + i) for i in range(parties)]
    signing = {n: Ed25519PrivateKey.generate() for n in names}
    sealing = {n: X25519PrivateKey.generate() for n in names}
    keys = scheme.solver_setup(ProtectionParams(mode, max_parties=parties, bound=bound,
                                                min_parties=min(2, parties), extra=extra),
                               {n: k.public_key().public_bytes_raw() for n, k in sealing.items()})
    secrets = {n: scheme.join(keys.public, keys.bundles, n, k.private_bytes_raw()) for n, k in sealing.items()}
    return WireSession(scheme, keys, signing, secrets)


def coordinator_frames(ws: WireSession, flat: np.ndarray, stat: str, party: str, layer: int,
                       chunk_values: int = 262144, round_: int = 0, seq0: int = 1) -> list[list[bytes]]:
    """The CONTRIB messages (lists of frames, header first) that carry one packed statistic, as a party sends
    them (parties/client.py ``_send_layer``): protected, tagged and signed with the party's own key."""
    out = []
    bounds = chunk_bounds(flat.size, chunk_values)
    for i, (off, count) in enumerate(bounds):
        ctx = StatContext(SESSION, round_, layer, stat, party, i, 0)
        payload = ws.scheme.protect(flat[off:off + count], ctx, ws.public, ws.secrets[party], ws.signing[party])
        msg = build(MsgType.CONTRIB, session=SESSION, sender=party, seq=seq0 + i, config="0" * 64, round_=round_,
                    layer=layer, stat=stat, body=chunk_body(0, i, bounds, payload.header), frames=payload.frames)
        out.append([bytes(f) for f in msg.to_frames()])
    return out


def payload_bytes(messages: list[list[bytes]]) -> bytes:
    """The payload frames (not the headers) of a list of messages, concatenated."""
    return b"".join(f for m in messages for f in m[1:])


def as_plaintext_gram(raw: bytes, d_k: int) -> torch.Tensor:
    """The attacker's reading of payload bytes as a packed G: little-endian int64 words, first d_k(d_k+1)/2."""
    from secure_collab.protection.encoding import triangle_size, unpack_symmetric

    n = triangle_size(d_k)
    words = np.frombuffer(raw[: (len(raw) // 8) * 8], dtype="<i8").astype(np.float64)
    vec = np.zeros(n)
    vec[: min(n, words.size)] = words[:n]
    return torch.from_numpy(unpack_symmetric(vec, d_k))


def chi2_sf(x: float, df: int) -> float:
    """P[χ²_df ≥ x] (regularised upper incomplete gamma)."""
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(x / 2, dtype=torch.float64)))


def byte_uniformity(raw: bytes) -> ByteTest:
    """Pearson χ² goodness-of-fit of the byte values against uniform on 0..255 (255 degrees of freedom)."""
    counts = np.bincount(np.frombuffer(raw, dtype=np.uint8), minlength=256).astype(np.float64)
    expected = counts.sum() / 256
    stat = float(((counts - expected) ** 2 / expected).sum())
    return {"test": UNIFORMITY, "statistic": stat, "df": 255,
            "p_value": chi2_sf(stat, 255), "bytes": int(counts.sum())}


def byte_homogeneity(a: bytes, b: bytes) -> ByteTest:
    """Pearson χ² two-sample test that two byte strings come from one distribution (histograms of 256 values)."""
    ca = np.bincount(np.frombuffer(a, dtype=np.uint8), minlength=256).astype(np.float64)
    cb = np.bincount(np.frombuffer(b, dtype=np.uint8), minlength=256).astype(np.float64)
    keep = (ca + cb) > 0  # byte values seen in neither string carry no information
    ca, cb = ca[keep], cb[keep]
    tot = ca + cb
    ea, eb = tot * ca.sum() / tot.sum(), tot * cb.sum() / tot.sum()
    stat = float(((ca - ea) ** 2 / ea).sum() + ((cb - eb) ** 2 / eb).sum())
    df = max(1, int(keep.sum()) - 1)
    return {"test": HOMOGENEITY, "statistic": stat, "df": df, "p_value": chi2_sf(stat, df)}


def permutation_p(a: Sequence[float], b: Sequence[float], n: int = 10000, seed: int = 0) -> float:
    """Two-sided permutation p-value of the difference of means (1.0 when both samples are constant)."""
    x = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
    obs = abs(np.mean(a) - np.mean(b))
    if np.ptp(x) == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    k = len(a)
    hits = sum(abs(p[:k].mean() - p[k:].mean()) >= obs - 1e-12 for p in (rng.permutation(x) for _ in range(n)))
    return (hits + 1) / (n + 1)


def wire_rows(exp, modes: Sequence[str], ms: Sequence[int], trials: int, say: Callable[[str], None]) -> list[dict]:
    """Ranking attack on each mode's bytes, byte uniformity and homogeneity tests; one row per (mode, m)."""
    from attacks import metrics, spectral, subspace
    from attacks.runner import draw_trials
    from attacks.views import gram_view
    from secure_collab.protection.encoding import pack_symmetric, triangle_size

    d_k = exp.cand_keys.shape[1]
    rows = []
    for mode in modes:
        ws = solver_public(mode, parties=10, bound=1e6)
        zero_msgs = [coordinator_frames(ws, np.zeros(triangle_size(d_k)), "G", "a", exp.layer)
                     for _ in range(trials)]
        zero = payload_bytes(zero_msgs[0])
        zero_sizes = [sum(len(f) for msg in msgs for f in msg) for msgs in zero_msgs]
        for m in ms:
            draws = draw_trials(exp.requests, m, trials, exp.seed)
            ranks, unif, homo, sizes, secs = [], [], [], [], []
            for t, idx in enumerate(draws):
                reqs = [exp.requests[i] for i in idx]
                g = gram_view(exp.setup, reqs, exp.layer)
                t0 = time.perf_counter()
                msgs = coordinator_frames(ws, pack_symmetric(g.numpy()), "G", "a", exp.layer)
                secs.append(time.perf_counter() - t0)
                raw = payload_bytes(msgs)
                sizes.append(sum(len(f) for msg in msgs for f in msg))
                basis = spectral.basis_from_gram(as_plaintext_gram(raw, d_k), m)
                ranks.append(subspace.ranks_of(subspace.projection_scores(basis, exp.cand_keys),
                                               [exp.index(r.subject) for r in reqs]))
                unif.append(byte_uniformity(raw)["p_value"])
                homo.append(byte_homogeneity(raw, zero)["p_value"])
                if t == 0:
                    say(f"wire {mode}: m = {m}, {len(draws)} trials, {sizes[-1] / 1e6:.1f} MB per G")
            hits = sum(r < m for rk in ranks for r in rk)
            n = sum(len(rk) for rk in ranks)
            lo, hi = metrics.wilson_ci(hits, n)
            rows.append({
                "view": "wire", "attack": "subspace", "mode": mode, "m": m, "n": len(draws),
                "subject_top1": hits / n, "subject_top1_ci": [lo, hi],
                "subject_top5": sum(r < 5 * m for rk in ranks for r in rk) / n, "chance_top1": m / exp.n,
                "binomial_p_vs_chance": metrics.binomial_sf(hits, n, m / exp.n),
                "judge_similarity": None, "random_baseline": None,
                "uniformity": {"test": UNIFORMITY, "p_values": unif,
                               "min_p": min(unif)},
                "homogeneity": {"test": HOMOGENEITY, "p_values": homo,
                                "min_p": min(homo)},
                "bytes_per_statistic": sorted(set(sizes)), "protect_seconds": float(np.mean(secs)),
                "size_test": {"test": SIZE_TEST, "p_value": permutation_p(sizes, zero_sizes),
                              "mean_real": float(np.mean(sizes)), "mean_zero": float(np.mean(zero_sizes))},
            })
    return rows


# ------------------------------------------------------------------------------------------------ metadata

def ledger_traffic(ledger: Path, session: str | None = None) -> dict[str, Any]:
    """Per party: bytes and count of accepted contributions, and the latency from each request to the party's
    first contribution of that step (seconds), read from the coordinator's ledger (``session``: that one only)."""
    rows = read_ledger(ledger, ("messages",), session=session)["messages"]  # in insertion (id) order
    out: dict[str, dict[str, Any]] = {}
    asked: dict[str, float] = {}  # peer -> time of the request not yet answered
    for row in rows:
        t, direction, peer, mtype, nbytes, outcome = (row[k] for k in ("time", "direction", "peer", "type", "bytes",
                                                                      "outcome"))
        p = out.setdefault(peer, {"bytes": 0, "contribs": 0, "latency": [], "sizes": []})
        if direction == "out" and mtype == "request":
            asked[peer] = t
        elif direction == "in" and mtype == "contrib" and outcome == "accepted":
            p["bytes"] += nbytes
            p["contribs"] += 1
            p["sizes"].append(nbytes)
            if peer in asked:
                p["latency"].append(t - asked.pop(peer))
    return {k: v for k, v in out.items() if v["contribs"]}


def metadata_attack(traffic: dict[str, Any], edits: dict[str, int]) -> dict[str, Any]:
    """Guess each party's edit count from sizes and from timing: Spearman correlation and whether the party
    with the most edits is picked (chance 1/P)."""
    parties = sorted(p for p in traffic if p in edits)
    if len(parties) < 2:
        return {"parties": parties, "note": "fewer than two parties with known edit counts"}
    truth = [edits[p] for p in parties]
    sizes = [traffic[p]["bytes"] for p in parties]
    first = [traffic[p]["latency"][0] if traffic[p]["latency"] else math.nan for p in parties]
    most = max(range(len(parties)), key=lambda i: truth[i])
    return {
        "parties": parties, "edits": truth, "bytes": sizes, "first_latency_s": first,
        "sizes_distinct": len(set(sizes)), "spearman_size": _spearman(sizes, truth),
        "spearman_latency": _spearman(first, truth),
        "most_edits_by_latency": parties[int(np.nanargmax(first))] == parties[most],
        "chance": 1 / len(parties),
    }


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    rx, ry = _rank(x), _rank(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _rank(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    order = a.argsort(kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    for v in np.unique(a):  # average ranks of ties
        ranks[a == v] = ranks[a == v].mean()
    return ranks


def wire_results(args: Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    from attacks.experiment import AttackError, build_experiment

    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not modes or any(m not in ("ckks", "shares") for m in modes):
        raise AttackError("--mode for the wire view: ckks and/or shares")
    exp = build_experiment(args, say)
    rows = wire_rows(exp, modes, args.m, max(4, min(args.trials, 16)), say)
    result: dict[str, Any] = {"meta": {"model": args.model, "view": "wire", "modes": modes,
                                       "n_candidates": exp.n, "layer": exp.layer}, "results": rows}
    if args.ledger:
        ledger = Path(args.ledger)
        if not ledger.is_file():
            raise AttackError(f"ledger {ledger} not found")
        edits_file = ledger.with_name("edits.json")
        edits = json.loads(edits_file.read_text()) if edits_file.is_file() else {}
        result["metadata"] = metadata_attack(ledger_traffic(ledger), edits)
    if args.session_edits:
        result["metadata_sessions"] = metadata_sessions(exp.requests, modes, args, say)
    return result


def metadata_sessions(requests, modes: Sequence[str], args: Namespace, say: Callable[[str], None]) -> dict:
    """Real sessions with uneven edit counts (rotated over repetitions): does timing or size name the party
    with the most edits? Accuracy against chance 1/P with an exact binomial test."""
    import tempfile

    from attacks import metrics
    from attacks.experiment import AttackError
    from attacks.session import run_session

    counts = [int(x) for x in args.session_edits.split(",")]
    if len(counts) < 2 or min(counts) < 1 or sum(counts) > len(requests):
        raise AttackError("--session-edits: at least two positive counts, within the report set")
    root = Path(args.session_dir or tempfile.mkdtemp(prefix="secure-collab-wire-"))
    out: dict[str, Any] = {"model": args.session_model, "edits": counts, "sessions": args.sessions}
    for mode in modes:
        runs = []
        for rep in range(args.sessions):
            rot = counts[rep % len(counts):] + counts[:rep % len(counts)]
            shares, s = {}, 0
            for i, c in enumerate(rot):
                shares[chr(ord("a") + i)] = requests[s:s + c]
                s += c
            ledger = run_session(root / f"{mode}-{rep}", args.session_model, mode, shares, say=say)
            runs.append(metadata_attack(ledger_traffic(ledger), {k: len(v) for k, v in shares.items()}))
        hits = sum(bool(r["most_edits_by_latency"]) for r in runs)
        p = 1 / len(counts)
        out[mode] = {"runs": runs, "most_edits_by_latency_accuracy": hits / len(runs),
                     "accuracy_ci": list(metrics.wilson_ci(hits, len(runs))), "chance": p,
                     "binomial_p_vs_chance": metrics.binomial_sf(hits, len(runs), p),
                     "mean_spearman_latency": float(np.mean([r["spearman_latency"] for r in runs])),
                     "mean_spearman_size": float(np.mean([r["spearman_size"] for r in runs])),
                     "distinct_sizes": sorted({d for r in runs for d in r["bytes"]}),
                     "ledgers": [str(root / f"{mode}-{i}" / "coordinator" / "ledger.sqlite")
                                 for i in range(args.sessions)]}
    return out
