"""Test doubles for the network tests: a synthetic editing engine and hand-driven peers.

The protection is always the real one (``plain`` unless a test names another mode: the integrity tags,
seals and signatures are the same in every mode). The synthetic engine makes per-party statistics from
seeded random keys/residuals; its residuals depend on ΔW already applied, so the sequential variant really
depends on the order of releases.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from secure_collab.config import Config, write_config
from secure_collab.keys import init_keys
from secure_collab.protection import Payload, ProtectionScheme, StatContext, get_scheme
from secure_collab.protocol.transport import free_loopback_endpoint

LAMBDA = 2.0


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


class SyntheticEngine:
    """One party's 'model': W per layer, n edits with seeded keys K (d_k, n) and base residuals."""

    def __init__(self, name: str, cfg: Config, n_edits: int = 3) -> None:
        self.name, self.s, self.n = name, cfg.session, n_edits
        self.w = {lay: np.zeros((self.s.d_v, self.s.d_k)) for lay in self.s.layers}
        self.compute_calls: list[tuple[int, int]] = []

    def compute_statistics(self, round_: int, layer: int) -> dict[str, np.ndarray]:
        self.compute_calls.append((round_, layer))
        rng = np.random.default_rng(_seed(self.name, round_, layer))
        k = rng.standard_normal((self.s.d_k, self.n))  # (d_k, n)
        r = rng.standard_normal((self.s.d_v, self.n))  # (d_v, n)
        for lay in self.s.layers:
            if lay < layer:
                r = r - 0.1 * self.w[lay] @ k  # residuals shrink once earlier layers are edited
        return {"G": k @ k.T, "B": r @ k.T, "N": self.n}

    def apply_delta(self, layer: int, delta: np.ndarray) -> None:
        self.w[layer] = self.w[layer] + delta


class ToyServedModel:
    """A stand-in for the solver's served model (``solver.serve.ServedModel``): W per layer, the sum of every ΔW
    applied, and answers computed from it, so a test can tell exactly which ΔW the served model holds. A logprobs
    answer is -(Σ|W|) - len(candidate) per candidate (one token each); a generate answer is Σ|W| as text. A prompt
    of more than ``max_words`` words breaks the (toy) token bound."""

    def __init__(self, cfg: Config, max_words: int = 50) -> None:
        self.w = {lay: np.zeros((cfg.session.d_v, cfg.session.d_k)) for lay in cfg.session.layers}
        self.max_words = max_words
        self.answered: list[dict[str, Any]] = []  # every query answered, as the solver's host sees it (in the clear)

    def apply(self, layer: int, delta: np.ndarray) -> None:
        self.w[layer] = self.w[layer] + delta

    def mass(self) -> float:
        return float(sum(np.abs(w).sum() for w in self.w.values()))

    def check(self, query: dict[str, Any]) -> None:
        from secure_collab.protocol.schema import ProtocolError

        if len(query.get("prompt", "").split()) > self.max_words:
            raise ProtocolError(f"the prompt has more than {self.max_words} tokens")

    def answer(self, query: dict[str, Any]) -> dict[str, Any]:
        self.answered.append(query)
        if query["kind"] == "logprobs":
            return {"logprobs": [-self.mass() - len(c) for c in query["candidates"]],
                    "tokens": [1] * len(query["candidates"])}
        return {"text": f"{self.mass():.6f}"}


def closed_form_solve(round_: int, layer: int, g_sum: np.ndarray, b_sum: np.ndarray,
                      past_g: np.ndarray | None = None) -> np.ndarray:
    """B (λI + G [+ G_past])⁻¹: the synthetic stand-in for the update rules (G_past when the rule reads it)."""
    a = LAMBDA * np.eye(g_sum.shape[0]) + g_sum  # (d_k, d_k), symmetric positive definite
    if past_g is not None:
        a = a + past_g
    c = np.linalg.cholesky(a)
    return np.linalg.solve(c.T, np.linalg.solve(c, b_sum.T)).T  # (d_v, d_k) = B A⁻¹


