"""Lower-severity findings of the streaming review: a party cut off or poisoned mid-stream held the window until
the stage timeout; a poisoned party's later chunks were still taken; a key whose sum a poisoned payload may have
half-updated could be handed to the solver; a hand-off dropped on the solver's full queue still counted as handed."""

from __future__ import annotations

import pytest
from network_doubles import make_config

from coordinator.stages import Step, validate_contrib
from secure_collab.protocol.messages import Message, MsgType, ProtocolError

STREAM = {"mode": "shares", "d_k": 24, "d_v": 16, "chunk_values": 32}


def _step(tmp_path, window: int = 2) -> tuple[Step, object]:
    cfg = make_config(tmp_path, **STREAM)
    step = Step(0, (1,), 0, frozenset({"a", "b", "c"}))
    step.open_window(cfg.session, window)
    return step, cfg


def _contrib(cfg, party: str, chunk: int) -> Message:
    s = cfg.session
    count = min(s.chunk_values, s.n_values("G") - chunk * s.chunk_values)
    body = {"attempt": 0, "chunk": chunk, "n_chunks": s.n_chunks("G"), "offset": chunk * s.chunk_values,
            "count": count, "payload": {}}
    return Message(MsgType.CONTRIB, s.id, 0, 1, "G", party, 1, cfg.digest, body, ())


def test_a_poisoned_party_s_later_chunks_are_refused(tmp_path):
    step, cfg = _step(tmp_path)
    assert validate_contrib(_contrib(cfg, "c", 0), "c", step, cfg.session) == (1, "G", 0)
    step.poisoned.add("c")
    with pytest.raises(ProtocolError, match="rejected in this attempt"):
        validate_contrib(_contrib(cfg, "c", 0), "c", step, cfg.session)


def test_the_wait_ends_once_every_live_party_sent_every_granted_chunk(tmp_path):
    step, _ = _step(tmp_path)
    first = set(step.order[:step.granted])
    step.accepted = {"a": set(first), "b": set(first)}
    assert not step.stalled(set())  # c is live and owes its chunks: wait
    assert step.stalled({"c"})  # c is cut off: a and b can do nothing more
    step.poisoned.add("c")
    assert step.stalled(set())
    step.accepted["b"] = set(step.order[:1])
    assert not step.stalled(set())  # b still owes a granted chunk


def test_only_a_party_missing_chunks_of_an_earlier_grant_is_left_out(tmp_path):
    step, _ = _step(tmp_path)
    grace = 1.0
    for p in "abc":
        step.granted_to(p, 0.0)  # chunks 0 and 1
    step.accepted = {"a": set(step.order[:2]), "b": set(step.order[:2]), "c": set(step.order[:3])}
    step.granted = 4
    for p in "abc":
        step.granted_to(p, 9.5)  # a grant just before the timeout: a and b are merely behind it
    assert step.kept_up(10.0, grace, set()) == ["a", "b", "c"]
    assert step.kept_up(11.0, grace, set()) == []  # a grace later, everyone missing granted chunks is out
    step.accepted["c"] = {step.order[1], step.order[2]}  # c withheld chunk 0, granted long ago
    assert step.kept_up(10.0, grace, set()) == ["a", "b"]
    assert step.kept_up(10.0, grace, {"b"}) == ["a"]


def test_a_hand_off_dropped_on_the_solver_s_full_queue_makes_the_step_stale(tmp_path):
    import zmq

    from coordinator.server import Coordinator

    step, cfg = _step(tmp_path)
    coordinator = Coordinator.__new__(Coordinator)
    coordinator.s, coordinator.step = cfg.session, step
    coordinator.ledger = type("L", (), {"message": staticmethod(lambda *a, **k: None)})()

    class Full:
        def send_multipart(self, *a, **k):
            raise zmq.Again()

    coordinator.sock = Full()
    coordinator._send_frames("solver", b"r", [b"h", b"x"], MsgType.AGGREGATE.value, {})
    assert step.stale


def test_a_party_that_held_chunks_past_the_grace_is_left_out_when_nobody_owes_an_old_grant(tmp_path):
    """The withholder repeats its trick before each moved deadline, up to the cap: nobody owes an old grant, so
    without more every party would be collected again, and stalled again, without end."""
    step, _ = _step(tmp_path)
    grace = 1.0
    for p in "abc":
        step.granted_to(p, 0.0)
    for p in "ab":
        for key in step.order[:2]:
            step.arrived(p, key, 0.1, grace)
    step.arrived("c", step.order[1], 0.1, grace)
    step.arrived("c", step.order[0], 5.9, grace)  # held until just before the cap
    assert step.late == {"c"}
    step.accepted = {"a": set(step.order[:2]), "b": set(step.order[:2]), "c": set(step.order[:3])}
    step.granted = 4
    for p in "abc":
        step.granted_to(p, 5.9)
    assert step.kept_up(6.0, grace, set()) == ["a", "b"]
