"""coordinator/connections.py: which connection is a peer's route, and where it falls back when one closes."""

from __future__ import annotations

from coordinator.connections import MAX_CONNECTIONS, Connections


def test_only_a_welcome_makes_a_connection_the_route_and_a_closed_route_falls_back_to_the_latest_welcomed():
    c = Connections()
    old, new, junk = (c.see("c", r) for r in (b"old", b"new", b"junk"))
    assert old and new and junk and "c" not in c.routes  # seen, not welcomed: no route
    assert c.adopt("c", old) is None and c.routes["c"] == b"old"
    old.holdings = (True, frozenset({(0, 1)}))
    c.heard("c", old, old.holdings)
    assert c.adopt("c", new) == b"old" and c.routes["c"] == b"new"
    assert c.holdings["c"] == (False, frozenset())  # what the new connection's HELLO said, not the old one's
    assert c.see("c", b"old") is old  # a message of the older connection read now moves nothing
    assert c.routes["c"] == b"new" and c.others("c") == [b"old", b"junk"]  # END goes to every open one
    assert c.closed("c", b"junk") is None and c.routes["c"] == b"new"  # not the route: nothing moves
    back = c.closed("c", b"new")
    assert back is old and c.routes["c"] == b"old" and c.holdings["c"] == (True, frozenset({(0, 1)}))
    assert c.see("c", b"new") is None and c.is_closed("c", b"new")  # closed for good
    assert c.closed("c", b"old") is None and "c" not in c.routes  # no welcomed connection left: no route


def test_a_route_read_from_another_peer_is_a_closed_connection_of_the_first():
    c = Connections()
    c.adopt("a", c.see("a", b"r1"))  # type: ignore[arg-type]
    assert c.owner(b"r1") == "a"
    assert c.closed("a", b"r1") is None and "a" not in c.routes
    assert c.owner(b"r1") is None
    assert c.see("b", b"r1") is not None and c.owner(b"r1") == "b"  # b may take the id; a's closure stays a's
    assert c.is_closed("a", b"r1") and not c.is_closed("b", b"r1")


def test_connections_kept_per_peer_are_bounded_and_the_route_is_never_the_one_dropped():
    c = Connections()
    c.adopt("c", c.see("c", b"route"))  # type: ignore[arg-type]
    for i in range(3 * MAX_CONNECTIONS):
        c.see("c", f"r{i}".encode())
    kept = [r for r in (b"route", *(f"r{i}".encode() for i in range(3 * MAX_CONNECTIONS))) if c.owner(r) == "c"]
    assert len(kept) == MAX_CONNECTIONS and b"route" in kept and c.routes["c"] == b"route"
    c.forget("c")
    assert "c" not in c.routes and c.owner(b"route") is None


def test_a_party_welcomed_again_after_its_decision_gets_the_decision_not_a_new_tag_exchange(tmp_path):
    """A route that falls back (or a rejoin) after the round's DECISION was relayed: the DECISION went to a closed
    connection, and a party contributes to a tagged round only with it. The welcome sends it again (as received); a
    party not yet decided gets TAG_OPEN, as before."""
    from network_doubles import make_config

    from coordinator.server import Coordinator
    from coordinator.stages import TagPhase
    from secure_collab.protection import get_scheme

    cfg = make_config(tmp_path)
    coordinator = Coordinator(cfg, get_scheme(cfg.session.mode))
    try:
        coordinator.public = b"p"
        for name in ("b", "c"):
            coordinator.routes[name] = name.encode()
            coordinator.holdings[name] = (True, frozenset())
        coordinator.phase = TagPhase(0, frozenset({"b", "c"}), decided={"c"})
        decision = [b"decision header", b"sealed", b"signature"]
        coordinator.decisions["c"] = (0, decision)
        sent: list[tuple[str, str, list]] = []
        coordinator._send_frames = lambda name, route, frames, mtype, where, track=False: sent.append(  # type: ignore
            (name, mtype, list(frames)))
        coordinator._welcome("c")
        coordinator._welcome("b")
    finally:
        coordinator.ctx.term()
    assert [(n, t) for n, t, _ in sent] == [("c", "decision"), ("b", "tag-open")]
    assert sent[0][2] == decision


