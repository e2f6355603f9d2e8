"""Hostile peers over real CurveZMQ sockets: out-of-range integers, floods, a peer that never reads, reconnect
storms. In each, the honest parties' session completes with the ΔW a single process computes without the
attacker (the positive control), and the coordinator's ledger stays bounded."""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import zmq
from network_doubles import RawClient, make_config, reference_deltas, run_session
from zmq.utils.monitor import recv_monitor_message

from secure_collab.ledger import Ledger
from secure_collab.protection import StatContext, get_scheme
from secure_collab.protocol.messages import Message, MsgType

SHORT = {"stage_timeout_s": 1.0}
HANDSHAKE = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
HELLO = {"role": "party", "public": False}


def _hostile(cfg, action, name="c"):
    """A raw authenticated party that joins (takes the setup and its first REQUEST), then runs
    ``action(client, request)``; returns what it returns."""

    def body():
        ctx = zmq.Context()
        client = RawClient(cfg, name, ctx)
        try:
            return action(client, client.join())
        finally:
            client.close()
            ctx.term()

    return body


def _assert_honest_result(cfg, run, honest=("a", "b")):
    assert run.outcome.ok, run.outcome.reason
    for key, delta in reference_deltas(cfg, list(honest)).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    assert all(parties == tuple(honest) for parties in run.outcome.included.values())


def _gated(cfg, name, gate):
    """An honest party whose statistics for layer 2 wait for ``gate``: it holds the session open."""
    from network_doubles import SyntheticEngine

    from parties import run_party

    class Gated(SyntheticEngine):
        def compute_statistics(self, round_, layer):
            if layer == 2:
                assert gate.wait(30)
            return super().compute_statistics(round_, layer)

    engine = Gated(name, cfg)
    return lambda: run_party(cfg, name, get_scheme(cfg.session.mode), engine.compute_statistics,
                             engine.apply_delta)


def _handshake(client):
    """The outcome of a RawClient's CURVE handshake (made with ``monitor=HANDSHAKE``). The handshake runs on
    connect; the HELLO is sent without waiting, since a refused connection leaves nothing to queue it on."""
    try:
        client.sock.send_multipart(client.msg(MsgType.HELLO, body=HELLO).to_frames(), flags=zmq.DONTWAIT)
    except zmq.Again:
        pass
    return recv_monitor_message(client.monitor)["event"]


def _rows(cfg, peer=None):
    with Ledger(cfg.paths.ledger) as ledger:
        return [r for r in ledger.rows("messages") if peer is None or r["peer"] == peer]


def _chunk(client, request, chunk=0):
    """A well-formed, signed chunk of G for layer 1 (values 1: within every bound)."""
    s, attempt = client.cfg.session, request.body["attempt"]
    count = min(s.chunk_values, s.n_values("G") - chunk * s.chunk_values)
    payload = client.protect(np.ones(count), StatContext(s.id, 0, 1, "G", client.name, chunk, attempt))
    body = {"attempt": attempt, "chunk": chunk, "n_chunks": s.n_chunks("G"),
            "offset": chunk * s.chunk_values, "count": count, "payload": dict(payload.header)}
    return client.msg(MsgType.CONTRIB, 0, 1, "G", body, payload.frames)


# ---- 1. integers out of range ------------------------------------------------------------------------------
def _overflowing(client, request):
    """Valid msgpack, authenticated sender, integers SQLite cannot hold: (label, frames)."""
    top, big = 2**64 - 1, 2**63
    good = _chunk(client, request)
    head = msgpack.unpackb(good.to_frames()[0])

    def edited(frames=good.frames, **changes):
        return [msgpack.packb({**head, "seq": client.seq.next(), **changes}), *frames]

    def body(**changes):
        return {**head["body"], **changes}

    return [
        ("hello seq", Message(MsgType.HELLO, client.cfg.session.id, sender="c", seq=big, config=client.cfg.digest,
                              body=HELLO).to_frames()),
        ("error seq", [msgpack.packb({**msgpack.unpackb(client.msg(MsgType.ERROR, body={
            "refused_seq": 1, "reason": "x"}).to_frames()[0]), "seq": big})]),
        ("error refused_seq", client.msg(MsgType.ERROR, body={"refused_seq": top, "reason": "x"}).to_frames()),
        ("ack seq", [msgpack.packb({**msgpack.unpackb(client.msg(MsgType.ACK, 0, 1, body={
            "ok": True, "reason": ""}).to_frames()[0]), "seq": big})]),
        ("round", edited(round=top)),
        ("layer", edited(layer=top)),
        ("attempt", edited(body=body(attempt=top))),
        ("chunk", edited(body=body(chunk=big))),
        ("offset", edited(body=body(offset=top))),
        ("count", edited(body=body(count=top))),
        ("payload n_values", edited(body=body(payload={**head["body"]["payload"], "n_values": top}))),
        ("negative", edited(round=-(2**63))),
    ]


