"""What the coordinator process holds at most, part by part: the estimate its window and its defaults are set from
(docs/network.md, "Streaming", the coordinator's memory)."""

from __future__ import annotations

from dataclasses import dataclass

from secure_collab.protocol.release import PART_HEADROOM

# the process before any session data: the interpreter, numpy, pyzmq and libzmq with CurveZMQ, cryptography, SQLite
# (measured 78-85 MB of VmRSS when the first step opens, bench realsize), with room to spare
FIXED_BYTES = 88 << 20
IN_FLIGHT_MESSAGES = 2  # beyond RCVHWM per connection: the message libzmq is decrypting (its ciphertext and the
# plaintext it builds) and the one the loop is handling (its frames and their copy)


@dataclass(frozen=True)
class Footprint:
    """The coordinator's resident memory at most, in bytes, by part."""

    fixed: int  # the process itself
    sums: int  # the window of running sums (``network.coordinator_memory_bytes``)
    inbound: int  # statistics and release parts received and not yet added or written (libzmq's queues and more)
    release: int  # release parts being sent: one encrypted part per party connection, and the one being encrypted

    @property
    def total(self) -> int:
        return self.fixed + self.sums + self.inbound + self.release


def footprint(window_bytes: int, parties: int, rcvhwm: int, contrib_bytes: int, part_bytes: int) -> Footprint:
    """The most the coordinator holds with a window of ``window_bytes`` of running sums, ``parties`` parties each
    sending CONTRIBs of at most ``contrib_bytes`` (one chunk's payload), a ROUTER queueing ``rcvhwm`` complete
    messages per connection, and releases travelling in parts of ``part_bytes``. Neither the model's dimensions
    nor the size of a release appear: statistics arrive a chunk at a time and releases a part at a time (served from
    their files, each part's pages dropped once libzmq has encrypted it)."""
    per_connection = rcvhwm + IN_FLIGHT_MESSAGES
    inbound = parties * per_connection * contrib_bytes + per_connection * (part_bytes + PART_HEADROOM)  # + the solver
    release = (parties + 2) * (part_bytes + PART_HEADROOM)
    return Footprint(FIXED_BYTES, window_bytes, inbound, release)
