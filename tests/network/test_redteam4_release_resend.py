"""Red-team finding (streaming review, 2): every welcome re-read each stored release part from disk into fresh
buffers, so a party that reconnects again and again with ``applied=[]`` and never reads pinned a new copy of every
release per welcome in libzmq's queues: the coordinator's memory grew without bound. The parts are now served
zero-copy from one read-only map of each release file, shared by every re-send."""

from __future__ import annotations

from network_doubles import make_config, run_session

from coordinator.server import Coordinator
from secure_collab.ledger import Ledger
from secure_collab.protection import get_scheme


def _base(frame: object) -> object:
    """The object that owns a frame's memory (a bytes object owns itself; a view names what it views)."""
    view = memoryview(frame)  # type: ignore[arg-type]
    return view.obj


def test_welcomes_of_a_party_that_never_reads_share_one_copy_of_each_release(tmp_path):
    limit = 8192
    cfg = make_config(tmp_path, mode="shares", d_k=24, d_v=64, chunk_values=32, network={"max_message_bytes": limit})
    run = run_session(cfg, scheme=get_scheme("shares"))
    assert run.outcome.ok, run.outcome.reason
    with Ledger(cfg.paths.ledger) as ledger:
        state = ledger.resume_state(cfg.session.id)
    assert state is not None and all(r.ciphertext is not None for r in state.releases.values())

    # a coordinator holding those releases (as after a restart), welcoming a party that says it applied nothing,
    # over and over (each HELLO of a reconnect); what it hands zmq for each welcome is recorded
    coordinator = Coordinator(cfg, get_scheme("shares"))
    try:
        coordinator.releases = dict(state.releases)
        coordinator.public = state.setup_public
        coordinator.routes["a"] = b"a-route"
        coordinator.holdings["a"] = (True, frozenset())
        sent: list[list[tuple[str, list]]] = []

        def record(name, route, frames, mtype, where):
            sent[-1].append((mtype, list(frames)))

        coordinator._send_frames = record  # type: ignore[method-assign]
        for _ in range(4):
            sent.append([])
            coordinator._welcome("a")
    finally:
        coordinator.ctx.term()
    parts = [[frames[1] for mtype, frames in welcome if mtype == "release_part"] for welcome in sent]
    assert all(len(p) == len(parts[0]) >= 4 for p in parts)  # at least 2 parts per layer, each welcome
    whole = sum(len(f) for f in parts[0])
    assert whole > 2 * limit
    # every welcome's part frames view the same memory: one copy of each release, whatever the number of welcomes
    bases = [{id(_base(f)) for f in p} for p in parts]
    assert all(b == bases[0] for b in bases), "each welcome built new buffers for the release parts"
    assert len(bases[0]) <= len(coordinator.releases)  # one shared buffer per release file
    for p in parts[1:]:
        for a, b in zip(parts[0], p, strict=True):
            assert bytes(a) == bytes(b)


def test_a_view_of_a_release_map_goes_to_zmq_without_a_copy(tmp_path):
    """pyzmq copies a frame below its copy threshold even with copy=False: the coordinator hands zmq a Frame over
    the map itself, so what a queue holds is a reference to the one map."""
    import zmq

    from secure_collab.ledger import mapped

    path = tmp_path / "release.ciphertext"
    path.write_bytes(bytes(range(256)) * 64)
    view = mapped(path)[:4096]
    assert mapped(path).obj is view.obj  # one map per file
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://t")
        b.connect("inproc://t")
        coordinator = Coordinator.__new__(Coordinator)
        coordinator.sock = a
        coordinator.s = type("S", (), {"id": "s1"})()
        coordinator.ledger = type("L", (), {"message": staticmethod(lambda *a, **k: None)})()
        coordinator.sending = []
        seen = []
        real = a.send_multipart
        a.send_multipart = lambda frames, **k: (seen.extend(frames), real(frames, **k))  # type: ignore[method-assign]
        coordinator._send_frames("p", b"hdr", [b"h", view], "release_part", {})
        assert isinstance(seen[-1], zmq.Frame) and bytes(b.recv_multipart()[-1]) == bytes(view)
        assert [whole for _, whole in coordinator.sending] == [view.obj]  # its pages are dropped once zmq took it
        a.close(0)
        b.close(0)
    finally:
        ctx.term()
