"""Red team, second pass on protocol v2: a hostile party against the live coordinator, a cheating coordinator
against a real party runtime. Real CurveZMQ sockets; the attacker holds a roster key (a party's, or the
coordinator's with the fake coordinator of test_net_auth).

Every strict xfail here is a BREAK of a claim in docs/threat-model.md; its reason says what to fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from network_doubles import RawClient, make_config, reference_deltas, run_session
from test_net_auth import _setup
from test_redteam_peers import _party_against

from secure_collab.keys import load_signing_key
from secure_collab.ledger import Ledger
from secure_collab.protocol.messages import MsgType

SHORT = {"stage_timeout_s": 1.0}


def _rows(cfg, peer):
    with Ledger(cfg.paths.ledger) as ledger:
        return [r for r in ledger.rows("messages") if r["peer"] == peer]


@pytest.mark.xfail(strict=True, reason="BREAK: an ACK is accepted and recorded for any (round, layer), released or "
                   "not; only a second ACK of the same pair is refused, so a party adds one ledger row per "
                   "made-up pair (up to 2^36 of them, at its control-message rate, for as long as a stage lasts) "
                   "and writes false 'party refused release' records, beyond the written bound of one row per "
                   "release. Fix: in Handlers._on_ack refuse an ACK unless (round, layer) is in self.releases "
                   "and was sent to that party.")
def test_redteam_acks_for_releases_never_sent_are_recorded_one_row_each(tmp_path):
    cfg = make_config(tmp_path, network=SHORT)
    forged = 60

    def attack():
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx)
        try:
            client.join()  # takes the setup and the first REQUEST, then never contributes
            for layer in range(100, 100 + forged):  # no such layer in this session: nothing was ever released
                client.send(client.msg(MsgType.ACK, 7, layer, body={
                    "ok": False, "reason": "forged: this release was tampered with " + "x" * 300}).to_frames())
            client.sock.setsockopt(zmq.RCVTIMEO, 3000)
            try:
                while True:
                    client.recv(MsgType.END)
                    return
            except zmq.Again:
                return
        finally:
            client.close()
            ctx.term()

    run = run_session(cfg, ["a", "b"], extra={"c": attack})
    assert run.outcome.ok, run.outcome.reason  # the attack is not a denial of service: the session completes
    for key, delta in reference_deltas(cfg, ["a", "b"]).items():
        np.testing.assert_allclose(run.solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    accepted = [r for r in _rows(cfg, "c") if r["type"] == "ack" and r["outcome"] == "accepted"]
    released = {(r, lay) for r, lay in run.outcome.releases}
    bogus = [r for r in accepted if (r["round"], r["layer"]) not in released]
    assert bogus == [], f"{len(bogus)} ledger rows for ACKs of releases that do not exist, e.g. {bogus[0]['reason']!r}"


@pytest.mark.xfail(strict=True, reason="BREAK: in the oneshot variant a party refuses a re-collected step only "
                   "when it applied the releases of *every* layer of it (parties/client.py _on_request: all(...)); "
                   "a coordinator that forwards layer 1's release and withholds layer 2's then asks again and the "
                   "party contributes a second time to layer 1, whose release it applied (the defence the threat "
                   "model claims holds even if the solver's disk is rolled back). Fix: refuse when any layer of "
                   "the requested step is in result.applied.")
def test_redteam_oneshot_party_contributes_again_to_a_layer_it_applied(tmp_path):
    cfg = make_config(tmp_path, variant="oneshot")
    key = load_signing_key(cfg.paths.keys / "solver.key_secret")
    per_layer = sum(cfg.session.n_chunks(st) for st in ("G", "B", "N"))
    seen = {}

    def script(fake, route):
        _setup(fake, route, key)
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [1, 2], "attempt": 0}))
        for _ in range(2 * per_layer):
            fake.recv(MsgType.CONTRIB)
        # the solver released both layers; this coordinator forwards layer 1's (genuine) and withholds layer 2's
        fake.send(route, fake.release(1, np.full((4, 6), 0.5), key))
        seen["ack"] = fake.recv(MsgType.ACK)[1].body
        fake.send(route, fake.msg(MsgType.REQUEST, 0, body={"layers": [1, 2], "attempt": 1}))
        _, reply = fake.recv_any()
        seen["reply"] = reply
        fake.send(route, fake.msg(MsgType.END, body={"ok": False, "reason": "test over"}))

    result, error, engine, _ = _party_against(cfg, script)
    assert error is None, f"party a died of {error!r}"
    assert seen["ack"]["ok"] is True and (0, 1) in result.applied  # layer 1's release was applied
    reply = seen["reply"]
    assert reply.type is not MsgType.CONTRIB, (
        f"party a contributed again (layer {reply.layer} {reply.stat}, attempt {reply.body['attempt']}) to a "
        "step whose layer 1 release it had applied")
