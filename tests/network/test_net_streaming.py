"""Streaming through the coordinator: it adds each chunk as it arrives, hands the solver each chunk's sum as soon as
every listed party's chunk is in, and holds at most ``network.coordinator_memory_bytes`` of running sums, so a
step larger than that bound still completes and equals the single-process ΔW (docs/network.md, "Streaming")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zmq
from network_doubles import HERE, ROOT, RawClient, make_config, reference_deltas, run_session, run_with_solver_process

from secure_collab.config import STATISTICS, load_config
from secure_collab.ledger import Ledger
from secure_collab.protection import Payload, StatContext, get_scheme
from secure_collab.protocol.messages import MsgType

# d_k 24, d_v 16, 32 values a chunk: per layer G 300 values (10 chunks), B 384 (12), N 1 (1): 23 chunks
STREAM = {"mode": "shares", "d_k": 24, "d_v": 16, "chunk_values": 32}
BOUND = 3072  # bytes of running sums: four chunks' sums over three parties (~700 bytes each), a fifth of one layer's


def _step_sum_bytes(cfg, parties: int = 3) -> int:
    """What the coordinator would hold for one whole layer if it kept every chunk's sum to the end."""
    scheme, s = get_scheme(cfg.session.mode), cfg.session
    from secure_collab.protection import ProtectionParams

    recipients = {name: ident.sealing for name, ident in cfg.roster.parties.items()}
    keys = scheme.solver_setup(ProtectionParams(mode=s.mode, max_parties=len(recipients), bound=s.value_bound,
                                                min_parties=s.min_parties), recipients)
    return sum(scheme.sum_bytes_bound(keys.public, min(s.chunk_values, s.n_values(st) - off), parties)
               for st in STATISTICS for off in range(0, s.n_values(st), s.chunk_values))


def _window(cfg) -> dict:
    with Ledger(cfg.paths.ledger) as ledger:
        events = [r for r in ledger.rows("stages") if r["event"] == "handoff"]
    assert events
    return json.loads(events[-1]["detail"])


