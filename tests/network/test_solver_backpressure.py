"""A solver that reads slower than the parties send back-pressures the parties, not the coordinator's memory.

Found measuring issue 22's real-size sessions (BENCHMARKS.md, "Real-size sessions"): at d_k 14,336 the coordinator
peaked at 420-495 MB against a 64 MiB window. A chunk's sum left the window the moment it was handed to the solver,
but it was still in this process, in libzmq's queue to the solver (up to ``network.hwm`` messages of 2.1-17 MB): a
solver that authenticates and spools each chunk more slowly than the parties send let that queue grow. Now a handed
sum counts in the window until libzmq has taken it (zmq trackers), so the parties' grant stops where the window does.

The test: the coordinator's own ROUTER and ``_send_frames`` as ``_hand_off`` calls it, a solver DEALER over inproc
(where libzmq takes a message only when the reader receives it, so "taken" is exact), and the step's window. Fails
before the change: the grant moved on with every hand-off, so all 40 chunks were handed to a solver that read none."""

from __future__ import annotations

import time

import zmq
from network_doubles import make_config

from coordinator.server import Coordinator
from coordinator.stages import Stage, Step
from secure_collab.protection import get_scheme
from secure_collab.protocol import transport
from secure_collab.protocol.messages import MsgType


def _wait_taken(step: Step, low: int, timeout: float = 5.0) -> bool:
    """Until the window's first chunk not taken is ``low``: pyzmq marks a tracker done from its garbage-collector
    thread, so give it real time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        step.taken()
        if step.low >= low:
            return True
        time.sleep(0.01)
    return False


def _connect_solver(coordinator: Coordinator, endpoint: str) -> zmq.Socket:
    """The coordinator's own ROUTER bound at ``endpoint`` and a solver DEALER (route ``solver-route``) joined to it."""
    coordinator.sock = transport.router(coordinator.ctx, coordinator.keys, coordinator.cfg.network, bind=endpoint,
                                        sndhwm=coordinator._sndhwm())
    solver = coordinator.ctx.socket(zmq.DEALER)
    solver.setsockopt(zmq.IDENTITY, b"solver-route")
    solver.connect(endpoint)
    solver.send(b"hello")
    assert coordinator.sock.poll(5000)
    coordinator.sock.recv_multipart()
    return solver


def test_sums_the_solver_has_not_taken_hold_the_window(tmp_path):
    cfg = make_config(tmp_path, mode="shares", d_k=64, d_v=32, chunk_values=64, layers=[1])
    coordinator = Coordinator(cfg, get_scheme("shares"))
    ctx = coordinator.ctx
    coordinator.ledger = type("L", (), {"message": staticmethod(lambda *a, **k: None)})()
    solver = None
    window = 4
    step = Step(0, (1,), 0, frozenset({"a", "b"}))
    step.open_window(cfg.session, window)
    assert len(step.order) >= 10 * window
    try:
        solver = _connect_solver(coordinator, "inproc://coordinator")
        coordinator.step = step

        sent = 0

        def hand_off_what_is_granted() -> None:
            nonlocal sent
            while sent < step.granted:  # every party's chunk is in: the coordinator hands each granted sum off
                body = sent.to_bytes(8, "big") * 4096  # 32 KiB: a chunk's sum (2.1-17 MB in a real session)
                trackers = coordinator._send_frames("solver", b"solver-route", [b"aggregate-header", body],
                                                    MsgType.AGGREGATE.value, {}, track=True)
                assert trackers, "a tracked hand-off returns its frames' trackers"
                step.handed_off(step.order[sent], trackers)
                sent += 1

        hand_off_what_is_granted()
        time.sleep(0.2)
        assert not step.taken()  # the solver read nothing: nothing moves
        assert sent == window, f"{sent} sums handed to a solver that read none; the window is {window}"
        assert step.granted == window and step.low == 0

        for _ in range(2):  # the solver takes two
            assert solver.poll(5000)
            solver.recv_multipart()
        assert _wait_taken(step, 2), "the window did not move after the solver took two sums"
        assert step.low == 2 and step.granted == window + 2
        hand_off_what_is_granted()
        assert sent == window + 2

        end = time.monotonic() + 30
        while sent < len(step.order) or step.unsent:  # a solver that reads: the step runs to its end
            assert time.monotonic() < end, "a solver that reads did not get the whole step"
            while solver.poll(0):
                solver.recv_multipart()
            _wait_taken(step, step.low + 1, 0.05)
            hand_off_what_is_granted()
        assert step.low == len(step.order) and not step.unsent
    finally:
        if solver is not None:
            solver.close(0)
        coordinator.sock.close(0)
        ctx.term()


def test_the_loop_regrants_when_the_solver_takes_and_aborts_when_it_takes_none(tmp_path):
    """The server's wiring: ``_pump`` notices the solver took sums and calls ``_regrant`` (without it every windowed
    step stalls at its first window); while sums wait, the collection's deadline follows the solver, not the parties;
    a solver that takes nothing for ``stage_timeout_s`` ends the session with that reason (re-collecting from the
    parties would only queue more sums behind the waiting ones)."""
    cfg = make_config(tmp_path, mode="shares", d_k=64, d_v=32, chunk_values=64, layers=[1])
    coordinator = Coordinator(cfg, get_scheme("shares"))
    ctx = coordinator.ctx
    coordinator.ledger = type("L", (), {"message": staticmethod(lambda *a, **k: None)})()
    solver = None
    step = Step(0, (1,), 0, frozenset({"a", "b"}))
    step.open_window(cfg.session, 3)
    regrants: list[int] = []
    coordinator._regrant = lambda s: regrants.append(s.granted)  # type: ignore[method-assign]
    try:
        solver = _connect_solver(coordinator, "inproc://coordinator2")
        coordinator.step, coordinator.stage = step, Stage.COLLECTING
        from coordinator.watching import WaitWatch

        coordinator.watching = WaitWatch(coordinator.sock, cfg.network.wait_log_s, coordinator.clock)
        t0 = coordinator.clock()
        for i in range(3):
            trackers = coordinator._send_frames("solver", b"solver-route", [b"h", i.to_bytes(8, "big") * 4096],
                                                MsgType.AGGREGATE.value, {}, track=True)
            step.handed_off(step.order[i], trackers, t0)
        step.deadline = t0 + 1.0
        timeout = cfg.network.stage_timeout_s
        assert coordinator._wait_until(step) == max(step.deadline, t0 + timeout)
        assert not coordinator._solver_stuck(step)

        assert solver.poll(5000)
        solver.recv_multipart()  # the solver takes one
        end = time.monotonic() + 5
        while not regrants and time.monotonic() < end:
            coordinator._pump(coordinator.clock() + 0.05)
        assert regrants == [4], "the loop did not move the window after the solver took a sum"
        assert step.solver_seen > t0

        real = coordinator.clock
        coordinator.clock = lambda: real() + timeout + 1  # type: ignore[method-assign]
        assert coordinator._solver_stuck(step)
        assert "the solver took none of the 2 chunk sums handed to it" in coordinator.abort_reason
    finally:
        if getattr(coordinator, "watching", None) is not None:
            coordinator.watching.close()
        if solver is not None:
            solver.close(0)
        coordinator.sock.close(0)
        ctx.term()