def reference_deltas(cfg: Config, names: Iterable[str],
                     members: dict[tuple[int, int], Iterable[str]] | None = None
                     ) -> dict[tuple[int, int], np.ndarray]:
    """The single-process computation of every ΔW of a session among ``names`` (``members`` overrides
    who contributes to a given (round, layer))."""
    engines = {n: SyntheticEngine(n, cfg) for n in names}
    out = {}
    past: dict[int, np.ndarray] = {}  # Σ of earlier rounds' ΣG, for update rules that read it
    reads_past = cfg.session.update_rule != "memit-static"
    for round_, layers in cfg.session.steps():
        stats = {lay: [engines[n].compute_statistics(round_, lay)
                       for n in (members or {}).get((round_, lay), engines)] for lay in layers}
        for lay in layers:
            g = sum(st["G"] for st in stats[lay])
            b = sum(st["B"] for st in stats[lay])
            out[(round_, lay)] = closed_form_solve(round_, lay, g, b, past.get(lay) if reads_past else None)
            past[lay] = past[lay] + g if lay in past else g
        for lay in layers:
            for e in engines.values():
                e.apply_delta(lay, out[(round_, lay)])
    return out


def ledger_bytes(ledger: Path) -> bytes:
    """Every byte the coordinator stores: its ledger, the ledger's -wal and -shm, and the release files beside it
    (``<ledger>.releases/<session>/``), for tests that no plaintext reaches them."""
    files = []
    for path in sorted(ledger.parent.glob(ledger.name + "*")):
        files += [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    return b"".join(f.read_bytes() for f in files)


def run_role_cli(module: Any, argv: list[str]) -> int:
    """A role's command (``secure_collab.cli.coordinator`` / ``solver`` / ``party``) with its own parser, as
    ``secure-collab ROLE ARGV`` runs it, in this process."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("-q", "--quiet", action="store_true")  # the CLI's global options (cli/__init__.py)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)))


def run_role_commands(config_path: str, tmp: Path, requests: dict[str, list[str]], timeout: float = 240) -> dict:
    """The coordinator, the solver and one party per name of ``requests`` (name -> request files), each as its real
    command in a thread over loopback sockets; every party writes ``tmp/<name>.json`` and ``tmp/<name>.safetensors``.
    Returns each role's exit code."""
    from transformers import AutoModelForCausalLM  # noqa: F401  (transformers' lazy imports race across threads)

    from secure_collab.cli import coordinator as coordinator_cli
    from secure_collab.cli import party as party_cli
    from secure_collab.cli import solver as solver_cli

    th = Threads()
    th.start("coordinator", lambda: run_role_cli(coordinator_cli, ["--config", config_path]))
    th.start("solver", lambda: run_role_cli(solver_cli, ["--config", config_path]))
    for n, files in requests.items():
        argv = ["--config", config_path, "--name", n, "--json", str(tmp / f"{n}.json"),
                "--patch", str(tmp / f"{n}.safetensors"), *[x for f in files for x in ("--requests", f)]]
        th.start(n, lambda argv=argv: run_role_cli(party_cli, argv))
    th.join(timeout)
    return dict(th.results)


def make_config(tmp: Path, parties: tuple[str, ...] = ("a", "b", "c"), *, keys_dir: Path | None = None,
                network: dict | None = None, paths: dict | None = None, **session: Any) -> Config:
    keys = keys_dir or tmp / "keys"
    if not (keys / "roster.toml").exists():
        init_keys(keys, list(parties))
    endpoint = free_loopback_endpoint()
    doc = {
        "session": {"id": "s1", "mode": "plain", "layers": [1, 2], "d_k": 6, "d_v": 4, "min_parties": 2,
                    "value_bound": 1000.0,
                    "chunk_values": 7, "variant": "sequential", "rounds": 1, **session},
        "network": {"coordinator_bind": endpoint, "coordinator_endpoint": endpoint, "join_timeout_s": 20.0,
                    "stage_timeout_s": 20.0, "solve_timeout_s": 20.0, "heartbeat_s": 0.1,
                    "max_message_bytes": 1 << 16, "linger_ms": 5000, **(network or {})},
        "paths": {"keys": str(keys), "roster": str(keys / "roster.toml"), "ledger": "ledger.sqlite",
                  "solver_state": "solver-state", **(paths or {})},
    }
    return write_config(tmp / f"config-{doc['session']['id']}.toml", **doc)


@dataclass
class Threads:
    """Run callables in threads, keep their results or exceptions; join with a hard limit."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, name: str, fn: Callable[[], Any]) -> None:
        def target() -> None:
            try:
                self.results[name] = fn()
            except BaseException as exc:  # reported by join()
                self.errors[name] = exc

        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout: float = 30.0) -> None:
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), f"thread {t.name} did not finish"
        if self.errors:
            name, exc = next(iter(self.errors.items()))
            raise AssertionError(f"thread {name} failed: {exc!r}") from exc


@dataclass
class SessionRun:
    outcome: Any
    solver: Any
    parties: dict[str, Any]
    engines: dict[str, SyntheticEngine]
    extra: dict[str, Any]


def run_session(cfg: Config, honest: Iterable[str] = ("a", "b", "c"), *,
                extra: dict[str, Callable[[], Any]] | None = None, timeout: float = 40.0,
                scheme: ProtectionScheme | None = None, coordinator: Callable[[], Any] | None = None) -> SessionRun:
    """Solver, coordinator and honest parties in threads (each with its own zmq context), plus extras.
    ``coordinator`` replaces the in-thread coordinator (a callable returning its outcome)."""
    from coordinator.server import run_coordinator
    from parties import run_party
    from solver.server import run_solver

    scheme = scheme or get_scheme(cfg.session.mode)
    engines = {n: SyntheticEngine(n, cfg) for n in honest}
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
    th.start("coordinator", coordinator or (lambda: run_coordinator(cfg, scheme)))
    for n, e in engines.items():
        th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
    for name, fn in (extra or {}).items():
        th.start(name, fn)
    th.join(timeout)
    run = SessionRun(th.results["coordinator"], th.results["solver"], {n: th.results[n] for n in engines},
                     engines, {n: th.results.get(n) for n in (extra or {})})
    if run.outcome.ok:  # every honest party heard the end and applied every release
        for name, result in run.parties.items():
            assert result.ok, (name, result.reason)
            assert set(result.applied) == set(run.outcome.releases), name
    return run


def assert_extra_party_complete(cfg: Config, run: SessionRun, name: str, honest: Iterable[str]) -> Any:
    """The session ended well, the extra party ``name`` (a real Party run by a test's own thread) heard the end with
    every release applied, and the releases are the reference ΔW over ``honest`` (which includes it). Returns its
    result."""
    party = run.extra[name]
    assert run.outcome.ok, run.outcome.reason
    assert party is not None and party.ok, party.reason if party else f"{name} did not finish"
    assert set(party.applied) == set(run.outcome.releases)
    for key, delta in reference_deltas(cfg, list(honest)).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    return party


HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def solver_process(config_path: Path) -> Any:
    """The real solver (closed-form solve) as its own process; ``.communicate()`` gives its JSON result."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(HERE / "solver_process.py"), str(config_path)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass
class ProcessRun:
    outcome: Any  # the coordinator's Outcome
    solver: dict[str, Any]  # the solver process's JSON result
    parties: dict[str, Any]
    engines: dict[str, SyntheticEngine]


def run_with_solver_process(cfg: Config, config_path: Path, coordinator: Any, honest: Iterable[str] = ("a", "b", "c"),
                            *, extra: dict[str, Callable[[], Any]] | None = None,
                            timeout: float = 90.0) -> ProcessRun:
    """The solver in its own process; ``coordinator`` (honest or a double) and the parties in threads."""
    import json

    from parties import run_party

    solver = solver_process(config_path)
    scheme = get_scheme(cfg.session.mode)
    engines = {n: SyntheticEngine(n, cfg) for n in honest}
    th = Threads()
    th.start("coordinator", coordinator.run)
    for n, e in engines.items():
        th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
    for name, fn in (extra or {}).items():
        th.start(name, fn)
    try:
        th.join(timeout)
        out, err = solver.communicate(timeout=60)
    finally:
        if solver.poll() is None:
            solver.kill()
            solver.communicate()
    assert solver.returncode == 0, err
    parties = {n: th.results[n] for n in engines} | {n: th.results.get(n) for n in (extra or {})}
    return ProcessRun(th.results["coordinator"], json.loads(out), parties, engines)


class RawClient:
    """A hand-driven DEALER with a roster key: sends whatever frames a test builds."""

    def __init__(self, cfg: Config, name: str, ctx: Any, options: dict | None = None, monitor: int = 0) -> None:
        """``options``: socket options set before connecting; ``monitor``: socket events to watch from before
        the connection (``self.monitor``, a PAIR socket for zmq.utils.monitor.recv_monitor_message)."""
        import zmq

        from secure_collab.keys import load_identity
        from secure_collab.protocol import transport
        from secure_collab.protocol.messages import Sequencer

        self.cfg, self.name, self.zmq = cfg, name, zmq
        self.identity = load_identity(cfg.paths.keys / f"party-{name}.key_secret")
        self.keys = self.identity.curve
        self.monitor = None
        if options or monitor:
            self.sock = ctx.socket(zmq.DEALER)
            transport._common(self.sock, self.keys, cfg.network)
            for opt, value in (options or {}).items():
                self.sock.setsockopt(opt, value)
            if monitor:
                self.monitor = self.sock.get_monitor_socket(monitor)
                self.monitor.setsockopt(zmq.RCVTIMEO, 10000)
            self.sock.curve_serverkey = cfg.roster.coordinator.curve
            self.sock.connect(cfg.network.coordinator_endpoint)
        else:
            self.sock = transport.dealer(ctx, self.keys, cfg.roster.coordinator.curve, cfg.network)
        self.sock.setsockopt(zmq.RCVTIMEO, 20000)
        self.seq = Sequencer()
        self.scheme = get_scheme(cfg.session.mode)
        self.public: bytes | None = None
        self.secrets: Any = None

    def join(self) -> Any:
        """HELLO, then take the setup (opening this party's bundle) and return the first REQUEST."""
        from secure_collab.protocol.messages import MsgType

        self.send(self.msg(MsgType.HELLO, body={"role": "party", "public": False}).to_frames())
        while True:
            msg = self.recv()
            if msg.type is MsgType.SETUP:
                public, bundles, _ = (bytes(f) for f in msg.frames)
                self.public = public
                self.secrets = self.scheme.join(public, bundles, self.name,
                                                self.identity.sealing.private_bytes_raw())
            elif msg.type is MsgType.REQUEST:
                return msg

    def protect(self, values: np.ndarray, ctx: StatContext) -> Payload:
        """An honest, signed payload for ``ctx`` (a test may then alter it)."""
        assert self.public is not None, "join() first"
        return self.scheme.protect(values, ctx, self.public, self.secrets, self.identity.signing)

    def msg(self, mtype: Any, round_: int = -1, layer: int = -1, stat: str = "", body: dict | None = None,
            frames: tuple[bytes, ...] = (), session: str | None = None, config: str | None = None) -> Any:
        from secure_collab.protocol.messages import Message

        return Message(mtype, session or self.cfg.session.id, round_, layer, stat, self.name, self.seq.next(),
                       config or self.cfg.digest, body or {}, frames)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, want: Any = None) -> Any:
        """Next message (of type ``want`` if given; others are skipped)."""
        from secure_collab.protocol.messages import Message

        while True:
            msg = Message.from_frames(self.sock.recv_multipart())
            if want is None or msg.type is want:
                return msg

    def close(self, linger_ms: int = 0) -> None:
        """``linger_ms``: how long the context keeps sending what is still queued (0: drop it)."""
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
        self.sock.close(linger=linger_ms)


Fact = tuple[str, str, str]  # (subject, relation, object)


class FactEngine(SyntheticEngine):
    """A party whose statistics come from named facts: a fact's key and residual depend on the fact alone, so
    one fact at several parties gives the same statistics (a deduplicated aggregate equals one copy exactly).
    It tags its facts and follows the solver's verdicts (withdrawals, weights 1/m, augmented copies of a won
    conflict)."""

    def __init__(self, name: str, cfg: Config, facts: dict[int, list[Fact]]) -> None:
        super().__init__(name, cfg)
        self.facts = facts
        self.kept: dict[int, list[tuple[Fact, int, float]]] = {}  # round -> (fact, augmented copy or -1, weight)
        self.verdicts: dict[int, list] = {}

    def tag_inputs(self, round_: int) -> list[tuple[bytes, bytes]]:
        from secure_collab.data.requests import Request
        from secure_collab.overlap import fact_inputs

        return [fact_inputs(Request(subject=s, prompt="{} has", target_new=o, relation=r))
                for s, r, o in self.facts.get(round_, [])]

    def decided(self, round_: int, verdicts: list) -> None:
        self.verdicts[round_] = verdicts
        kept: list[tuple[Fact, int, float]] = []
        for (_i, action, _kind, _id, holders), fact in zip(verdicts, self.facts.get(round_, []), strict=True):
            if action != "withdraw":
                kept.append((fact, -1, 1.0 / holders))
            if action == "augment":
                kept += [(fact, j, 1.0) for j in range(self.s.augment)]
        self.kept[round_] = kept

    def compute_statistics(self, round_: int, layer: int) -> dict[str, np.ndarray]:
        self.compute_calls.append((round_, layer))
        kept = self.kept.get(round_, [(f, -1) for f in self.facts.get(round_, [])])
        return fact_statistics(self.s, kept, layer, self.w)


def fact_statistics(s: Any, kept: list[tuple], layer: int, w: dict[int, np.ndarray]) -> dict:
    """G = Σ w_j k_j k_jᵀ, B = Σ w_j r_j k_jᵀ over (fact, copy[, weight]) entries (weight 1 when left out)."""
    g, b = np.zeros((s.d_k, s.d_k)), np.zeros((s.d_v, s.d_k))
    for fact, copy, *weight in kept:
        rng = np.random.default_rng(_seed(*fact, copy, layer))
        k, r = rng.standard_normal((s.d_k, 1)), rng.standard_normal((s.d_v, 1))
        for lay in s.layers:
            if lay < layer:
                r = r - 0.1 * w[lay] @ k
        wt = weight[0] if weight else 1.0
        g, b = g + wt * (k @ k.T), b + wt * (r @ k.T)
    return {"G": g, "B": b, "N": len(kept)}


def fact_reference(cfg: Config, kept_by_round: dict[int, list[tuple]]) -> dict[tuple[int, int], np.ndarray]:
    """Every ΔW of a session whose rounds contribute exactly these (fact, copy[, weight]) entries, computed in one
    place."""
    s = cfg.session
    w = {lay: np.zeros((s.d_v, s.d_k)) for lay in s.layers}
    out, past = {}, {}
    reads_past = s.update_rule != "memit-static"
    for round_, layers in s.steps():
        for lay in layers:
            st = fact_statistics(s, kept_by_round.get(round_, []), lay, w)
            out[(round_, lay)] = closed_form_solve(round_, lay, st["G"], st["B"], past.get(lay) if reads_past else None)
            past[lay] = past[lay] + st["G"] if lay in past else st["G"]
            w[lay] = w[lay] + out[(round_, lay)]
    return out


def run_fact_session(cfg: Config, facts: dict[str, dict[int, list[Fact]]], *, coordinator: Any = None,
                     timeout: float = 40.0, engine: dict[str, type] | None = None) -> SessionRun:
    """Solver, coordinator (honest unless given) and FactEngine parties in threads."""
    from parties import run_party
    from solver.server import run_solver

    scheme = get_scheme(cfg.session.mode)
    engines = {n: (engine or {}).get(n, FactEngine)(n, cfg, f) for n, f in facts.items()}
    coord = coordinator or Watching(cfg, scheme)
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
    th.start("coordinator", coord.run)
    for n, e in engines.items():
        th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta, tagger=e))
    th.join(timeout)
    return SessionRun(th.results["coordinator"], th.results["solver"], {n: th.results[n] for n in engines},
                      engines, {"coordinator": coord})