def test_integer_overflow_headers_are_refused_and_the_session_completes(tmp_path):
    cfg = make_config(tmp_path, network=SHORT)

    def attack(client, request):
        cases = _overflowing(client, request)
        reasons = {}
        for label, frames in cases:
            client.send(frames)
            reasons[label] = client.recv(MsgType.ERROR).body["reason"]
        client.send(_chunk(client, request).to_frames())  # the coordinator still serves this party
        client.send(client.msg(MsgType.HELLO, body=HELLO).to_frames())
        time.sleep(0.3)
        return reasons

    run = run_session(cfg, ["a", "b"], extra={"c": _hostile(cfg, attack)})
    _assert_honest_result(cfg, run)
    reasons = run.extra["c"]
    assert len(reasons) == 12 and all("is outside" in r for r in reasons.values()), reasons
    rows = _rows(cfg, "c")
    assert sum(r["outcome"] == "refused" for r in rows) == 12
    accepted = [r for r in rows if r["outcome"] == "accepted" and r["type"] == "contrib"]
    assert len(accepted) == 1  # the well-formed chunk after the attack (then c left: the step went on without it)


# ---- 2. a flooding party ----------------------------------------------------------------------------------
def test_flooding_party_is_cut_off_and_the_others_complete(tmp_path):
    cfg = make_config(tmp_path, network={"stage_timeout_s": 10.0})
    flood = 3000
    gate = threading.Event()  # b holds layer 2 open until c has checked that its key is refused

    def attack(client, request):
        client.send(_chunk(client, request).to_frames())  # in the running sum: the step must drop it
        junk = [b"\xc1" * 64]
        for i in range(flood):  # as fast as the socket takes them; the session may end meanwhile
            frames = junk if i % 2 else client.msg(MsgType.HELLO, body=HELLO).to_frames()
            try:
                client.sock.send_multipart(frames, flags=zmq.DONTWAIT)
            except zmq.Again:
                break
        assert _wait(lambda: any(r["outcome"] == "cut off" for r in _rows(cfg, "c")), 20)
        # cut off for good: a fresh connection with the same key fails the CURVE handshake (ZAP 400)
        fresh = RawClient(cfg, "c", client.sock.context, monitor=HANDSHAKE)
        try:
            return _handshake(fresh)
        finally:
            gate.set()
            fresh.close()

    run = run_session(cfg, ["a"], extra={"b": _gated(cfg, "b", gate), "c": _hostile(cfg, attack)})
    _assert_honest_result(cfg, run)
    assert run.extra["c"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    rows = _rows(cfg, "c")
    cut = [i for i, r in enumerate(rows) if r["outcome"] == "cut off"]
    assert len(cut) == 1 and "budget" in rows[cut[0]]["reason"]
    after = rows[cut[0] + 1:]  # per-message rows stop at the cut-off: one row at the end counts the rest
    assert [r["outcome"] for r in after] == ["dropped"] and int(after[0]["reason"].split()[0]) >= 1
    assert len(rows) < 250
    with Ledger(cfg.paths.ledger) as ledger:
        events = [(r["layers"], r["attempt"], r["event"]) for r in ledger.rows("stages")]
    assert ("[1]", 0, "restart") in events  # c's chunk was in the sum: layer 1 collected again without it


def test_junk_from_a_party_adds_bounded_ledger_rows(tmp_path):
    """200 junk messages, each with a 60 kB header key (within max_message_bytes), added 12 MB to the ledger
    before (each reason quoted the header's keys); now reasons are capped and the party is cut off at its byte
    budget."""
    cfg = make_config(tmp_path, network=SHORT)

    def attack(client, request):
        header = msgpack.unpackb(client.msg(MsgType.HELLO, body=HELLO).to_frames()[0])
        for _ in range(200):
            junk = {**header, "seq": client.seq.next(), "x" * 60_000: 1}
            client.send([msgpack.packb(junk)])
        time.sleep(0.3)

    before = _ledger_bytes(cfg)
    run = run_session(cfg, ["a", "b"], extra={"c": _hostile(cfg, attack)})
    _assert_honest_result(cfg, run)
    rows = _rows(cfg, "c")
    assert max(len(r["reason"]) for r in rows) <= 600
    assert _ledger_bytes(cfg) - before < 1 << 20


def test_refusal_rows_per_step_are_capped_and_summarised(tmp_path):
    """Within its budget (a generous headroom here) a party's refusals are recorded one by one up to
    max_refusal_rows per step, then counted in one summary row."""
    cfg = make_config(tmp_path, network={**SHORT, "budget_headroom": 1e6, "max_refusal_rows": 10})

    def attack(client, request):
        for _ in range(200):
            client.send([b"\xc1"])
        answers = 0
        while client.sock.poll(500):
            answers += Message.from_frames(client.sock.recv_multipart()).type is MsgType.ERROR
        return answers

    run = run_session(cfg, ["a", "b"], extra={"c": _hostile(cfg, attack)})
    _assert_honest_result(cfg, run)
    assert run.extra["c"] == 10  # answered one by one up to the limit, then silently counted
    refused = [r for r in _rows(cfg, "c") if r["outcome"] == "refused"]
    assert len(refused) == 11 and refused[-1]["reason"].startswith("190 more refused messages or error reports")


def _ledger_bytes(cfg):
    paths = [cfg.paths.ledger, cfg.paths.ledger.with_name(cfg.paths.ledger.name + "-wal")]
    return sum(p.stat().st_size for p in paths if p.exists())


# ---- 3. a peer that never reads ----------------------------------------------------------------------------
def test_peer_that_never_reads_does_not_stall_the_others(tmp_path):
    """c joins and never reads: its queue (and the kernel's buffers) fill with 1 MiB releases. The coordinator
    used to block send_timeout_s on each later send to it; now it never waits on c and records what c did not get:
    release parts go out paced (at most a few in flight per connection), so what c never took is one "unsent" row
    when its queue is dropped (a stall of stage_timeout_s, or the session's end), besides any send refused for a
    full queue. The positive control is the same session without c."""
    def config(where):
        return make_config(where, layers=list(range(1, 9)), d_k=128, d_v=1024, chunk_values=1 << 16,
                           network={**SHORT, "join_timeout_s": 1.5, "max_message_bytes": 4 << 20, "hwm": 4,
                                    "send_timeout_s": 5.0, "linger_ms": 500})  # c's queue is not flushed at exit

    control_cfg = config(tmp_path / "control")
    control_run = run_session(control_cfg, ["a", "b"], timeout=120)
    _assert_honest_result(control_cfg, control_run)
    control = max(p.seconds for p in control_run.parties.values())

    cfg = config(tmp_path / "deaf")
    stop = threading.Event()

    def deaf():
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx, options={zmq.RCVHWM: 1, zmq.RCVBUF: 4096})
        try:
            client.send(client.msg(MsgType.HELLO, body=HELLO).to_frames())
            stop.wait(120)  # never reads
        finally:
            client.close()
            ctx.term()

    th = threading.Thread(target=deaf, daemon=True)
    th.start()
    try:
        run = run_session(cfg, ["a", "b"], timeout=120)
    finally:
        stop.set()
        th.join(10)
    elapsed = max(p.seconds for p in run.parties.values())  # until the honest parties had their END
    _assert_honest_result(cfg, run)
    unsent = [r for r in _rows(cfg, "c") if r["direction"] == "out" and r["outcome"] == "unsent"]
    assert unsent and all("queue is full" in r["reason"] or "the rest of its queue dropped" in r["reason"]
                          for r in unsent), unsent
    assert any(r["type"] == MsgType.RELEASE_PART.value for r in unsent), unsent  # the releases c never took
    # the old loop lost send_timeout_s per dropped send (here >= 10 s); c costs the others its stage timeout
    assert elapsed < control + cfg.network.stage_timeout_s + 2.0, (elapsed, control, len(unsent))


