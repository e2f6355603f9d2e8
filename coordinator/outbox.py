"""What the coordinator still has to send one party's connection, paced: a release goes out a few parts at a time, the
next queued only once libzmq has taken the earlier ones (docs/network.md, "Streaming"). So no connection's queue holds
more than ``IN_FLIGHT`` release parts, whatever the session's releases, and the ROUTER's SNDHWM stays ``network.hwm``
for every peer, the solver's included (whose queue holds chunk sums, real memory, not views of a file)."""

from __future__ import annotations

import mmap
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from secure_collab.protocol.messages import Frame

IN_FLIGHT = 4  # release frames one connection may have with libzmq, not yet taken (encrypted into its own buffer)
POLL_S = 0.005  # the loop's shortest wait while frames are being taken (it backs off to a heartbeat when none are)

Outgoing = tuple[Sequence[Frame], str, dict[str, Any]]  # a message's frames, its type, its ledger columns


@dataclass
class Outbox:
    """One connection's paced messages: the iterators still to go (a release's parts are built as they are sent), the
    message pulled and not yet sent, and the tracked frames libzmq has not taken, each with the map it views (None:
    a view of bytes held in memory, an old ledger's inline release)."""

    route: bytes
    since: float  # when libzmq last took one of its frames, or frames were first handed to it after a pause
    queue: deque[Iterator[Outgoing]] = field(default_factory=deque)
    head: Outgoing | None = None
    flight: list[tuple[zmq.MessageTracker, mmap.mmap | None]] = field(default_factory=list)

    def add(self, messages: Iterable[Outgoing]) -> None:
        self.queue.append(iter(messages))

    def next(self) -> Outgoing | None:
        """The next message to send, if libzmq may have another (fewer than ``IN_FLIGHT`` frames not taken); it stays
        the head until ``sent``."""
        if len(self.flight) >= IN_FLIGHT:
            return None
        while self.head is None and self.queue:
            self.head = next(self.queue[0], None)
            if self.head is None:
                self.queue.popleft()
        return self.head

    def sent(self) -> None:
        self.head = None

    def taken(self, now: float) -> list[mmap.mmap]:
        """Forget the frames libzmq has taken; returns the maps they viewed (their pages can be dropped)."""
        pending, done = [], []
        for tracker, whole in self.flight:
            if tracker.done:
                if whole is not None:
                    done.append(whole)
            else:
                pending.append((tracker, whole))
        if len(pending) < len(self.flight):
            self.flight, self.since = pending, now
        return done

    @property
    def queued(self) -> bool:
        """Messages wait behind the ones with libzmq: anything else for this connection goes behind them, in order."""
        return self.head is not None or bool(self.queue)

    @property
    def empty(self) -> bool:
        return not self.queued and not self.flight
