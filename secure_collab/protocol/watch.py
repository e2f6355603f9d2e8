"""Say what happens to a connection to the coordinator: libzmq's socket monitor, read in a thread, as log lines.

A DEALER connects in the background and retries silently; this turns its events into what a site needs to
see: "cannot reach the coordinator at X (connection refused); retrying in 2 s, until 14:05:10", "connected",
"the coordinator refused this site's key", and a warning when nothing has connected after a few seconds
(a host that drops packets gives no event at all). Retries back off exponentially (``RECONNECT_IVL`` up to
``RECONNECT_IVL_MAX``, set here), and each new interval is logged once; at the cap a line every ``repeat_s``
says it still retries, and until when.

Once the role was told the session ended (``session_ended()``), the coordinator closing its socket is expected:
nothing more is logged. A disconnection is reported only after ``grace_s`` for that reason: the END that
explains it may still be in the socket's queue when the monitor sees the connection go.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

RETRY_FIRST_MS = 250
RETRY_MAX_MS = 8000
_EVENTS = (zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_MONITOR_STOPPED)


def set_backoff(sock: zmq.SyncSocket) -> None:
    """Reconnect after 0.25 s, doubling to 8 s (reset by a successful connection)."""
    sock.setsockopt(zmq.RECONNECT_IVL, RETRY_FIRST_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RETRY_MAX_MS)


class ConnectionWatch:
    """Log the connection events of ``sock`` (a connected DEALER) until ``stop()``."""

    def __init__(self, sock: zmq.SyncSocket, endpoint: str, logger: logging.Logger, deadline_s: float,
                 warn_after_s: float = 5.0, repeat_s: float = 30.0, grace_s: float = 2.0,
                 idle_s: float | None = None) -> None:
        """``deadline_s``: how long the role tries to reach the coordinator at first; ``idle_s``: once it has, how
        long it goes on without a word from it (what the retry lines say after a lost connection)."""
        self.endpoint, self.log, self.warn_after_s = endpoint, logger, warn_after_s
        self.repeat_s, self.grace_s, self.idle_s = repeat_s, grace_s, idle_s
        self._ended = threading.Event()
        self._last_said = 0.0  # monotonic time of the last retry line
        self._pending: list[tuple[float, str, tuple[Any, ...]]] = []  # (due, format, args): warnings held back
        self.started = time.monotonic()
        self.until = (datetime.datetime.now() + datetime.timedelta(seconds=deadline_s)).strftime("%H:%M:%S")
        self.connected = self.ever_connected = False
        self._sock = sock
        self._monitor = sock.get_monitor_socket(_EVENTS)  # a PAIR socket: only the watch thread uses it
        self._stop = threading.Event()
        self._warned = False
        self._last_interval = -1
        self._thread = threading.Thread(target=self._run, name="connection-watch", daemon=True)

    def start(self) -> ConnectionWatch:
        self.log.info("connecting to the coordinator at %s", self.endpoint)
        self._thread.start()
        return self

    def session_ended(self) -> None:
        """The coordinator said the session is over: its socket closing next is no news, say nothing more."""
        self._ended.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        if self._thread.is_alive():  # never expected; leave the monitor to the context's teardown
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)

    def _warn_later(self, fmt: str, *args: Any) -> None:
        self._pending.append((time.monotonic() + self.grace_s, fmt, args))

    def _until(self) -> str:
        """Until when the role retries: the first deadline, or after a lost connection its idle limit (the first
        deadline has passed by then, and quoting it would say the role stops when it does not)."""
        if self.ever_connected and self.idle_s is not None:
            return f"for up to {self.idle_s:.0f} s since the coordinator was last heard"
        return f"until {self.until}"

    def _flush(self) -> None:
        if self._ended.is_set():
            self._pending.clear()
            return
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            _, fmt, args = self._pending.pop(0)
            self.log.warning(fmt, *args)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._flush()
            if self._monitor.poll(200, zmq.POLLIN):
                try:
                    event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
                except zmq.ZMQError:
                    continue
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                self._on(event["event"], int(event.get("value") or 0))
            elif not self.ever_connected and not self._warned and \
                    time.monotonic() - self.started > self.warn_after_s:
                self._warned = True
                self.log.warning("no connection to the coordinator at %s after %.0f s (host unreachable, port "
                                 "filtered, or the coordinator not started yet); still trying until %s",
                                 self.endpoint, self.warn_after_s, self.until)

    def _on(self, event: int, value: Any) -> None:
        if self._ended.is_set():  # the session is over: the coordinator going away is expected
            return
        # after a connection was lost, hold warnings back a moment: an END may be on its way
        say = self._warn_later if self.ever_connected else self.log.warning
        if event == zmq.EVENT_CONNECT_RETRIED:
            now = time.monotonic()
            if value != self._last_interval:  # one line per back-off step, not one per retry
                self._last_interval, self._last_said = value, now
                self._warned = True
                say("cannot reach the coordinator at %s (connection refused or no route); retrying in %.2g s, "
                    "%s", self.endpoint, value / 1000, self._until())
            elif now - self._last_said >= self.repeat_s:  # at the cap: still trying, say so now and then
                self._last_said = now
                say("still cannot reach the coordinator at %s; retrying every %.2g s %s (then this role "
                    "stops)", self.endpoint, value / 1000, self._until())
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._last_interval = -1
            self.log.info("%s the coordinator at %s", "reconnected to" if self.ever_connected else "connected to",
                          self.endpoint)
            self.connected = self.ever_connected = True
        elif event == zmq.EVENT_DISCONNECTED and self.connected:
            self.connected = False
            self._warn_later("lost the connection to the coordinator at %s; reconnecting", self.endpoint)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.log.error("the coordinator at %s refused this site's key (ZAP status %s): is this site's "
                           "public key in the coordinator's roster?", self.endpoint, value)
        elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            self.log.error("the CURVE handshake with %s failed: the coordinator key in this site's roster may "
                           "not be the key the coordinator runs with", self.endpoint)