def _watching() -> type:
    from coordinator.server import Coordinator

    class Watching(Coordinator):
        """The honest coordinator, keeping every frame it received or sent (its 'memory' of the session)."""

        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.frames: list[bytes] = []

        def _check(self, m: Any) -> None:
            self.frames.extend(m.raw)
            super()._check(m)

        def _send_frames(self, name: str, route: bytes, frames: Any, mtype: str, where: dict,
                         track: bool = False) -> list:
            self.frames.extend(bytes(f) for f in frames)
            return super()._send_frames(name, route, frames, mtype, where, track)

    return Watching


Watching = _watching()


def simulation_of(session: Any, cache: Path) -> tuple[Any, Any, dict, list[str]]:
    """The single-machine simulation's inputs for a session of the real engine on tiny-llama: a fresh model, the
    session's hyper-parameters, its public C and context templates (what the parties and the solver use)."""
    from secure_collab.covariance import layer_covariances
    from secure_collab.editing.hparams import auto_request_batch
    from secure_collab.editing.session import session_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers

    lm = load_model(session.model)
    hp = session_hparams(session.model, n_layers(lm.model, lm.spec), session.layers, session.variant,
                         session.template_seed, session.hparams, auto_request_batch("cpu"), session.update_rule)
    covs = layer_covariances(lm, hp.layers, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len, cache=cache,
                             progress=False)
    return lm, hp, covs, context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, cache)