@pytest.mark.parametrize("in_turn", [False, True])
def test_a_step_larger_than_the_coordinators_memory_bound_streams_through(tmp_path, in_turn):
    """Bound 3 KiB against ~16 KB of sums per layer: every chunk's sum goes to the solver while the parties are
    still sending, the coordinator never held more than the bound, and ΔW equals the reference. With
    ``request_in_turn`` (one party at a time would hold the whole step) the parties are asked at once."""
    cfg = make_config(tmp_path, **STREAM, network={"coordinator_memory_bytes": BOUND, "request_in_turn": in_turn})
    assert _step_sum_bytes(cfg) > 4 * BOUND
    run = run_session(cfg, scheme=get_scheme("shares"))
    assert run.outcome.ok, run.outcome.reason
    for key, delta in reference_deltas(cfg, ["a", "b", "c"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-9, atol=1e-9)
    window = _window(cfg)
    total = sum(cfg.session.n_chunks(st) for st in STATISTICS)
    assert 1 <= window["window_chunks"] < total
    assert 0 < window["peak_held_bytes"] <= BOUND
    with Ledger(cfg.paths.ledger) as ledger:
        rows = ledger.rows("messages")
    first_handoff = min(r["id"] for r in rows if r["type"] == "aggregate" and r["direction"] == "out")
    last_contrib = max(r["id"] for r in rows if r["type"] == "contrib" and r["direction"] == "in")
    assert first_handoff < last_contrib  # handed off while the parties were still sending
    assert all(r["outcome"] == "accepted" for r in rows if r["type"] == "contrib" and r["direction"] == "in")


def test_the_whole_step_goes_in_one_window_when_it_fits(tmp_path):
    """The default bound (64 MiB) holds a tiny step whole: one REQUEST per party and step, as before."""
    cfg = make_config(tmp_path, **STREAM)
    run = run_session(cfg, scheme=get_scheme("shares"))
    assert run.outcome.ok, run.outcome.reason
    assert _window(cfg)["window_chunks"] == sum(cfg.session.n_chunks(st) for st in STATISTICS)
    with Ledger(cfg.paths.ledger) as ledger:
        requests = [r for r in ledger.rows("messages") if r["type"] == "request" and r["outcome"] == "sent"]
    assert len(requests) == 3 * len(cfg.session.layers)


def test_a_memory_bound_below_one_chunk_ends_the_session_with_its_reason(tmp_path):
    cfg = make_config(tmp_path, **STREAM, network={"coordinator_memory_bytes": 100})
    run = run_session(cfg, scheme=get_scheme("shares"))
    assert not run.outcome.ok
    assert "coordinator_memory_bytes" in run.outcome.reason and "chunk" in run.outcome.reason


def test_a_chunk_beyond_the_window_is_refused_and_a_dropout_mid_stream_is_a_new_attempt(tmp_path):
    """c sends the first chunk past the window it was given (refused before any crypto), then nothing: a and b
    are held at the window's edge until the stage timeout, and the step is collected again without c (a new
    attempt: the chunks already handed off listed c)."""
    cfg = make_config(tmp_path, **STREAM, network={"coordinator_memory_bytes": BOUND, "stage_timeout_s": 2.0})

    def beyond():
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx)
        try:
            request = client.join()
            s, upto, attempt = cfg.session, request.body["upto"], request.body["attempt"]
            assert upto < s.n_chunks("G")  # the window ends inside layer 1's G
            sctx = StatContext(s.id, 0, 1, "G", "c", upto, attempt)
            count = min(s.chunk_values, s.n_values("G") - upto * s.chunk_values)
            payload = client.protect(np.ones(count), sctx)
            body = {"attempt": attempt, "chunk": upto, "n_chunks": s.n_chunks("G"), "offset": upto * s.chunk_values,
                    "count": count, "payload": dict(payload.header)}
            client.send(client.msg(MsgType.CONTRIB, 0, 1, "G", body, payload.frames).to_frames())
            return client.recv(MsgType.ERROR).body["reason"]
        finally:
            client.close()
            ctx.term()

    run = run_session(cfg, ["a", "b"], extra={"c": beyond}, scheme=get_scheme("shares"), timeout=60)
    assert "window" in run.extra["c"], run.extra["c"]
    assert run.outcome.ok, run.outcome.reason
    assert set(run.outcome.included.values()) == {("a", "b")}
    for key, delta in reference_deltas(cfg, ["a", "b"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-9, atol=1e-9)
    with Ledger(cfg.paths.ledger) as ledger:
        restarts = [r for r in ledger.rows("stages") if r["event"] == "restart"]
    assert restarts and "c" in restarts[0]["detail"]


def test_a_real_coordinator_process_streams_a_step_larger_than_its_memory_bound(tmp_path):
    """The acceptance test of issue 22 item 1: the coordinator (`secure-collab coordinator`) and the solver as their
    own processes, the parties over loopback, a 2-layer sequential session whose every layer's sums are ~5x the
    coordinator's configured bound: it completes, ΔW equals the single-process one, and the coordinator's ledger
    says it never held more than the bound."""
    cfg = make_config(tmp_path, **STREAM, network={"coordinator_memory_bytes": BOUND})
    config_path = next(tmp_path.glob("config-*.toml"))
    assert load_config(config_path).network.coordinator_memory_bytes == BOUND
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), OMP_NUM_THREADS="1")
    coordinator = subprocess.Popen(
        [sys.executable, "-c", "import sys; from secure_collab.cli import main; sys.exit(main(sys.argv[1:]))",
         "coordinator", "--config", str(config_path)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)

    class Waiting:  # run_with_solver_process runs "the coordinator" in a thread: here it waits for the process
        def run(self):
            return coordinator.wait(timeout=120)

    try:
        run = run_with_solver_process(cfg, config_path, Waiting(), timeout=150)
        _, err = coordinator.communicate(timeout=30)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.communicate()
    assert coordinator.returncode == 0, err[-3000:]
    assert run.solver["ok"], run.solver["reason"]
    for (round_, layer), delta in reference_deltas(cfg, ["a", "b", "c"]).items():
        np.testing.assert_allclose(np.array(run.solver["releases"][f"{round_}/{layer}"]), delta, rtol=1e-9,
                                   atol=1e-9)
    for name in run.engines:
        assert run.parties[name].ok, run.parties[name].reason
    assert _step_sum_bytes(cfg) > 4 * BOUND
    window = _window(cfg)
    assert 0 < window["peak_held_bytes"] <= BOUND and window["window_chunks"] < 23


def test_the_solver_spools_each_authenticated_chunk_sealed_0600_and_deletes_it_after_use(tmp_path, monkeypatch):
    """The solver authenticates each aggregate chunk as it arrives and keeps it on disk, sealed (ChaCha20-Poly1305
    under its state key), 0600, named by validated integers only; none is in memory between messages, and none is
    left once the step is opened (or a newer attempt replaces it)."""
    from solver.server import Solver
    from solver.state import SolverState

    cfg = make_config(tmp_path, **STREAM, network={"coordinator_memory_bytes": BOUND})
    spooled: list[tuple[str, int, bytes]] = []
    save = SolverState.save

    def recording_save(self, record, meta, blob=b"", **kwargs):
        save(self, record, meta, blob, **kwargs)
        if record.startswith("spool-"):
            path = self.dir / f"{record}.sealed"
            spooled.append((record, path.stat().st_mode & 0o777, path.read_bytes()))

    held: list[int] = []
    on_aggregate = Solver._on_aggregate

    def watching(self, msg):
        on_aggregate(self, msg)
        pend = self.pending  # the protected bytes it holds between messages: payloads kept in memory
        held.append(0 if pend is None else sum(sum(len(f) for f in x.frames) for v in vars(pend).values()
                                                if isinstance(v, dict) for x in v.values() if isinstance(x, Payload)))

    monkeypatch.setattr(SolverState, "save", recording_save)
    monkeypatch.setattr(Solver, "_on_aggregate", watching)
    run = run_session(cfg, scheme=get_scheme("shares"))
    assert run.outcome.ok, run.outcome.reason
    for key, delta in reference_deltas(cfg, ["a", "b", "c"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-9, atol=1e-9)
    per_layer = sum(cfg.session.n_chunks(st) for st in STATISTICS)
    assert len(spooled) == per_layer * len(cfg.session.layers)
    names = {record for record, _, _ in spooled}
    assert "spool-r0-a0-l1-g0" in names and "spool-r0-a0-l2-n0" in names
    assert all(mode == 0o600 for _, mode, _ in spooled)
    # sealed: a masked sum's frame never lies on disk as it came (the 8-byte words of chunk 0 would)
    assert len({blob[:32] for _, _, blob in spooled}) == len(spooled)
    state_dir = cfg.solver_dir
    assert not list(state_dir.glob("spool-*")), "a spooled chunk outlived its step"
    assert len(held) == len(spooled) and max(held) == 0


def test_a_release_larger_than_one_message_travels_in_parts_and_equals_the_reference(tmp_path):
    """ΔW of 64 x 24 float64 (12 KiB) against an 8 KiB message limit: the solver sends the ciphertext in RELEASE_PART
    messages and then the signed RELEASE (its sha256 is of the whole ciphertext); the coordinator keeps the parts on
    disk and sends each party the parts, then the RELEASE; every party verifies the whole before applying it, and no
    message of the session exceeds the limit."""
    limit = 8192
    cfg = make_config(tmp_path, mode="shares", d_k=24, d_v=64, chunk_values=32,
                      network={"max_message_bytes": limit})
    assert cfg.session.d_v * cfg.session.d_k * 8 > limit
    run = run_session(cfg, scheme=get_scheme("shares"))
    assert run.outcome.ok, run.outcome.reason
    for key, delta in reference_deltas(cfg, ["a", "b", "c"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-9, atol=1e-9)
        for engine in run.engines.values():
            np.testing.assert_allclose(engine.w[key[1]], delta, rtol=1e-9, atol=1e-9)
    with Ledger(cfg.paths.ledger) as ledger:
        rows = ledger.rows("messages")
    parts_out = [r for r in rows if r["type"] == "release_part" and r["direction"] == "out"]
    assert {r["peer"] for r in parts_out} == {"a", "b", "c"}
    parts_in = [r for r in rows if r["type"] == "release_part" and r["direction"] == "in"]
    assert len(parts_in) >= 2 * 2 and len(parts_out) == 3 * len(parts_in)  # at least 2 per layer, to every party
    assert max(r["bytes"] for r in rows) <= limit
    files = sorted((tmp_path / "ledger.sqlite.releases" / "s1").iterdir())
    assert [f.name for f in files] == ["r0-l1.ciphertext", "r0-l1.frames", "r0-l2.ciphertext", "r0-l2.frames"]
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in files)
    # a reader of the ledger (ledger show, the audit page) sees each release's payload as one message would hold it
    from secure_collab.ledger import _unpack_frames, read_ledger

    for row in read_ledger(cfg.paths.ledger, ("releases",))["releases"]:
        ciphertext, signature = _unpack_frames(row["frames"])
        assert len(ciphertext) == (files[0].parent / f"r0-l{row['layer']}.ciphertext").stat().st_size > limit
        assert len(signature) == 64


def test_a_coordinator_that_alters_a_release_part_is_caught_and_nothing_is_applied(tmp_path, monkeypatch):
    """The coordinator builds the parts it sends from its file: one that alters a byte (here, of every release's first
    part) sends well-formed messages, but the assembled ciphertext's sha256 is not the one the solver signed: every
    party refuses the release and applies nothing."""
    import coordinator.handlers as handlers

    read_parts = handlers.read_parts

    def altering(path, size):
        for i, part in enumerate(read_parts(path, size)):
            yield (bytes([part[0] ^ 1]) + part[1:]) if i == 0 else part

    monkeypatch.setattr(handlers, "read_parts", altering)
    cfg = make_config(tmp_path, mode="shares", d_k=24, d_v=64, chunk_values=32, network={"max_message_bytes": 8192})
    run = run_session(cfg, scheme=get_scheme("shares"))
    assert not run.outcome.ok
    for name, result in run.parties.items():
        assert not result.ok and result.applied == {}, name
        assert "parts are missing, or do not match the signed sha256" in result.reason, result.reason
    assert all(not engine.w[layer].any() for engine in run.engines.values() for layer in cfg.session.layers)