# ---- 4. a reconnect storm -----------------------------------------------------------------------------------
def test_reconnect_storm_resends_only_what_is_missing(tmp_path):
    """Party b holds layer 2 open (its statistics wait for a gate) while c rejoins 21 times after layer 1 was
    released: once saying what it holds, then claiming nothing."""
    cfg = make_config(tmp_path, layers=[1, 2, 3], network={**SHORT, "stage_timeout_s": 30.0, "join_timeout_s": 2.0,
                                                           "welcome_interval_s": 600.0})
    gate = threading.Event()

    def storm():
        ctx = zmq.Context()
        try:
            assert _wait(lambda: any(r["type"] == "release" for r in _rows(cfg)), 30)
            got = []
            # one rejoin that says what it holds: neither the setup nor the held release comes again
            client = RawClient(cfg, "c", ctx)
            client.send(client.msg(MsgType.HELLO, body={**HELLO, "setup": True, "applied": [[0, 1]]}).to_frames())
            got.append(_drain(client))
            client.close()
            for _ in range(20):  # then rejoins that claim nothing, as fast as the socket allows
                client = RawClient(cfg, "c", ctx)
                client.send(client.msg(MsgType.HELLO, body=HELLO).to_frames())
                got.append(_drain(client))
                client.close()
            return got
        finally:
            gate.set()
            ctx.term()

    run = run_session(cfg, ["a"], timeout=60, extra={"b": _gated(cfg, "b", gate), "c": storm})
    _assert_honest_result(cfg, run)
    got = run.extra["c"]
    assert got[0] == []  # it holds the setup and the one release so far
    welcomed = [g for g in got[1:] if "setup" in g]
    assert welcomed == [["setup", ("release", 1)]] * (cfg.network.welcome_burst - 1)  # the first used one welcome
    assert all(g == [("error", "too many re-joins")] for g in got[1:] if "setup" not in g)
    out = [r for r in _rows(cfg, "c") if r["direction"] == "out"]
    sent = [r for r in out if r["outcome"] == "sent"]
    assert sum(r["type"] == "setup" for r in sent) == cfg.network.welcome_burst - 1
    assert sum(r["type"] == "release" for r in sent) == cfg.network.welcome_burst - 1
    # the rest went to closed connections and failed at once: layers 2 and 3 to c's route (its last connection,
    # closed), and what its route's fall-back to its earlier welcomed connections, closed too, would have given them
    # (coordinator/connections.py): at most one more welcome per welcome granted
    failed = [r for r in out if r["outcome"] != "sent" and r["type"] in ("setup", "release")]
    assert all(r["reason"] == "Host unreachable" for r in failed), failed
    assert sum(r["type"] == "setup" for r in failed) <= cfg.network.welcome_burst - 1
    assert sum(r["type"] == "release" for r in failed) >= 2  # layers 2 and 3 went to c's route, closed


