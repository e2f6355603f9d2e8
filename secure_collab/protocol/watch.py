"""Say what happens to a connection to the coordinator: libzmq's socket monitor, read in a thread, as log lines.

A DEALER connects in the background and retries silently; this turns its events into what a site needs to
see: "cannot reach the coordinator at X (connection refused); retrying in 2 s, until 14:05:10", "connected",
"the coordinator refused this site's key", and a warning when nothing has connected after a few seconds
(a host that drops packets gives no event at all). Retries back off exponentially (``RECONNECT_IVL`` up to
``RECONNECT_IVL_MAX``, set here), and each new interval is logged once.
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
                 warn_after_s: float = 5.0) -> None:
        self.endpoint, self.log, self.warn_after_s = endpoint, logger, warn_after_s
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

    def _run(self) -> None:
        while not self._stop.is_set():
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
        if event == zmq.EVENT_CONNECT_RETRIED:
            if value != self._last_interval:  # one line per back-off step, not one per retry
                self._last_interval = value
                self._warned = True
                self.log.warning("cannot reach the coordinator at %s (connection refused or no route); retrying "
                                 "in %.2g s, until %s", self.endpoint, value / 1000, self.until)
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._last_interval = -1
            self.log.info("%s the coordinator at %s", "reconnected to" if self.ever_connected else "connected to",
                          self.endpoint)
            self.connected = self.ever_connected = True
        elif event == zmq.EVENT_DISCONNECTED and self.connected:
            self.connected = False
            self.log.warning("lost the connection to the coordinator at %s; reconnecting", self.endpoint)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.log.error("the coordinator at %s refused this site's key (ZAP status %s): is this site's "
                           "public key in the coordinator's roster?", self.endpoint, value)
        elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            self.log.error("the CURVE handshake with %s failed: the coordinator key in this site's roster may "
                           "not be the key the coordinator runs with", self.endpoint)
