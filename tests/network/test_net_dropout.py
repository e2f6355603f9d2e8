"""Drop-outs: a party that leaves is left out while min_parties holds; below it the session aborts."""

from __future__ import annotations

import numpy as np
import zmq
from network_doubles import (
    RawClient,
    SyntheticEngine,
    make_config,
    reference_deltas,
    run_session,
)

from parties.client import Fatal, Party
from secure_collab.ledger import Ledger
from secure_collab.protection import StatContext, get_scheme
from secure_collab.protection._array import ArrayAccumulator
from secure_collab.protection.scheme import ArrayScheme
from secure_collab.protocol.messages import MsgType

SHORT = {"stage_timeout_s": 1.0}


class DroppingParty(Party):
    """Contributes to layer 1, then vanishes when asked for layer 2."""

    def _on_request(self, msg):
        if 2 in msg.body["layers"]:
            raise Fatal("simulated drop-out")
        super()._on_request(msg)


def test_party_dropping_between_layers_is_left_out(tmp_path):
    cfg = make_config(tmp_path, network=SHORT)
    engine = SyntheticEngine("c", cfg)

    def dropper():
        return DroppingParty(cfg, "c", get_scheme("plain"), engine.compute_statistics, engine.apply_delta).run()

    run = run_session(cfg, ["a", "b"], extra={"c": dropper})
    assert run.outcome.ok, run.outcome.reason
    assert run.outcome.included == {(0, (1,)): ("a", "b", "c"), (0, (2,)): ("a", "b")}
    ref = reference_deltas(cfg, ["a", "b", "c"], members={(0, 2): ["a", "b"]})
    for key, delta in ref.items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    assert run.extra["c"].reason == "simulated drop-out"
    assert all(run.parties[n].left_out == [] for n in ("a", "b"))


def _join_then(cfg, action):
    """A raw party c that joins, waits for its request, does ``action(client)``, then disconnects."""

    def body():
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx)
        try:
            request = client.join()
            return action(client, request)
        finally:
            client.close()
            ctx.term()

    return body


def _one_chunk(client, request):
    s = client.cfg.session
    ctx = StatContext(s.id, 0, 1, "G", "c", 0, request.body["attempt"])
    payload = client.protect(np.ones(s.chunk_values), ctx)
    body = {"attempt": request.body["attempt"], "chunk": 0, "n_chunks": s.n_chunks("G"), "offset": 0,
            "count": s.chunk_values, "payload": dict(payload.header)}
    for _ in range(2):  # the same chunk twice, each time in a fresh, well-formed message
        client.send(client.msg(MsgType.CONTRIB, 0, 1, "G", body, payload.frames).to_frames())
    return client.recv(MsgType.ERROR).body["reason"]


def test_partial_contribution_restarts_the_step_without_it(tmp_path):
    cfg = make_config(tmp_path, network=SHORT)
    run = run_session(cfg, ["a", "b"], extra={"c": _join_then(cfg, _one_chunk)})
    assert "duplicate" in run.extra["c"]
    assert run.outcome.ok, run.outcome.reason
    ref = reference_deltas(cfg, ["a", "b"])
    for key, delta in ref.items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    with Ledger(cfg.paths.ledger) as ledger:
        events = [(r["layers"], r["attempt"], r["event"]) for r in ledger.rows("stages")]
    assert ("[1]", 0, "restart") in events and ("[1]", 1, "handoff") in events
    for engine in run.engines.values():  # re-protected for attempt 1, not recomputed
        assert engine.compute_calls == [(0, 1), (0, 2)]


def test_below_min_parties_aborts_cleanly(tmp_path):
    cfg = make_config(tmp_path, network=SHORT, min_parties=3)
    run = run_session(cfg, ["a", "b"], extra={"c": _join_then(cfg, lambda client, request: None)})
    assert not run.outcome.ok
    assert "2 complete contributions < min_parties 3" in run.outcome.reason and "['c']" in run.outcome.reason
    assert not run.solver.ok and run.solver.releases == {} and run.solver.received == []
    for result in run.parties.values():
        assert not result.ok and result.reason == run.outcome.reason and result.applied == {}
    with Ledger(cfg.paths.ledger) as ledger:
        assert ledger.rows("handoffs") == []
        assert ledger.rows("stages")[-1]["event"] == "aborted"


class _BrittleAccumulator(ArrayAccumulator):
    def add(self, payload, party=None):
        if "boom" in payload.header:
            self._sum[0] += np.uint64(12345)  # half-updated, then an error outside the contract
            raise KeyError("boom")
        super().add(payload, party)


class BrittleScheme(ArrayScheme):
    mode = "plain"

    def accumulator(self, public, n_values, ctx):
        return _BrittleAccumulator(self.mode, 1 << 17, self._public(public), n_values, ctx)


def test_accumulator_failure_outside_the_contract_discards_the_sum(tmp_path):
    cfg = make_config(tmp_path, network=SHORT)

    def boom(client, request):
        s = client.cfg.session
        payload = client.protect(np.ones(s.chunk_values), StatContext(s.id, 0, 1, "G", "c"))
        body = {"attempt": 0, "chunk": 0, "n_chunks": s.n_chunks("G"), "offset": 0, "count": s.chunk_values,
                "payload": {**payload.header, "boom": 1}}
        client.send(client.msg(MsgType.CONTRIB, 0, 1, "G", body, payload.frames).to_frames())
        return client.recv(MsgType.ERROR).body["reason"]

    run = run_session(cfg, ["a", "b"], extra={"c": _join_then(cfg, boom)}, scheme=BrittleScheme())
    assert run.extra["c"] == "payload rejected by the accumulator (KeyError)"
    assert run.outcome.ok, run.outcome.reason
    for key, delta in reference_deltas(cfg, ["a", "b"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
