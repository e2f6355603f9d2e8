"""Red-team finding (streaming review, 1): at the stage timeout the coordinator kept only the parties level with
the newest chunk any party sent. A hostile party that withholds its lowest granted chunk (stalling the window)
until just before the deadline, then sends it together with the chunk that frees (protected in advance), was
the only party "kept up": the honest ones were left out and, below min_parties, the session aborted (two such
colluders remove the honest parties' edits). Now a new grant moves the deadline on (up to a cap) and at the
timeout only a party missing chunks granted at least a grace period ago is left out."""

from __future__ import annotations

import time

import numpy as np
import zmq
from network_doubles import RawClient, make_config, reference_deltas, run_session

from secure_collab.ledger import Ledger
from secure_collab.protection import StatContext
from secure_collab.protection.shares import SharesScheme
from secure_collab.protocol.messages import MsgType

STREAM = {"mode": "shares", "d_k": 24, "d_v": 16, "chunk_values": 32}
TWO_CHUNKS = 1600  # bytes of running sums: two chunks' sums over three parties (~615-770 bytes each)
TIMEOUT = 3.0
SLOW = 0.5  # seconds an honest party takes to protect a chunk past the first window (first attempt only)


class SlowFirstAttempt(SharesScheme):
    """Honest parties whose chunks take a while to protect (a real model's do): in the first attempt, those past
    the first window take ``SLOW`` seconds, so the honest parties cannot answer a grant made just before the
    deadline in time, whatever the machine's speed."""

    def protect(self, values, ctx, *args, **kwargs):  # type: ignore[no-untyped-def]
        if ctx.attempt == 0 and ctx.chunk >= 2:
            time.sleep(SLOW)
        return super().protect(values, ctx, *args, **kwargs)


def test_a_party_that_withholds_its_lowest_chunk_until_the_deadline_is_the_one_left_out(tmp_path):
    cfg = make_config(tmp_path, **STREAM, network={"coordinator_memory_bytes": TWO_CHUNKS,
                                                   "stage_timeout_s": TIMEOUT})

    def withholder():
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx)
        try:
            request = client.join()
            t0 = time.monotonic()
            s, upto, attempt = cfg.session, request.body["upto"], request.body["attempt"]
            assert upto == 2, upto  # a window of two chunks: layer 1's G chunks 0 and 1

            def contrib(chunk: int) -> list:
                count = min(s.chunk_values, s.n_values("G") - chunk * s.chunk_values)
                payload = client.protect(np.ones(count), StatContext(s.id, 0, 1, "G", "c", chunk, attempt))
                body = {"attempt": attempt, "chunk": chunk, "n_chunks": s.n_chunks("G"),
                        "offset": chunk * s.chunk_values, "count": count, "payload": dict(payload.header)}
                return client.msg(MsgType.CONTRIB, 0, 1, "G", body, payload.frames).to_frames()

            early, lowest, next_ = contrib(1), contrib(0), contrib(2)  # all protected in advance
            client.send(early)
            time.sleep(max(0.0, t0 + TIMEOUT - 0.08 - time.monotonic()))  # hold the window until the deadline
            client.send(lowest)
            client.send(next_)  # granted the moment chunk 0's sum goes to the solver
            time.sleep(TIMEOUT * 2)  # then nothing more, connected
            return "sent"
        finally:
            client.close()
            ctx.term()

    run = run_session(cfg, ["a", "b"], extra={"c": withholder}, scheme=SlowFirstAttempt(), timeout=90)
    assert run.outcome.ok, run.outcome.reason
    assert set(run.outcome.included.values()) == {("a", "b")}  # the honest parties kept, the withholder left out
    for key, delta in reference_deltas(cfg, ["a", "b"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-9, atol=1e-9)
    with Ledger(cfg.paths.ledger) as ledger:
        restarts = [r for r in ledger.rows("stages") if r["event"] == "restart"]
    assert restarts and "c" in restarts[0]["detail"]
