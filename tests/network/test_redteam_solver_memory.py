"""Red team (issue 18, finding 4): a coordinator that exhausts the solver's memory with aggregate chunks.

A modified coordinator (the fake of test_net_auth, holding the coordinator's key) sends the real solver process
one 8 MiB AGGREGATE chunk for each of 32 steps and never completes one. Every header field is what an honest
hand-off carries; only the data frame is oversized. The solver must refuse each chunk on arrival (an ERROR to the
coordinator, a line in its log), hold at most one step, and stay within the bound of docs/threat-model.md:

    peak RSS − idle RSS ≤ S_step + (Q + 2) · M + 16 MiB

S_step: one step's protected aggregate bytes at max_parties; M = network.max_message_bytes; Q = the solver's
receive queue in messages, max(1, min(hwm, recv_buffer_bytes // M)); 2 · M for the message being handled (libzmq's
copy and Python's); 16 MiB for the allocator and the interpreter.
"""

from __future__ import annotations

import json
import time

import zmq
from network_doubles import make_config, solver_process
from test_net_auth import FakeCoordinator

from secure_collab.config import STATISTICS
from secure_collab.protection import StatContext, _wire, get_scheme, integrity
from secure_collab.protection._primitives import SIGNATURE_BYTES
from secure_collab.protection.scheme import SEALED_SEED_BYTES
from secure_collab.protocol.messages import Message, MsgType
from secure_collab.protocol.statistics import chunk_bounds

MiB = 1 << 20
STEPS, CHUNK_BYTES = 32, 8 * MiB


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def growth_bound(cfg, pub) -> int:
    """docs/threat-model.md's bound on the solver's growth over idle: S_step + (Q + 2)·M + 16 MiB, with Q the solver's
    receive queue in messages (RCVHWM = max(1, min(hwm, recv_buffer_bytes // max_message_bytes)))."""
    n = cfg.network
    queue = max(1, min(n.hwm, n.recv_buffer_bytes // n.max_message_bytes))
    return _step_bytes(cfg, pub) + (queue + 2) * n.max_message_bytes + 16 * MiB


def _step_bytes(cfg, pub) -> int:
    """S_step for a plain/shares session of one layer per step: every chunk of G, B and N, its values and tag
    limbs as uint64, and a sealed seed and a signature per party."""
    s, tags = cfg.session, integrity.tag_values(pub.meta["limb_bits"])
    parties = len(cfg.roster.parties)
    return sum((count + tags) * 8 + parties * (SEALED_SEED_BYTES + SIGNATURE_BYTES)
               for st in STATISTICS for _, count in chunk_bounds(s.n_values(st), s.chunk_values))


def test_redteam_oversized_chunks_of_many_steps_do_not_grow_the_solver(tmp_path):
    net = {"max_message_bytes": 9 * MiB, "recv_buffer_bytes": 18 * MiB}
    cfg = make_config(tmp_path, layers=[1], rounds=STEPS, network=net)
    s = cfg.session
    ctx = zmq.Context()
    fake = FakeCoordinator(cfg, ctx)
    solver = solver_process(next(tmp_path.glob("config-*.toml")))
    try:
        route, hello = fake.recv(MsgType.HELLO)  # sent after the setup: the solver is ready and idle
        pub = get_scheme("plain")._public(bytes(hello.frames[0]))
        idle = _status_kb(solver.pid, "VmRSS") * 1024
        extras = (bytes(SEALED_SEED_BYTES), bytes(SIGNATURE_BYTES)) * 2
        for round_ in range(STEPS):
            actx = StatContext(s.id, round_, 1, "G", "", 0, 0)
            count = chunk_bounds(s.n_values("G"), s.chunk_values)[0][1]
            header = _wire.aggregate_header("plain", actx, count, pub.meta["frame_values"], pub, ("a", "b"))
            body = {"attempt": 0, "chunk": 0, "n_chunks": s.n_chunks("G"), "offset": 0, "count": count,
                    "payload": header, "parties": ["a", "b"], "n_values": s.n_values("G")}
            fake.send(route, Message(MsgType.AGGREGATE, s.id, round_, 1, "G", "coordinator", fake.seq.next(),
                                     cfg.digest, body, (bytes(CHUNK_BYTES), *extras)))
        # a probe the solver answers at once: once its answer is in, every chunk before it was handled
        fake.send(route, Message(MsgType.AGGREGATE, "other", 0, 1, "G", "coordinator", fake.seq.next(),
                                 cfg.digest, body, extras))
        refusals = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reason = fake.recv(MsgType.ERROR)[1].body["reason"]
            if "wrong session" in reason:
                break
            refusals.append(reason)
        else:
            raise AssertionError(f"the solver never answered the probe; refusals: {refusals[:3]}")
        rss, peak = (_status_kb(solver.pid, f) * 1024 for f in ("VmRSS", "VmHWM"))
        fake.send(route, fake.msg(MsgType.END, body={"ok": False, "reason": "red team done"}))
        out, err = solver.communicate(timeout=60)
    finally:
        if solver.poll() is None:
            solver.kill()
            solver.communicate()
        fake.sock.close(linger=0)
        fake.auth.stop()
        ctx.term()
    bound = growth_bound(cfg, pub)
    print(f"solver RSS idle {idle / MiB:.1f} MiB, after the attack {rss / MiB:.1f} MiB, peak {peak / MiB:.1f} "
          f"MiB; bound idle + {bound / MiB:.1f} MiB")
    assert peak - idle <= bound, (f"{STEPS} chunks of {CHUNK_BYTES >> 20} MiB grew the solver from {idle / MiB:.0f} "
                                  f"to {peak / MiB:.0f} MiB (peak), over the bound idle + {bound / MiB:.0f} MiB")
    assert len(refusals) == STEPS and all("bytes" in r for r in refusals), refusals[:3]
    assert err.count("refused a message from the coordinator") >= STEPS  # and each is in its log
    assert json.loads(out)["releases"] == {}
