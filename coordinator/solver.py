"""The trusted solver: a separate process with its own CURVE and signing keys that sees only aggregates.

It makes the session's protection secrets (``scheme.solver_setup``), signs the public part so parties can
tell the coordinator did not substitute it, opens each aggregate chunk as it arrives, calls the engine's
``solve(round, layer, g_sum, b_sum)`` once a layer's G and B are complete, and signs the release (Ed25519).
It refuses an aggregate over fewer than ``min_parties`` parties, and a second release of a (round, layer)
over a different set of parties (two such releases would let their difference single parties out).
Releases and the signed public parameters are kept under ``paths.solver_state/<session>/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zmq

from secure_collab.config import STATISTICS, Config
from secure_collab.keys import CurveKeyPair, load_curve_pair, load_signing_key
from secure_collab.protection.base import (
    Payload,
    ProtectionError,
    ProtectionParams,
    ProtectionScheme,
    StatContext,
)
from secure_collab.protocol import transport
from secure_collab.protocol.messages import Frame, Message, MsgType, ProtocolError, Sequencer, sha256_hex
from secure_collab.protocol.release import encode_delta, release_bytes, setup_bytes
from secure_collab.protocol.statistics import chunk_bounds, unpack_g
from secure_collab.protocol.watch import ConnectionWatch

log = logging.getLogger("solver")


class SolveFn(Protocol):
    def __call__(self, round: int, layer: int, g_sum: np.ndarray, b_sum: np.ndarray) -> np.ndarray:
        """g_sum: (d_k, d_k) symmetric Σ K Kᵀ; b_sum: (d_v, d_k) Σ R Kᵀ; returns ΔW (d_v, d_k) float64.

        May be called again for the same (round, layer) with the same parties (a coordinator restart
        re-collects a step): an engine that carries state across rounds (the dynamic covariance)
        must key it by (round, layer) rather than count calls."""
        ...


@dataclass
class SolverResult:
    ok: bool = False
    reason: str = ""
    releases: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    received: list[tuple[int, int, str, int, tuple[str, ...]]] = field(default_factory=list)


@dataclass
class _Pending:
    attempt: int
    parties: tuple[str, ...]
    values: dict[str, np.ndarray]
    got: set[tuple[str, int]] = field(default_factory=set)


class Solver:
    def __init__(self, config: Config, scheme: ProtectionScheme, solve: SolveFn, *,
                 ctx: zmq.Context | None = None, stop: threading.Event | None = None,
                 keys: CurveKeyPair | None = None, signing_key: Any = None) -> None:
        self.cfg, self.s, self.scheme, self.solve = config, config.session, scheme, solve
        self.keys = keys or load_curve_pair(config.paths.keys / "solver.key_secret")
        self.signing = signing_key or load_signing_key(config.paths.keys / "solver.key_secret")
        self.stop = stop or threading.Event()
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.state_dir = Path(config.paths.solver_state) / self.s.id
        self.seq = Sequencer()
        self.pending: dict[tuple[int, int], _Pending] = {}
        self.released_parties = self._load_released()
        self.result = SolverResult()
        self.ended = False

    def run(self) -> SolverResult:
        params = ProtectionParams(mode=self.s.mode, max_parties=len(self.cfg.roster.parties),
                                  bound=self.s.value_bound, min_parties=self.s.min_parties,
                                  extra=dict(self.s.protection))
        self.secrets = self.scheme.solver_setup(params)
        public = bytes(self.secrets.public)
        signature = self.signing.sign(setup_bytes(self.s.id, self.cfg.digest, public))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "public.bin").write_bytes(public)
        hello = {"role": "solver", "public": True}
        with contextlib.ExitStack() as stack:
            if self._own_ctx:
                stack.callback(self.ctx.term)
            self.sock = transport.dealer(self.ctx, self.keys, self.cfg.roster.coordinator.curve, self.cfg.network)
            # after END nothing we still queue matters (the coordinator is gone): do not wait for it
            stack.callback(lambda: self.sock.close(linger=0 if self.ended else self.cfg.network.linger_ms))
            stack.callback(ConnectionWatch(self.sock, self.cfg.network.coordinator_endpoint, log,
                                           self.cfg.network.join_timeout_s).start().stop)
            self._loop(lambda: self._msg(MsgType.HELLO, body=hello, frames=(public, signature)))
        return self.result

    def _loop(self, hello: Any) -> None:
        net = self.cfg.network
        # the longest a live coordinator can stay silent towards us: every party's turn, then the solve
        idle_limit = net.join_timeout_s + net.stage_timeout_s * len(self.cfg.roster.parties) + net.solve_timeout_s
        transport.send(self.sock, hello())
        last = time.monotonic()
        limits = transport.limits_for(net)
        while not self.stop.is_set():
            if not self.sock.poll(int(net.heartbeat_s * 1000), zmq.POLLIN):
                if time.monotonic() - last > idle_limit:
                    self.result.reason = "no word from the coordinator"
                    return
                transport.send(self.sock, hello())  # heartbeat: lets a restarted coordinator find us
                continue
            last = time.monotonic()
            seq = -1
            try:
                msg = Message.from_frames(self.sock.recv_multipart(), limits)
                seq = msg.seq
                if msg.session != self.s.id or msg.config != self.cfg.digest:
                    raise ProtocolError("wrong session or configuration digest")
                if msg.type is MsgType.END:
                    self.result.ok, self.result.reason = msg.body["ok"], msg.body["reason"]
                    self.ended = True
                    (log.info if self.result.ok else log.error)("the coordinator ended the session: %s%s",
                                                                "" if self.result.ok else "ABORTED: ",
                                                                self.result.reason)
                    return
                if msg.type is MsgType.AGGREGATE:
                    self._on_aggregate(msg)
            except (ProtocolError, ProtectionError) as exc:
                log.warning("refused a message from the coordinator: %s", str(exc)[:200])
                error = self._msg(MsgType.ERROR, body={"refused_seq": seq, "reason": str(exc)})
                transport.send(self.sock, error)
        self.result.reason = "solver stopped"

    def _on_aggregate(self, msg: Message) -> None:
        b, stat = msg.body, msg.stat
        parties = tuple(sorted(b["parties"]))
        if len(set(parties)) != len(parties) or not set(parties) <= set(self.cfg.roster.parties):
            raise ProtocolError("aggregate party list has repeats or names outside the roster")
        if len(parties) < self.s.min_parties:
            raise ProtocolError(f"aggregate over {len(parties)} parties < min_parties {self.s.min_parties}")
        if msg.layer not in self.s.layers or stat not in STATISTICS or b["n_values"] != self.s.n_values(stat):
            raise ProtocolError(f"aggregate for unknown layer/statistic {msg.layer}/{stat}")
        bounds = chunk_bounds(self.s.n_values(stat), self.s.chunk_values)
        if not 0 <= b["chunk"] < len(bounds) or (b["offset"], b["count"]) != bounds[b["chunk"]]:
            raise ProtocolError(f"aggregate chunk {b['chunk']} does not fit the configured chunking")
        claimed = b["payload"].get("parties")
        if claimed is not None and sorted(claimed) != list(parties):
            raise ProtocolError("aggregate payload and hand-off name different parties")
        key = (msg.round, msg.layer)
        earlier = self.released_parties.get(key)
        if earlier is not None and earlier != parties:
            raise ProtocolError(f"round {msg.round} layer {msg.layer} was released over other parties")
        pend = self.pending.get(key)
        if pend is None or pend.attempt < b["attempt"]:
            pend = self.pending[key] = _Pending(b["attempt"], parties, {
                st: np.zeros(self.s.n_values(st)) for st in STATISTICS})
        if pend.attempt != b["attempt"] or pend.parties != parties or (stat, b["chunk"]) in pend.got:
            raise ProtocolError("stale, duplicate or inconsistent aggregate chunk")
        self.result.received.append((msg.round, msg.layer, stat, b["chunk"], parties))
        ctx = StatContext(self.s.id, msg.round, msg.layer, stat)  # the aggregate's context: no party
        total = self.scheme.open(Payload(header=dict(b["payload"]), frames=msg.frames), self.secrets, ctx)
        total = np.asarray(total, dtype=np.float64)
        if total.shape != (b["count"],) or not np.isfinite(total).all():
            raise ProtocolError("opened aggregate has the wrong size or non-finite values")
        pend.values[stat][b["offset"]:b["offset"] + b["count"]] = total
        pend.got.add((stat, b["chunk"]))
        if len(pend.got) == sum(self.s.n_chunks(st) for st in STATISTICS):
            log.info("round %d layer %d: opened the sums over %s; solving", msg.round, msg.layer,
                     ", ".join(parties))
            del self.pending[key]
            self._release(msg.round, msg.layer, pend)

    def _release(self, round_: int, layer: int, pend: _Pending) -> None:
        s = self.s
        g = unpack_g(pend.values["G"], s.d_k)  # (d_k, d_k)
        b = pend.values["B"].reshape(s.d_v, s.d_k)  # (d_v, d_k)
        delta = np.asarray(self.solve(round_, layer, g, b), dtype=np.float64)
        if delta.shape != (s.d_v, s.d_k) or not np.isfinite(delta).all():
            raise ProtocolError(f"solve returned shape {delta.shape} or non-finite values")
        raw, dtype, shape = encode_delta(delta)
        sha = sha256_hex(raw)
        body = {"attempt": pend.attempt, "shape": shape, "dtype": dtype, "sha256": sha,
                "parties": list(pend.parties)}
        signature = self.signing.sign(release_bytes(s.id, self.cfg.digest, round_, layer, pend.attempt,
                                                    dtype, shape, sha, list(pend.parties)))
        self._persist(round_, layer, delta, body, signature)
        self.released_parties[(round_, layer)] = pend.parties
        self.result.releases[(round_, layer)] = delta
        release = self._msg(MsgType.RELEASE, round_, layer, body=body, frames=(raw, signature))
        transport.send(self.sock, release)
        log.info("round %d layer %d: released ΔW (sha256 %s…, ‖ΔW‖ %.3g), signed", round_, layer, sha[:16],
                 float(np.linalg.norm(delta)))

    def _persist(self, round_: int, layer: int, delta: np.ndarray, body: dict, signature: bytes) -> None:
        stem = self.state_dir / f"release-r{round_}-l{layer}"
        np.save(stem.with_suffix(".npy"), delta, allow_pickle=False)
        stem.with_suffix(".json").write_text(json.dumps({**body, "signature": signature.hex()}))

    def _load_released(self) -> dict[tuple[int, int], tuple[str, ...]]:
        out = {}
        for path in sorted(self.state_dir.glob("release-r*-l*.json")):
            r, lay = path.stem.removeprefix("release-r").split("-l")
            out[(int(r), int(lay))] = tuple(sorted(json.loads(path.read_text())["parties"]))
        return out

    def _msg(self, mtype: MsgType, round_: int = -1, layer: int = -1, body: dict | None = None,
             frames: tuple[Frame, ...] = ()) -> Message:
        return Message(mtype, self.s.id, round_, layer, "", "solver", self.seq.next(), self.cfg.digest,
                       body or {}, frames)


def run_solver(config: Config, scheme: ProtectionScheme, solve: SolveFn, *,
               stop: threading.Event | None = None, ctx: zmq.Context | None = None) -> SolverResult:
    """Serve one session's aggregates until the coordinator ends it."""
    return Solver(config, scheme, solve, ctx=ctx, stop=stop).run()
