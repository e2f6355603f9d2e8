"""Red team 3 (after issue 18, finding 4): the solver's memory bound holds per step, not per message.

The fix checks each AGGREGATE chunk on arrival and holds one step, and docs/threat-model.md states

    peak RSS − idle RSS ≤ S_step + (Q + 2) · M + 16 MiB.

But every chunk that passes ``check_aggregate`` is also recorded in ``SolverResult.received`` (round, layer,
statistic, chunk and the *party tuple*, decoded afresh from each message), and that list is never trimmed; a
replaced incomplete step also writes a warning line to the solver's log each time. A modified coordinator sends
the real solver process *valid-sized* one-value N chunks, alternating between two steps (each replaces the
other's hand-off, so nothing is ever complete or refused), each listing all 48 roster parties with long names:
every message adds ~5 KB of Python objects that stay for the life of the process (and ~150 B of log). 6,000
such messages (about 12 s, 3 MB on the wire) grow the solver by ~30 MiB, past the documented bound (~16.6 MiB
here); the growth is linear in the number of messages, so a coordinator can exhaust the solver at its leisure.

Fix: keep no per-message record (or a bounded one: counts, the last step's chunks), and rate-limit or summarise
the "dropped the incomplete hand-off" log line as the coordinator's ledger does (max_refusal_rows).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import zmq
from network_doubles import HERE, ROOT, make_config
from test_net_auth import FakeCoordinator
from test_redteam_solver_memory import _status_kb, growth_bound

from secure_collab.protection import StatContext, _wire, get_scheme, integrity
from secure_collab.protection._primitives import SIGNATURE_BYTES
from secure_collab.protection.scheme import SEALED_SEED_BYTES
from secure_collab.protocol.messages import Message, MsgType
from secure_collab.protocol.statistics import chunk_bounds

MiB = 1 << 20
PARTIES = tuple(f"p{i:02d}" + "x" * 29 for i in range(48))  # 32-character names, the longest allowed
MESSAGES = 6000


def test_redteam3_valid_chunks_alternating_between_two_steps_grow_the_solver_without_bound(tmp_path):
    net = {"max_message_bytes": 1 << 16, "recv_buffer_bytes": 1 << 17}
    cfg = make_config(tmp_path, PARTIES, layers=[1], rounds=2, network=net)
    s = cfg.session
    ctx = zmq.Context()
    fake = FakeCoordinator(cfg, ctx)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), OMP_NUM_THREADS="1")
    log = open(tmp_path / "solver.log", "w")  # the solver's log goes to a file: a pipe would fill and block it
    solver = subprocess.Popen([sys.executable, str(HERE / "solver_process.py"), str(next(tmp_path.glob("config-*")))],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        route, hello = fake.recv(MsgType.HELLO)
        pub = get_scheme("plain")._public(bytes(hello.frames[0]))
        idle = _status_kb(solver.pid, "VmRSS") * 1024
        tags = integrity.tag_values(pub.meta["limb_bits"])
        extras = (bytes(SEALED_SEED_BYTES), bytes(SIGNATURE_BYTES)) * len(PARTIES)
        count = chunk_bounds(s.n_values("N"), s.chunk_values)[0][1]
        chunks = []
        for round_ in range(2):  # round 0's and round 1's (one-layer) steps: an honest header and sizes for each
            actx = StatContext(s.id, round_, 1, "N", "", 0, 0)
            header = _wire.aggregate_header("plain", actx, count, pub.meta["frame_values"], pub, PARTIES)
            body = {"attempt": 0, "chunk": 0, "n_chunks": s.n_chunks("N"), "offset": 0, "count": count,
                    "payload": header, "parties": list(PARTIES), "n_values": s.n_values("N")}
            chunks.append((round_, body, (bytes((count + tags) * 8), *extras)))
        for i in range(MESSAGES):
            round_, body, frames = chunks[i % 2]
            fake.send(route, Message(MsgType.AGGREGATE, s.id, round_, 1, "N", "coordinator", fake.seq.next(),
                                     cfg.digest, body, frames))
        # a probe the solver answers at once: once its answer is in, every chunk before it was handled
        fake.send(route, Message(MsgType.AGGREGATE, "other", 0, 1, "G", "coordinator", fake.seq.next(),
                                 cfg.digest, body, extras))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reason = fake.recv(MsgType.ERROR)[1].body["reason"]
            assert "wrong session" in reason, f"a chunk was refused, not kept: {reason[:200]}"
            break
        peak = _status_kb(solver.pid, "VmHWM") * 1024
        fake.send(route, fake.msg(MsgType.END, body={"ok": False, "reason": "red team done"}))
        solver.communicate(timeout=60)
    finally:
        if solver.poll() is None:
            solver.kill()
            solver.communicate()
        log.close()
        fake.sock.close(linger=0)
        fake.auth.stop()
        ctx.term()
    bound = growth_bound(cfg, pub)
    logged = os.path.getsize(tmp_path / "solver.log")
    print(f"solver RSS idle {idle / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB (+{(peak - idle) / MiB:.1f}); bound "
          f"idle + {bound / MiB:.1f} MiB; log {logged / MiB:.2f} MiB for {MESSAGES} messages")
    assert peak - idle <= bound, (f"{MESSAGES} valid-sized chunks alternating between two steps grew the solver by "
                                  f"{(peak - idle) / MiB:.1f} MiB, over the bound {bound / MiB:.1f} MiB")
