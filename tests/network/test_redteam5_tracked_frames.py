"""Red-team finding (cmem review, 2): every release frame handed to zmq is tracked in ``Coordinator.sending`` until
libzmq has taken it, and while that list is not empty the loop polls every ``SENDING_POLL_S`` (5 ms) instead of
``heartbeat_s`` and walks the whole list on every pass (``_drop_sent_pages``). A frame queued to a party that never
reads is never taken, so:

- one party that joins and never reads keeps the coordinator's loop waking 200 times a second, walking every part
  queued to it, for the rest of the session (it used to sleep a heartbeat when idle);
- a party that rejoins on fresh connections, keeping the old ones open and never reading, adds every release part of
  the session to the list per welcome (one welcome per ``welcome_interval_s``), so the list and the walk done per
  message handled grow without bound with the session's length: at d_k 14,336 (449 parts per release, 5 layers)
  about 2,245 entries per welcome, 13,000 a minute;
- at exit ``run`` waits up to ``linger_ms`` for those frames, then closes the socket with ``linger_ms`` again: a peer
  that does not read delays the exit by twice what docs/threat-model.md ("Exit") allows.

Real CurveZMQ over TCP with the coordinator's ROUTER, ZAP authenticator and HELLO handling as ``run`` sets them up;
the party is a roster key that says it applied nothing and never reads (its own zmq context, as its own process
would be). All three fail on main."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import zmq
from network_doubles import RawClient, make_config
from zmq.auth.thread import ThreadAuthenticator

from coordinator.server import ZAP_DOMAIN, Coordinator, _RosterKeys
from secure_collab.ledger import StoredRelease, _pack_frames
from secure_collab.protection import get_scheme
from secure_collab.protocol import transport
from secure_collab.protocol.messages import MsgType

HELLO = {"role": "party", "public": False}
PART = 64 << 10  # release parts of 64 KiB (max_message_bytes = PART + 4096)
RELEASE = 4 << 20  # 64 parts


class _Quiet:
    def __getattr__(self, _name):
        return lambda *a, **k: None


@pytest.fixture
def served(tmp_path):
    """A coordinator past its setup holding one release of ``RELEASE`` bytes, listening as ``run`` does."""
    cfg = make_config(tmp_path, mode="shares", d_k=1024, d_v=512, chunk_values=64, layers=[1],
                      network={"max_message_bytes": PART + 4096, "heartbeat_s": 1.0, "welcome_burst": 1,
                               "welcome_interval_s": 0.05, "connects_per_minute": 600.0, "linger_ms": 1000})
    blob = os.urandom(RELEASE)
    (tmp_path / "r0-l1.ciphertext").write_bytes(blob)
    (tmp_path / "r0-l1.frames").write_bytes(_pack_frames([b"", b"s" * 64]))
    rel = StoredRelease(0, 1, 0, hashlib.sha256(blob).hexdigest(), ("a", "b"), b"header",
                        tmp_path / "r0-l1.frames", (), tmp_path / "r0-l1.ciphertext")
    coordinator = Coordinator(cfg, get_scheme("shares"))
    ctx = coordinator.ctx
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, _RosterKeys(cfg.roster.allowed_keys(), coordinator.guard.connects))
    coordinator.sock = transport.router(ctx, coordinator.keys, cfg.network, sndhwm=coordinator._sndhwm())
    coordinator.ledger = _Quiet()
    coordinator.watching = _Quiet()
    coordinator.public, coordinator.bundles, coordinator.public_sig = b"p" * 32, b"b" * 32, b"s" * 64
    coordinator.releases = {(0, 1): rel}
    clients: list[RawClient] = []
    peer_ctx = zmq.Context()  # the party's own process

    def deaf_join() -> None:
        """A new connection of party c: HELLO (applied nothing), then never read; the coordinator handles it."""
        client = RawClient(cfg, "c", peer_ctx, options={zmq.RCVHWM: 1, zmq.RCVBUF: 4096})
        clients.append(client)
        client.send(client.msg(MsgType.HELLO, body=HELLO).to_frames())
        time.sleep(0.06)  # a welcome per welcome_interval_s
        assert coordinator.sock.poll(10000), "no HELLO reached the coordinator"
        coordinator._receive()
        deadline, last = time.monotonic() + 5, None
        # libzmq takes what the kernel's buffers hold, then nothing more. (The frames themselves, not their count: a
        # connection whose frames are taken gets as many new ones, so the count alone stays the same while it takes.)
        while time.monotonic() < deadline and [t for t, _ in coordinator.sending] != last:
            last = [t for t, _ in coordinator.sending]
            time.sleep(0.2)
            coordinator._drop_sent_pages()

    try:
        yield coordinator, deaf_join, auth
    finally:
        for client in clients:
            client.close()
        peer_ctx.term()
        coordinator.sock.close(0)
        auth.stop()
        ctx.term()


def test_a_party_that_never_reads_does_not_keep_the_loop_spinning(served):
    coordinator, deaf_join, _ = served
    deaf_join()
    assert coordinator.sending, "parts are queued to the party that does not read"
    pumps, cpu, start = 0, time.process_time(), time.monotonic()
    while time.monotonic() - start < 2.0:  # nothing arrives: the loop should sleep a heartbeat (1 s) per pass
        coordinator._pump(start + 60)
        pumps += 1
    cpu = time.process_time() - cpu
    assert pumps <= 4, (f"{pumps} passes of the loop in 2 s with nothing to do ({cpu:.2f} s of CPU): "
                        f"{len(coordinator.sending)} frames queued to a party that never reads are walked each pass")


def test_rejoins_that_never_read_do_not_grow_the_tracked_frames_without_bound(served):
    coordinator, deaf_join, _ = served
    sizes = []
    for _ in range(6):
        deaf_join()
        sizes.append(len(coordinator.sending))
    parts = RELEASE // PART + 2
    assert sizes[-1] <= 2 * parts, (f"tracked frames after each rejoin: {sizes} (one release is {parts} frames): "
                                    "every welcome to a connection that never reads adds a release's worth")


def test_a_party_that_never_reads_delays_the_coordinator_s_exit_by_at_most_linger_ms(served):
    """docs/threat-model.md, Exit: a peer that does not read can delay the coordinator's exit by at most
    ``linger_ms``. ``run`` now first waits up to ``linger_ms`` for the tracked frames (``_drain_sending``: those queued
    to a party that never reads are never taken), then closes the socket with ``linger_ms``: twice as long.

    (Fixed with one deadline for both: ``run`` now closes through ``_close_socket``, which drains until the deadline
    and closes the socket lingering only for what is left of it, so this test calls that instead of the two steps.)"""
    coordinator, deaf_join, auth = served
    deaf_join()
    assert coordinator.sending
    linger = coordinator.cfg.network.linger_ms / 1000
    start = time.monotonic()
    # ``run``'s ExitStack, in its order: the wait for tracked frames and the socket's close, the authenticator, the
    # context
    coordinator._close_socket()
    auth.stop()
    coordinator.ctx.term()
    elapsed = time.monotonic() - start
    assert elapsed <= linger + 0.5, f"the coordinator took {elapsed:.1f} s to exit (linger_ms = {linger:.1f} s)"
