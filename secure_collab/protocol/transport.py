"""CurveZMQ sockets with every limit set, and send/receive of checked ``Message``s.

Only the role runtimes (coordinator, solver, party) call these; they own their sockets. Every socket has
CURVE keys, MAXMSGSIZE (libzmq drops a peer that sends a larger frame), send/receive high-water marks,
LINGER, and send/receive timeouts, so nothing blocks forever and closing never hangs. The coordinator's
ROUTER bounds what it buffers per connection in bytes (``router_rcvhwm``) and never blocks on a send.
"""

from __future__ import annotations

from typing import Protocol

import zmq

from secure_collab.errors import UserError
from secure_collab.keys import CurveKeyPair
from secure_collab.protocol.messages import Limits, Message
from secure_collab.protocol.watch import set_backoff


class NetworkConfig(Protocol):
    """The socket settings this module reads (``secure_collab.config.NetworkConfig`` has them). A protocol, not an
    import: config builds on protocol/, so protocol/ must not import config back."""

    @property
    def max_frames(self) -> int: ...

    @property
    def max_message_bytes(self) -> int: ...

    @property
    def recv_buffer_bytes(self) -> int: ...

    @property
    def hwm(self) -> int: ...

    @property
    def linger_ms(self) -> int: ...

    @property
    def send_timeout_s(self) -> float: ...

    @property
    def heartbeat_s(self) -> float: ...

    @property
    def coordinator_bind(self) -> str: ...

    @property
    def coordinator_endpoint(self) -> str: ...


class EndpointError(UserError, OSError):
    """An endpoint cannot be bound or parsed: port in use, address not on this host, malformed."""


def free_loopback_endpoint() -> str:
    """A tcp://127.0.0.1 endpoint on a port that was free a moment ago (for tests and the demo)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def limits_for(net: NetworkConfig) -> Limits:
    return Limits(max_frames=net.max_frames, max_header_bytes=256 << 10, max_total_bytes=net.max_message_bytes)


def router_rcvhwm(net: NetworkConfig) -> int:
    """Complete messages libzmq queues per connection at the coordinator, and at the solver from the coordinator:
    ``recv_buffer_bytes`` worth of messages of the largest allowed size (at least 1, at most ``hwm``)."""
    return max(1, min(net.hwm, net.recv_buffer_bytes // net.max_message_bytes))


def _common(sock: zmq.SyncSocket, own: CurveKeyPair, net: NetworkConfig) -> None:
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    # libzmq checks MAXMSGSIZE per frame; the whole-message limit is checked in Message.from_frames.
    sock.setsockopt(zmq.MAXMSGSIZE, net.max_message_bytes + (1 << 20))
    sock.setsockopt(zmq.SNDHWM, net.hwm)
    sock.setsockopt(zmq.RCVHWM, net.hwm)
    sock.setsockopt(zmq.LINGER, net.linger_ms)
    sock.setsockopt(zmq.SNDTIMEO, int(net.send_timeout_s * 1000))
    sock.setsockopt(zmq.RCVTIMEO, int(net.heartbeat_s * 1000))


def router(ctx: zmq.SyncContext, own: CurveKeyPair, net: NetworkConfig, bind: str | None = None,
           sndhwm: int | None = None) -> zmq.SyncSocket:
    """``sndhwm``: messages queued per peer (default ``network.hwm``); set before binding."""
    sock = ctx.socket(zmq.ROUTER)
    try:
        _common(sock, own, net)
        if sndhwm is not None:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.curve_server = True
        # bytes buffered per connection: RCVHWM complete messages of at most max_message_bytes, plus the one
        # being decoded and the kernel's socket buffer (libzmq bounds frames, not frames per message)
        sock.setsockopt(zmq.RCVHWM, router_rcvhwm(net))
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished or full peer raises (EHOSTUNREACH /
        # EAGAIN): the coordinator sends with DONTWAIT and records the drop instead of waiting
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler answering: nobody gets in
        sock.zap_domain = b"secure-collab"
        endpoint = bind or net.coordinator_bind
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            hint = " (another coordinator running? choose another port in [network] coordinator_bind)" \
                if exc.errno == zmq.EADDRINUSE else ""
            raise EndpointError(f"cannot listen on {endpoint}: {exc.strerror}{hint}") from None
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def dealer(ctx: zmq.SyncContext, own: CurveKeyPair, server_public: bytes, net: NetworkConfig,
           endpoint: str | None = None, rcvhwm: int | None = None) -> zmq.SyncSocket:
    """``rcvhwm``: complete messages libzmq may queue for us (default ``network.hwm``); set before connecting."""
    sock = ctx.socket(zmq.DEALER)
    try:
        _common(sock, own, net)
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        set_backoff(sock)
        sock.curve_serverkey = server_public
        try:
            sock.connect(endpoint or net.coordinator_endpoint)
        except zmq.ZMQError as exc:
            raise EndpointError(f"cannot connect to {endpoint or net.coordinator_endpoint}: {exc.strerror}") from None
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def send(sock: zmq.SyncSocket, msg: Message, route: bytes | None = None) -> int:
    """Send one message (prefixed with the routing id on a ROUTER); returns the bytes sent."""
    frames = msg.to_frames()
    sock.send_multipart([route, *frames] if route is not None else frames, copy=False)
    return sum(memoryview(f).nbytes for f in frames)


def recv_raw(sock: zmq.SyncSocket) -> list[zmq.Frame]:
    """Receive one multipart message as zmq.Frame objects (so User-Id can be read)."""
    return sock.recv_multipart(copy=False)
