"""What a party's closed connections left in the coordinator's queue must not keep it from its releases or the end.

Found by two CI failures of test_net_fuzz (party c "coordinator unreachable: send timed out" after a and b completed,
the coordinator's rows for c ending in "unsent: Host unreachable"): the fuzzer's 20 connections of c are closed before
the honest c starts, but what they sent still waits in the coordinator's queue, and the coordinator reads its
connections' queues in turn. So messages of closed connections are read after the honest c's HELLO, interleaved with
its traffic; when any of them could make its connection c's route, what the coordinator sent c (the release, END) went
to a closed connection and was lost.

Here the coordinator stops reading (a gate, as a busy coordinator would), c opens 20 connections that each send
heartbeat HELLOs and ACKs and close once libzmq has delivered them, the honest c connects, and the coordinator reads
again: 8,000 messages of closed connections of c come in turn with the honest c's. The session must end for c with
every release applied and the reference ΔW. Before coordinator/connections.py, any message moved c's route to the
connection it came on: this failed 4 times in 4.
"""

from __future__ import annotations

import threading
import time

import zmq
from network_doubles import RawClient, SyntheticEngine, assert_extra_party_complete, make_config, run_session

from coordinator.server import Coordinator
from parties import run_party
from secure_collab.ledger import Ledger
from secure_collab.protection import get_scheme
from secure_collab.protocol.messages import MsgType

CLOSED, EACH = 20, 200  # connections of c closed with messages queued, heartbeat HELLO + ACK pairs each
READ_S = 0.0005


class GatedCoordinator(Coordinator):
    """Reads nothing while ``gate`` is clear (what peers send meanwhile waits in libzmq's queues), then a message every
    ``READ_S`` at most, as a coordinator on a busy core would: the closed connections' backlog lasts the session."""

    def __init__(self, *args, gate: threading.Event, **kw) -> None:
        super().__init__(*args, **kw)
        self.gate = gate

    def _receive(self) -> None:
        self.gate.wait()
        time.sleep(READ_S)
        super()._receive()


def test_closed_connections_queued_messages_do_not_take_the_party_s_route(tmp_path):
    cfg = make_config(tmp_path, network={"budget_headroom": 1e4, "welcome_interval_s": 0.05,
                                         "connects_per_minute": 6000.0})
    scheme = get_scheme(cfg.session.mode)
    engine = SyntheticEngine("c", cfg)
    gate = threading.Event()
    gate.set()
    delivered = [0]

    def c_after_closed_connections():
        ctx = zmq.Context()
        first = RawClient(cfg, "c", ctx)
        first.join()  # c is in the session: the first step waits for it
        first.close()
        gate.clear()  # the coordinator stops reading
        clients = [RawClient(cfg, "c", ctx) for _ in range(CLOSED)]
        for client in clients:
            for _ in range(EACH):
                client.send(client.msg(MsgType.HELLO, body={"role": "party", "public": False}).to_frames())
                client.send(client.msg(MsgType.ACK, 0, cfg.session.layers[0],
                                       body={"ok": True, "reason": ""}).to_frames())
                delivered[0] += 2
        for client in clients:
            client.sock.close(linger=20000)
        ctx.term()  # returns once libzmq delivered every message: they wait in the coordinator's queue now
        result: list = []
        honest = threading.Thread(target=lambda: result.append(
            run_party(cfg, "c", scheme, engine.compute_statistics, engine.apply_delta)), daemon=True)
        honest.start()
        time.sleep(1.0)  # the honest c connects and sends its HELLO while the coordinator still reads nothing
        gate.set()
        honest.join(60)
        return result[0] if result else None

    run = run_session(cfg, ["a", "b"], extra={"c": c_after_closed_connections}, timeout=90.0,
                      coordinator=lambda: GatedCoordinator(cfg, scheme, gate=gate).run())
    assert_extra_party_complete(cfg, run, "c", ["a", "b", "c"])
    with Ledger(cfg.paths.ledger) as ledger:
        rows = ledger.rows("messages")
    c_in = [r for r in rows if r["peer"] == "c" and r["direction"] == "in"]
    assert delivered[0] == 2 * CLOSED * EACH
    # the closed connections' messages were read (refused or accepted, or counted in a summary row)
    assert len(c_in) > CLOSED
