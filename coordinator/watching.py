"""What the coordinator says while it waits: whom, since when, what happens at the deadline, and which peer's
connection dropped.

The server loop calls ``WaitWatch.tick`` from every wait (``Coordinator._pump``) and ``seen`` for every message
it receives. A dropped connection is noticed through libzmq's socket monitor on the ROUTER: a DISCONNECTED
event carries the connection's file descriptor, and ``seen`` keeps which roster name last sent on which
descriptor (``zmq.SRCFD``). The monitor socket is read here, in the server's own thread, never in another.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

from coordinator.stages import Stage, Step, TagPhase
from secure_collab.config import SessionConfig

log = logging.getLogger("coordinator")


@dataclass(frozen=True)
class Waiting:
    """Whom a stage waits for and what happens to them at its deadline."""

    what: str  # "round 0 layer 3 statistics"
    names: tuple[str, ...]
    at_deadline: str  # the consequence, in words
    drops_expected: bool = False  # serving: parties query on connections of their own, which close after each run


def waiting_for(session: SessionConfig, stage: Stage, step: Step | None, phase: TagPhase | None,
                parties: set[str], active: set[str], cut_off: set[str], solver_ready: bool,
                querying: frozenset[str] = frozenset()) -> Waiting:
    """What the coordinator is waiting for in ``stage`` (its own state, passed in: nothing else is read;
    ``querying``: in a served release, the parties that may still ask queries)."""
    enough = f"if at least min_parties ({session.min_parties}) remain"
    if stage is Stage.JOINING:
        names = sorted(parties - active - cut_off) + ([] if solver_ready else ["solver"])
        return Waiting("peers to join", tuple(names),
                       f"the session starts with the parties that joined {enough} and the solver is there, "
                       "else it aborts")
    if stage is Stage.TAGGING and phase is not None:
        if phase.decide is None:
            return Waiting(f"round {phase.round} tags", tuple(sorted(phase.expected - phase.tagged - cut_off)),
                           f"the round goes on without them {enough}, else the session aborts")
        return Waiting(f"round {phase.round} tag decisions", ("solver",), "the session aborts")
    if stage is Stage.SERVING:
        return Waiting("queries to the served model", tuple(sorted(querying - cut_off)),
                       "serving ends and the session ends complete", drops_expected=True)
    if step is not None and step.stage is Stage.SOLVING:
        return Waiting(f"round {step.round} layers {','.join(map(str, step.layers))} release", ("solver",),
                       "the session aborts")
    if step is not None and step.stage is Stage.COLLECTING:
        owing = sorted(step.requested - cut_off - set(step.complete(session)))
        return Waiting(f"round {step.round} layer{'s' * (len(step.layers) > 1)} "
                       f"{','.join(map(str, step.layers))} statistics", tuple(owing),
                       f"the step goes on without them {enough}, else the session aborts")
    return Waiting("", (), "")


class WaitWatch:
    """Logs at most one line per ``interval_s`` while a stage waits, and each dropped connection at once."""

    def __init__(self, sock: zmq.SyncSocket, interval_s: float, clock: Callable[[], float]) -> None:
        self.interval_s, self.clock = interval_s, clock
        self._sock = sock
        self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.fds: dict[int, str] = {}  # connection file descriptor -> the roster name that last sent on it
        self.dropped: dict[str, str] = {}  # name -> wall time its connection dropped ("14:02:11")
        self.since: dict[str, str] = {}  # name -> wall time the current wait for it began
        self._key: tuple[str, float] | None = None  # (what, deadline) of the wait being watched
        self._last = clock()

    def seen(self, name: str, frame: zmq.Frame) -> None:
        """``name`` sent ``frame``: remember its connection; a dropped peer that sends again is back."""
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:
            return
        if isinstance(fd, int) and self.fds.get(fd) != name:
            self.fds[fd] = name
        if self.dropped.pop(name, None) is not None:
            log.info("%s reconnected", _who(name))

    def tick(self, waiting: Waiting, deadline: float) -> None:
        """Called from each wait: report drops, and every ``interval_s`` whom the wait is for."""
        self._drain(waiting, deadline)
        key = (waiting.what, deadline)
        if key != self._key:  # a new wait: start its clock, but keep the since of names it still waits for
            self._key, self._last = key, self.clock()
            now = _wall(0.0)
            self.since = {n: self.since.get(n, now) for n in waiting.names}
            return
        for n in waiting.names:
            self.since.setdefault(n, _wall(0.0))
        if not waiting.names or self.clock() - self._last < self.interval_s:
            return
        self._last = self.clock()
        who = ", ".join(f"{n} (since {self.since[n]}" + (f", connection dropped at {self.dropped[n]})"
                                                          if n in self.dropped else ")") for n in waiting.names)
        left = deadline - self.clock()
        log.info("still waiting for %s: %s; at %s (in %.0f s) %s", waiting.what, who, _wall(left), left,
                 waiting.at_deadline)

    def _drain(self, waiting: Waiting, deadline: float) -> None:
        while self._monitor.poll(0, zmq.POLLIN):
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.ZMQError:
                return
            name = self.fds.pop(int(event.get("value") or -1), None)
            if event["event"] != zmq.EVENT_DISCONNECTED or name is None:
                continue  # a connection that never sent a message (a refused handshake): nobody to name
            self.dropped[name] = _wall(0.0)
            if waiting.drops_expected:
                log.info("%s's connection closed", _who(name))
            elif name in waiting.names:
                log.warning("%s's connection dropped while waiting for %s; restarting it (the same command) "
                            "rejoins; else at %s %s", _who(name), waiting.what, _wall(deadline - self.clock()),
                            waiting.at_deadline)
            else:
                log.warning("%s's connection dropped; restarting it (the same command) rejoins", _who(name))

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)


def _who(name: str) -> str:
    return name if name == "solver" else f"party {name}"


def _wall(in_s: float) -> str:
    return (datetime.datetime.now() + datetime.timedelta(seconds=in_s)).strftime("%H:%M:%S")
