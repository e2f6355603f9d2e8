"""What one peer may cost the coordinator: message and byte budgets, refusal rows, welcomes, handshakes.

Budgets are token buckets per party, derived from what an honest party legitimately sends, times
``network.budget_headroom``:

- control traffic (HELLO heartbeats, ACKs, ERRORs): refilled at ``headroom / heartbeat_s`` messages per
  second of at most ``control_bytes`` each (an honest party sends one HELLO per silent heartbeat), with a
  burst of ``headroom * (16 + layers per step)`` messages;
- each step the party is asked for (a REQUEST, once per attempt) credits the step's CONTRIB messages and
  bytes (``HONEST_BYTES_PER_VALUE`` per value plus ``CHUNK_OVERHEAD`` per chunk), times the headroom;
- each re-sent release (a welcome) credits its ACK;
- each round's keyed-tag exchange a party is invited to (TAG_OPEN) credits its BLINDED and TAGS messages
  (``tag_slots`` group elements or tags each, plus ``CHUNK_OVERHEAD``);
- in a served release, opening the serving stage credits ``QUERY_WINDOW`` QUERY messages, and each ANSWER relayed
  to the party credits one more (times the headroom): a party that waits for its answers is never cut off, however
  fast it asks; one that does not is, after about ``QUERY_WINDOW × headroom`` unanswered queries.

A party that overdraws either bucket is cut off: its later messages are dropped unread (no ledger row each;
one row says it was cut off and one at the end counts what was dropped), its CURVE key is refused at the
next handshake, and it is excluded from the step. The solver is trusted and has no budget.

Refusals (and a party's ERROR reports) are recorded one by one up to ``max_refusal_rows`` per peer and
step, refusals answered with an ERROR; later ones are counted and written as one summary row. With one row
per accepted chunk and per acknowledged release, a party's ledger rows per step are bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from secure_collab.config import STATISTICS, Config
from secure_collab.protocol.query import QUERY_FRAME_BYTES
from secure_collab.protocol.tags import ELEMENT_BYTES

HONEST_BYTES_PER_VALUE = 64  # what config validation already allows a chunk (CKKS: about 32)
CHUNK_OVERHEAD = 16 << 10  # header, digests, payload header, MAC tags and signatures of one CONTRIB
QUERY_WINDOW = 4  # QUERY messages a party may have unanswered (served release)
QUERY_MESSAGE_BYTES = QUERY_FRAME_BYTES + 4096  # the fixed-size encrypted query and its header


@dataclass
class Bucket:
    """Token bucket: refills at ``rate`` per second up to ``burst``; credits may lift it above the burst."""

    rate: float
    burst: float
    level: float
    stamp: float

    def take(self, amount: float, now: float) -> bool:
        if self.level < self.burst:
            self.level = min(self.burst, self.level + self.rate * max(0.0, now - self.stamp))
        self.stamp = now
        if amount > self.level:
            return False
        self.level -= amount
        return True


@dataclass
class Dropped:
    messages: int = 0
    nbytes: int = 0


@dataclass
class _Peer:
    msgs: Bucket
    nbytes: Bucket
    welcomes: Bucket
    granted: set[tuple[int, tuple[int, ...], int]] = field(default_factory=set)  # steps credited
    tagged: set[tuple[str, int]] = field(default_factory=set)  # tag exchanges credited
    refused_rows: int = 0
    unrecorded: Dropped = field(default_factory=Dropped)  # refusals over the row limit


class PeerGuard:
    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.cfg, self.s, self.net, self.clock = config, config.session, config.network, clock
        self.headroom = self.net.budget_headroom
        steps = self.s.protocol_rounds * len(self.s.layers)
        # an honest control message: a HELLO listing every (round, layer) held is the largest
        self.control_bytes = 2048 + 16 * steps
        self.control_burst = self.headroom * (16 + len(self.s.layers))
        now = clock()
        self.peers = {name: self._peer(now) for name in config.roster.parties}
        self.cut_off: dict[str, Dropped] = {}
        self.connects = ConnectLimiter(self.net.connects_per_minute, clock)

    def _peer(self, now: float) -> _Peer:
        rate = self.headroom / self.net.heartbeat_s
        return _Peer(
            msgs=Bucket(rate, self.control_burst, self.control_burst, now),
            nbytes=Bucket(rate * self.control_bytes, self.control_burst * self.control_bytes,
                          self.control_burst * self.control_bytes, now),
            welcomes=Bucket(1.0 / self.net.welcome_interval_s, self.net.welcome_burst, self.net.welcome_burst, now),
        )

    # ---- budgets -------------------------------------------------------------------------------------
    def admit(self, name: str, nbytes: int) -> bool:
        """Charge one inbound message; False when the party is (or now becomes) cut off."""
        if name in self.cut_off:
            dropped = self.cut_off[name]
            dropped.messages, dropped.nbytes = dropped.messages + 1, dropped.nbytes + nbytes
            return False
        peer = self.peers.get(name)
        if peer is None:  # the solver: trusted, no budget
            return True
        now = self.clock()
        ok_msgs = peer.msgs.take(1, now)
        if ok_msgs and peer.nbytes.take(nbytes, now):
            return True
        return False

    def cut(self, name: str) -> str:
        """Cut a party off; returns the reason recorded once in the ledger."""
        peer = self.peers[name]
        self.cut_off[name] = Dropped()
        self.connects.block(self.cfg.roster.parties[name].curve)
        return (f"cut off: over its budget (messages {peer.msgs.level:.0f} left of burst {peer.msgs.burst:.0f}, "
                f"bytes {peer.nbytes.level:.0f}); later messages are dropped unread")

    def step_cost(self, layers: tuple[int, ...]) -> tuple[int, int]:
        """Messages and bytes an honest party sends for one step (all chunks of G and B of its layers)."""
        msgs = nbytes = 0
        for stat in STATISTICS:
            n, chunk_values = self.s.n_values(stat), self.s.chunk_values
            for off in range(0, n, chunk_values):
                msgs += 1
                nbytes += min(self.net.max_message_bytes, HONEST_BYTES_PER_VALUE * min(chunk_values, n - off)
                              + CHUNK_OVERHEAD)
        return msgs * len(layers), nbytes * len(layers)

    def grant_step(self, name: str, round_: int, layers: tuple[int, ...], attempt: int) -> None:
        peer = self.peers.get(name)
        if peer is None or (round_, layers, attempt) in peer.granted:
            return
        peer.granted.add((round_, layers, attempt))
        msgs, nbytes = self.step_cost(layers)
        peer.msgs.level += self.headroom * msgs
        peer.nbytes.level += self.headroom * nbytes

    def grant_tags(self, name: str, round_: int) -> None:
        """Credit the two messages of one round's tag exchange (at most once per party and round)."""
        peer = self.peers.get(name)
        if peer is None or ("tags", round_) in peer.tagged:
            return
        peer.tagged.add(("tags", round_))
        peer.msgs.level += self.headroom * 2
        peer.nbytes.level += self.headroom * 2 * (self.s.tag_slots * ELEMENT_BYTES + CHUNK_OVERHEAD)

    def grant_queries(self, name: str, count: int) -> None:
        """Credit ``count`` QUERY messages (served release: the window at the start, then one per answer)."""
        peer = self.peers.get(name)
        if peer is not None:
            peer.msgs.level += self.headroom * count
            peer.nbytes.level += self.headroom * count * QUERY_MESSAGE_BYTES

    def grant_acks(self, name: str, count: int) -> None:
        peer = self.peers.get(name)
        if peer is not None:
            peer.msgs.level += self.headroom * count
            peer.nbytes.level += self.headroom * count * self.control_bytes

    def may_welcome(self, name: str) -> bool:
        """Full welcomes (setup, missing releases, open request) are rate-limited per party."""
        peer = self.peers.get(name)
        return peer is None or peer.welcomes.take(1, self.clock())

    # ---- refusal rows ------------------------------------------------------------------------------------
    def record_refusal(self, name: str, nbytes: int) -> bool:
        """True: record and answer this refusal; False: count it for the step's summary row."""
        peer = self.peers.get(name)
        if peer is None:
            return True
        if peer.refused_rows < self.net.max_refusal_rows:
            peer.refused_rows += 1
            return True
        peer.unrecorded.messages += 1
        peer.unrecorded.nbytes += nbytes
        return False

    def new_step(self) -> Iterator[tuple[str, Dropped]]:
        """Start a new window of refusal rows; yields (party, refusals not recorded one by one) to summarise."""
        for name, peer in sorted(self.peers.items()):
            if peer.unrecorded.messages:
                yield name, peer.unrecorded
            peer.refused_rows, peer.unrecorded = 0, Dropped()


class ConnectLimiter:
    """CURVE handshakes admitted per roster key (called from the ZAP thread): a token bucket per key, and
    keys cut off for good."""

    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = per_minute / 60.0, max(1.0, per_minute), clock
        self._buckets: dict[bytes, Bucket] = {}
        self._blocked: set[bytes] = set()
        self._lock = threading.Lock()
        self.refused = 0

    def block(self, key: bytes) -> None:
        with self._lock:
            self._blocked.add(key)

    def admit(self, key: bytes) -> bool:
        with self._lock:
            now = self.clock()
            bucket = self._buckets.setdefault(key, Bucket(self.rate, self.burst, self.burst, now))
            ok = key not in self._blocked and bucket.take(1, now)
            self.refused += not ok
            return ok
