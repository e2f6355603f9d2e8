"""The coordinator's whole-process memory (issue 22): the estimate its defaults are sized from
(``coordinator/memory.py``) and a release served in parts without keeping the release file's pages resident."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import zmq
from network_doubles import make_config

from coordinator.memory import FIXED_BYTES, footprint
from coordinator.server import Coordinator
from secure_collab.config import STATISTICS, NetworkConfig
from secure_collab.ledger import StoredRelease, _pack_frames
from secure_collab.protection import ProtectionParams, get_scheme
from secure_collab.protocol.messages import Message, MsgType
from secure_collab.protocol.release import RELEASE_PART_BYTES, part_bytes
from secure_collab.protocol.transport import router_rcvhwm

MB = 10**6
NAMES = tuple(chr(ord("a") + i) for i in range(10))


def _contrib_bytes(cfg) -> int:
    """One party's CONTRIB payload for the largest chunk of ``cfg``'s session, from the scheme's own bound."""
    s = cfg.session
    scheme = get_scheme(s.mode)
    recipients = {name: ident.sealing for name, ident in cfg.roster.parties.items()}
    keys = scheme.solver_setup(ProtectionParams(mode=s.mode, max_parties=len(recipients), bound=s.value_bound,
                                                min_parties=s.min_parties), recipients)
    return max(scheme.sum_bytes_bound(keys.public, min(s.chunk_values, s.n_values(st)), 1) for st in STATISTICS)


@pytest.mark.parametrize("mode", ["shares", "plain"])
def test_the_defaults_hold_the_coordinator_within_256_mb_at_10_parties_whatever_the_dimension(tmp_path, mode):
    """Llama-3-8B's d_k 14,336 / d_v 4,096 and SmolLM2's 1,536 / 576, 10 parties, the default network settings: the
    estimate is the same (statistics come a chunk at a time, releases a part at a time) and within 256 MB."""
    net = NetworkConfig()
    totals = []
    for d_k, d_v in ((14336, 4096), (1536, 576)):
        (tmp_path / f"{d_k}").mkdir()
        cfg = make_config(tmp_path / f"{d_k}", NAMES, keys_dir=tmp_path / "keys", mode=mode, d_k=d_k, d_v=d_v,
                          chunk_values=262144, value_bound=32.0, network={"max_message_bytes": net.max_message_bytes})
        est = footprint(net.coordinator_memory_bytes, len(NAMES), router_rcvhwm(net), _contrib_bytes(cfg),
                        part_bytes(net.max_message_bytes))
        totals.append(est.total)
        assert est.fixed == FIXED_BYTES and est.sums == net.coordinator_memory_bytes
        assert est.release <= 16 * MB  # a part per party, not a release per party
    assert totals[0] == totals[1] <= 256 * 2**20


def test_the_estimate_by_part():
    """Each part as documented: RCVHWM + 2 messages per connection (the solver's are release parts), one encrypted part
    per party and two more being encrypted."""
    part, contrib = 1 << 20, 2 << 20
    est = footprint(64 << 20, 10, 2, contrib, part)
    assert est.inbound == 10 * 4 * contrib + 4 * (part + 4096)
    assert est.release == 12 * (part + 4096)
    assert est.total == FIXED_BYTES + (64 << 20) + est.inbound + est.release
    assert footprint(64 << 20, 20, 2, contrib, part).inbound - est.inbound == 10 * 4 * contrib  # linear in parties


def test_release_parts_are_one_mib_whatever_the_message_limit():
    assert part_bytes(64 << 20) == RELEASE_PART_BYTES == 1 << 20
    assert part_bytes(8192) == 8192 - 4096 and part_bytes(100) == 1024


def _map_rss_kb(path: Path) -> int:
    """Resident kB of this process's maps of ``path`` (/proc/self/smaps)."""
    rss, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a map's first line
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                rss += int(head[1])
    return rss


def test_a_release_larger_than_the_window_is_served_intact_and_its_pages_do_not_stay_resident(tmp_path):
    """A 24 MiB release ciphertext (more than a test's window of sums, 16 MiB) sent to two parties in 1 MiB parts
    from its 0600 file's map: each party gets every byte as stored (the sha256 the solver signed), in order, then
    the RELEASE; once libzmq has taken the parts, no page of the file's map is resident in the coordinator."""
    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("needs Linux /proc/self/smaps")
    size = 24 << 20
    cfg = make_config(tmp_path, mode="shares", d_k=3072, d_v=1024, chunk_values=4096,
                      network={"max_message_bytes": 64 << 20, "coordinator_memory_bytes": 16 << 20})
    ciphertext = tmp_path / "r0-l1.ciphertext"
    blob = os.urandom(size)
    ciphertext.write_bytes(blob)
    frames_file = tmp_path / "r0-l1.frames"
    frames_file.write_bytes(_pack_frames([b"", b"s" * 64]))
    sha = hashlib.sha256(blob).hexdigest()
    del blob
    rel = StoredRelease(0, 1, 0, sha, ("a", "b"), b"header", frames_file, (), ciphertext)
    coordinator = Coordinator(cfg, get_scheme("shares"))
    ctx = coordinator.ctx
    receivers = {}
    try:
        coordinator.sock = ctx.socket(zmq.ROUTER)
        coordinator.sock.bind("inproc://coordinator")
        coordinator.ledger = type("L", (), {"message": staticmethod(lambda *a, **k: None)})()
        for name in ("a", "b"):
            sock = receivers[name] = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, name.encode())
            sock.connect("inproc://coordinator")
            coordinator.routes[name] = name.encode()
        sock_a = receivers["a"]
        sock_a.send(b"hello")  # the ROUTER learns the routes
        receivers["b"].send(b"hello")
        for _ in range(2):
            coordinator.sock.recv_multipart()
        coordinator._send_release(["a", "b"], rel)
        assert coordinator.sending, "the parts went to zmq as tracked views of the map"
        for name, sock in receivers.items():
            got, n = hashlib.sha256(), 0
            while True:
                while not sock.poll(10):  # the coordinator's loop: each reader's next parts as libzmq takes the last
                    coordinator._drop_sent_pages()
                frames = sock.recv_multipart(copy=False)
                if frames[0].bytes == b"header":  # the stored RELEASE, relayed as the solver sent it, comes last
                    assert [f.bytes for f in frames[1:]] == [b"", b"s" * 64]
                    break
                msg = Message.from_frames(frames)
                assert msg.type is MsgType.RELEASE_PART and msg.body["part"] == n and len(msg.frames[0]) <= 1 << 20
                got.update(msg.frames[0])
                n += 1
            assert n == size // (1 << 20) and got.hexdigest() == sha, name
            del msg, frames
        # libzmq frees each part once both readers dropped it, and pyzmq's garbage-collector thread (which needs the
        # GIL) then marks its tracker done: only then do its pages go. Wait for that with a real sleep, which lets that
        # thread run (``zmq.select`` with no sockets returns at once: a loop of it spins, holding the GIL), up to a
        # deadline generous enough for a loaded machine.
        deadline = time.monotonic() + 30
        while True:
            coordinator._drop_sent_pages()
            if not coordinator.sending or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert not coordinator.sending, f"{len(coordinator.sending)} release frames not taken by libzmq after 30 s"
        assert _map_rss_kb(ciphertext) == 0, "release pages stayed resident after they were sent"
    finally:
        for sock in receivers.values():
            sock.close(0)
        coordinator.sock.close(0)
        ctx.term()
