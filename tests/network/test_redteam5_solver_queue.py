"""Red-team finding (cmem review, 1): the merge raised the coordinator ROUTER's SNDHWM to ``network.hwm`` + every
release part of the session so a rejoining party's releases are not dropped. SNDHWM is a socket option: it applies to
every connection, the solver's included. What the coordinator queues to the solver are AGGREGATE messages, each one
chunk's running sum (2.1 MB in shares or plain, 8-17 MB in ckks), held in this process until libzmq sends it. A solver
that reads slower than the parties send (or stops reading) lets the coordinator queue ``hwm`` + parts x rounds x
layers chunk sums instead of ``hwm`` (docs/network.md, "Not bounded yet", still says ``network.hwm`` messages).

At Llama-3-8B's d_k 14,336 / d_v 4,096 a release is 449 parts: with 5 layers and 1 round that is 3,245 queued sums
(6.8 GB in shares) where it was 1,000 (2.1 GB); with 10 rounds 23,450, more than a whole step's sums, so the window
(``coordinator_memory_bytes``, 64 MiB) bounds nothing once the solver lags.

The test: the coordinator's own ROUTER (``transport.router`` with ``Coordinator._sndhwm()``, as ``run`` builds it),
a solver DEALER that does not read (RCVHWM 1; inproc, so no kernel buffer blurs the count), and chunk-sum-sized
AGGREGATE stand-ins sent through ``_send_frames`` as ``_hand_off`` does. Fails on main: about 2,066 are queued where
``hwm`` = 16 allows 16 (+1 in the reader's queue)."""

from __future__ import annotations

import zmq
from network_doubles import make_config

from coordinator.server import Coordinator
from secure_collab.protection import get_scheme
from secure_collab.protocol import transport


def test_the_queue_to_a_solver_that_does_not_read_stays_within_hwm(tmp_path):
    hwm = 16
    # a release of 4 MiB in parts of 4 KiB: 1,025 parts per release, 2 layers -> SNDHWM = 16 + 2,050
    cfg = make_config(tmp_path, mode="shares", d_k=1024, d_v=512, chunk_values=64, layers=[1, 2],
                      network={"max_message_bytes": 8192, "hwm": hwm})
    coordinator = Coordinator(cfg, get_scheme("shares"))
    ctx = coordinator.ctx
    outcomes: list[str] = []
    coordinator.ledger = type("L", (), {"message": staticmethod(
        lambda _s, _d, _n, _t, _h, _b, outcome, *a, **k: outcomes.append(outcome))})()
    solver = None
    try:
        coordinator.sock = transport.router(ctx, coordinator.keys, cfg.network, bind="inproc://coordinator",
                                            sndhwm=coordinator._sndhwm())
        solver = ctx.socket(zmq.DEALER)
        solver.setsockopt(zmq.IDENTITY, b"solver-route")
        solver.setsockopt(zmq.RCVHWM, 1)
        solver.connect("inproc://coordinator")
        solver.send(b"hello")
        assert coordinator.sock.poll(5000)
        coordinator.sock.recv_multipart()
        coordinator.routes["solver"] = b"solver-route"
        for i in range(hwm + 3000):  # chunk sums handed off while the solver does not read
            body = i.to_bytes(8, "big") * 128  # 1 KiB here; 2.1-17 MB each in a real session
            coordinator._send_frames("solver", b"solver-route", [b"aggregate-header", body], "aggregate", {})
        queued = outcomes.count("sent")
    finally:
        if solver is not None:
            solver.close(0)
        coordinator.sock.close(0)
        ctx.term()
    # a DEALER's pipe over inproc holds SNDHWM + the reader's RCVHWM messages
    assert queued <= hwm + 1, (f"the coordinator queued {queued} chunk sums to a solver that does not read "
                               f"(network.hwm = {hwm}; SNDHWM = {hwm} + every release part of the session)")
