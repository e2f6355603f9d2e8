"""Each peer's connections as the coordinator's ROUTER sees them, and which one is the peer's route.

A peer (a party or the solver) may have several connections in a session: libzmq's DEALER reconnects on its own, a
restarted party connects anew, and whoever holds a party's key may open more (the fuzz test's connections). The
coordinator reads its connections' queues in turn, so what a connection sent before it closed can be read long after
a newer one took over (two CI failures of test_net_fuzz; tests/network/test_redteam7_closed_connections.py). So:

- A connection becomes its peer's route only when a HELLO of it is welcomed, once per connection. Other messages are
  handled whatever connection they come on (a CONTRIB is its party's, signed) and move nothing; a welcomed
  connection's later HELLOs are heartbeats.
- A connection libzmq reports closed (a send to it fails: Host unreachable) stays closed: what is read of it later is
  refused unanswered, and it is never a route again. If it was its peer's route, the route falls back to the peer's
  most recently welcomed connection not known closed, which the coordinator welcomes again (it sends what that
  connection lacks); with none, the peer has no route until a HELLO on another connection is welcomed.
- A route read from another peer than the one it was seen from before (a peer may choose its routing id, and libzmq
  lets it take one whose connection has closed) means that earlier connection has closed: what was meant for the
  earlier peer never goes to the later one.
- At most ``MAX_CONNECTIONS`` are kept per peer (a new one replaces the oldest that is not the route) and
  ``MAX_CLOSED`` closed ones in all: memory is bounded whatever a peer opens (ZAP also limits its connection rate).

Routes are libzmq's routing ids. They are not ordered here: a peer may choose its own, and a refusal by order would
tell it where libzmq's counter stands.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MAX_CONNECTIONS = 64  # kept per peer
MAX_CLOSED = 4096  # closed connections remembered, in all

Holdings = tuple[bool, frozenset[tuple[int, int]]]  # what a party's HELLO says it holds: the setup, releases applied
NOTHING: Holdings = (False, frozenset())


@dataclass
class Connection:
    route: bytes
    last_seq: int = 0  # the highest sequence number read on it (one connection delivers in order)
    welcomed: int = 0  # the order in which its HELLO was welcomed (0: not welcomed)
    holdings: Holdings = NOTHING  # as its last HELLO said


@dataclass
class Connections:
    routes: dict[str, bytes] = field(default_factory=dict)  # peer -> the route its messages go to
    holdings: dict[str, Holdings] = field(default_factory=dict)  # peer -> what its route's last HELLO said it holds
    _peers: dict[str, OrderedDict[bytes, Connection]] = field(default_factory=dict)
    _closed: OrderedDict[tuple[str, bytes], None] = field(default_factory=OrderedDict)
    _owner: dict[bytes, str] = field(default_factory=dict)  # route -> the peer whose kept connection it is
    _welcomes: int = 0

    def see(self, name: str, route: bytes) -> Connection | None:
        """The connection a message was read on; None when libzmq has reported it closed."""
        if (name, route) in self._closed:
            return None
        conns = self._peers.setdefault(name, OrderedDict())
        conn = conns.get(route)
        if conn is None:
            conn = conns[route] = Connection(route)
            self._owner[route] = name
            if len(conns) > MAX_CONNECTIONS:
                oldest = next(r for r in conns if r != self.routes.get(name))
                del conns[oldest]
                self._owner.pop(oldest, None)
        return conn

    def owner(self, route: bytes) -> str | None:
        """The peer a kept connection with this route is of (None: none kept)."""
        return self._owner.get(route)

    def adopt(self, name: str, conn: Connection) -> bytes | None:
        """A HELLO of ``conn`` was welcomed: it is the peer's route. Returns the route it replaces (None: none)."""
        self._welcomes += 1
        conn.welcomed = self._welcomes
        previous = self.routes.get(name)
        self.routes[name] = conn.route
        self.holdings[name] = conn.holdings
        return previous if previous != conn.route else None

    def heard(self, name: str, conn: Connection, holdings: Holdings) -> None:
        """A HELLO of a welcomed ``conn`` (a heartbeat): what it says it holds now."""
        conn.holdings = holdings
        if self.routes.get(name) == conn.route:
            self.holdings[name] = holdings

    def closed(self, name: str, route: bytes) -> Connection | None:
        """libzmq reported ``route`` closed (a send to it failed). If it was the peer's route, the route falls back to
        the most recently welcomed connection not known closed, returned (to be welcomed again); else None."""
        self._closed[(name, route)] = None
        while len(self._closed) > MAX_CLOSED:
            self._closed.popitem(last=False)
        conns = self._peers.get(name, OrderedDict())
        if conns.pop(route, None) is not None:
            self._owner.pop(route, None)
        if self.routes.get(name) != route:
            return None
        del self.routes[name]
        welcomed = [c for c in conns.values() if c.welcomed]
        if not welcomed:
            return None
        back = max(welcomed, key=lambda c: c.welcomed)
        self.routes[name] = back.route
        self.holdings[name] = back.holdings
        return back

    def is_closed(self, name: str, route: bytes) -> bool:
        return (name, route) in self._closed

    def others(self, name: str) -> list[bytes]:
        """The peer's kept connections other than its route, not known closed (END goes to them too: a DEALER that
        reconnected on its own may not have said HELLO yet)."""
        route = self.routes.get(name)
        return [r for r in self._peers.get(name, {}) if r != route]

    def peers(self) -> set[str]:
        """Every peer with a route or a kept connection."""
        return set(self.routes) | {name for name, conns in self._peers.items() if conns}

    def forget(self, name: str) -> None:
        """The peer is cut off: no route, no connection kept."""
        self.routes.pop(name, None)
        for route in self._peers.pop(name, {}):
            self._owner.pop(route, None)