def test_peers_are_those_with_a_route_or_an_open_connection():
    c = Connections()
    c.adopt("a", c.see("a", b"a1"))  # type: ignore[arg-type]
    c.see("b", b"b1")
    c.adopt("d", c.see("d", b"d1"))  # type: ignore[arg-type]
    c.closed("d", b"d1")
    assert c.peers() == {"a", "b"}  # d's only connection closed: nothing can reach it


class _FakeSocket:
    """A ROUTER that knows which routes are closed (a send to one fails: Host unreachable) and records the rest."""

    def __init__(self, closed: set[bytes]) -> None:
        self.closed, self.sent = closed, []

    def send_multipart(self, frames, flags=0, copy=True):
        import zmq

        from secure_collab.protocol.messages import Message

        route = bytes(frames[0])
        if route in self.closed:
            raise zmq.ZMQError(zmq.EHOSTUNREACH)
        self.sent.append((route, Message.from_frames([bytes(f) for f in frames[1:]]).type.value))


def _coordinator(tmp_path, closed: set[bytes]):
    from network_doubles import make_config

    from coordinator.server import Coordinator
    from secure_collab.protection import get_scheme

    cfg = make_config(tmp_path)
    coordinator = Coordinator(cfg, get_scheme(cfg.session.mode))
    coordinator.public = b"p"
    coordinator.sock = _FakeSocket(closed)  # type: ignore[assignment]
    return coordinator


def test_end_reaches_the_connection_a_closing_route_falls_back_to_after_what_it_lacks_and_once(tmp_path):
    """Party c's route (C) and its welcomed connection before it (B) have closed; A, welcomed first, is open and
    lacks the setup. END to c must reach A after A's setup, once (an outside review found [end, setup, end])."""
    from secure_collab.ledger import Ledger
    from secure_collab.protocol.messages import MsgType

    coordinator = _coordinator(tmp_path, {b"B", b"C"})
    try:
        with Ledger(coordinator.cfg.paths.ledger) as ledger:
            coordinator.ledger = ledger
            for route, has_setup in ((b"A", False), (b"B", False), (b"C", True)):
                conn = coordinator.conns.see("c", route)
                assert conn is not None
                conn.holdings = (has_setup, frozenset())
                coordinator.conns.adopt("c", conn)
            coordinator.end = end = coordinator._msg(MsgType.END, body={"ok": True, "reason": "done"})
            coordinator._send_end("c", end)
            coordinator._welcome_fallen()
    finally:
        coordinator.ctx.term()
    assert coordinator.sock.sent == [(b"A", "setup"), (b"A", "end")]
    assert coordinator.routes["c"] == b"A" and not coordinator.fallen


def test_settle_waits_for_a_joined_party_whose_route_closed_and_a_closed_route_keeps_nothing(tmp_path):
    from collections import OrderedDict

    from secure_collab.ledger import Ledger

    coordinator = _coordinator(tmp_path, {b"C"})
    try:
        with Ledger(coordinator.cfg.paths.ledger) as ledger:
            coordinator.ledger = ledger
            coordinator.releases = {(0, 1): None}  # type: ignore[dict-item]  (only its key is read here)
            for name in ("a", "c"):
                conn = coordinator.conns.see(name, name.upper().encode())
                assert conn is not None
                coordinator.conns.adopt(name, conn)
            coordinator.acked.add(("a", 0, 1))
            coordinator.asked["c"] = OrderedDict({7: b"C", 8: b"other"})
            coordinator._connection_closed("c", b"C", "Host unreachable")
            assert "c" not in coordinator.routes  # no welcomed connection of c is left
            assert coordinator._awaited() == ["c"]  # but it joined and lacks the release: settle waits for it
            assert coordinator.asked["c"] == OrderedDict({8: b"other"})  # its answer will go to c's next route
    finally:
        coordinator.ctx.term()