def _drain(client, wait=0.15):
    """Types (and release layers, error reasons) that arrive on this connection within ``wait`` seconds."""
    got = []
    while client.sock.poll(int(wait * 1000)):
        msg = Message.from_frames(client.sock.recv_multipart())
        if msg.type is MsgType.RELEASE:
            got.append(("release", msg.layer))
        elif msg.type is MsgType.ERROR:
            got.append(("error", "too many re-joins" if "re-joins" in msg.body["reason"] else msg.body["reason"]))
        else:
            got.append(msg.type.value)
    return got


def _wait(predicate, timeout):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_a_party_cut_off_before_a_restart_stays_out(tmp_path):
    """A coordinator process is SIGKILLed mid-session after cutting c off (here written into its ledger while
    it is down); the restarted one refuses c's key at the handshake, writes no row for it, and finishes the
    session with a and b."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from network_doubles import SyntheticEngine, Threads, closed_form_solve

    from parties import run_party
    from solver.server import run_solver

    here = Path(__file__).parent
    # join_timeout_s: how long the first coordinator waits for c (never there) before it starts with a and b, and how
    # long a and b, started beside its process, wait for it to listen: 1 s was less than its start on a loaded machine
    cfg = make_config(tmp_path, network={"stage_timeout_s": 30.0, "join_timeout_s": 5.0})
    config_path = next(tmp_path.glob("config-*.toml"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent.parent), str(here)]))

    def coordinator():
        return subprocess.Popen([sys.executable, str(here / "coordinator_process.py"), str(config_path)],
                                cwd=here.parent.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    gate, scheme, a = threading.Event(), get_scheme("plain"), SyntheticEngine("a", cfg)
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
    th.start("a", lambda: run_party(cfg, "a", scheme, a.compute_statistics, a.apply_delta))
    th.start("b", _gated(cfg, "b", gate))
    first = coordinator()
    try:
        assert _wait(lambda: any(r["type"] == "release" for r in _rows(cfg)), 30)  # layer 1 done, layer 2 open
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    with Ledger(cfg.paths.ledger) as ledger:
        ledger.message(cfg.session.id, "in", "c", "?", "", 1 << 20, "cut off", "over its budget")
    second = coordinator()
    try:
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx, monitor=HANDSHAKE)
        try:
            event = _handshake(client)
        finally:
            client.close()
            ctx.term()
        gate.set()
        out, err = second.communicate(timeout=60)
    finally:
        gate.set()
        if second.poll() is None:
            second.kill()
            second.communicate()
    th.join(30)
    assert second.returncode == 0, err
    assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert '"ok": true' in out
    for key, delta in reference_deltas(cfg, ["a", "b"]).items():
        np.testing.assert_allclose(th.results["solver"].releases[key], delta, rtol=1e-12, atol=1e-12)
    assert [r["outcome"] for r in _rows(cfg, "c")] == ["cut off"]  # and no row after the restart
