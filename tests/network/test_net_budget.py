"""Per-party budgets (coordinator/guard.py) on a simulated clock: an honest party of a SmolLM2-sized session
is never cut off, in either mode and variant, however long it computes; a party that sends more than the
headroom allows is. Message sizes come from the real protection schemes."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from network_doubles import make_config

from coordinator.guard import PeerGuard
from secure_collab.protection import ProtectionParams, StatContext, get_scheme


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _chunk_bytes(mode: str, count: int) -> int:
    """Bytes of one CONTRIB of ``count`` values as the real scheme makes it (signed, with its integrity
    tags and sealed seed), plus its message header."""
    scheme = get_scheme(mode)
    extra = {"precision_bits": 48} if mode == "ckks" else {}
    signing, sealing = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    other = X25519PrivateKey.generate().public_key().public_bytes_raw()
    keys = scheme.solver_setup(ProtectionParams(mode, 2, 1e5, 2, extra),
                               {"a": sealing.public_key().public_bytes_raw(), "b": other})
    secrets = scheme.join(keys.public, keys.bundles, "a", sealing.private_bytes_raw())
    payload = scheme.protect(np.random.default_rng(0).uniform(-1, 1, count), StatContext("s", 0, 3, "G", "a"),
                             keys.public, secrets, signing)
    return payload.nbytes + 256 + len(msgpack.packb(dict(payload.header))) + 70 * len(payload.frames)


@pytest.fixture(scope="module")
def sizes():
    return {mode: _chunk_bytes(mode, 1 << 16) / (1 << 16) for mode in ("shares", "ckks")}


def _smollm2(tmp_path, variant):
    return make_config(tmp_path, variant=variant, layers=[3, 4, 5, 6, 7], d_k=1536, d_v=576, chunk_values=262144,
                       network={"heartbeat_s": 1.0, "max_message_bytes": 64 << 20})


def _honest(guard, clock, cfg, per_value, compute_s=600.0, hello=300, ack=250):
    """Replay what parties/client.py sends: HELLO, a heartbeat per silent second, each step's chunks at
    once when asked, an ACK per release. Returns False at the first message the guard refuses."""
    s = cfg.session

    def idle(seconds):
        for _ in range(int(seconds)):
            clock.now += 1.0
            if not guard.admit("a", hello + 10 * len(s.layers) * s.rounds):  # HELLO lists the releases held
                return False
        return True

    if not guard.admit("a", hello) or not idle(30):
        return False
    for round_, layers in s.steps():
        guard.grant_step("a", round_, layers, 0)
        if not idle(compute_s):  # computing: heartbeats only
            return False
        for _layer in layers:
            for stat in ("G", "B", "N"):
                for off in range(0, s.n_values(stat), s.chunk_values):
                    count = min(s.chunk_values, s.n_values(stat) - off)
                    if not guard.admit("a", int(per_value * count) + 4096):
                        return False
        if not idle(60):  # the others and the solve
            return False
        if not all(guard.admit("a", ack) for _ in layers):
            return False
    return idle(3600)  # and an hour of heartbeats after


@pytest.mark.parametrize("variant", ["sequential", "oneshot"])
@pytest.mark.parametrize("mode", ["shares", "ckks"])
def test_an_honest_party_is_never_cut_off(tmp_path, sizes, mode, variant):
    cfg = _smollm2(tmp_path, variant)
    clock = Clock()
    assert _honest(PeerGuard(cfg, clock), clock, cfg, sizes[mode])
    # a re-collected step (a new attempt) is credited again
    guard = PeerGuard(cfg, clock)
    assert _honest(guard, clock, cfg, sizes[mode]) and _honest(guard, clock, cfg, sizes[mode])


def test_more_than_the_headroom_allows_is_cut_off(tmp_path):
    cfg = _smollm2(tmp_path, "sequential")
    clock = Clock()
    guard = PeerGuard(cfg, clock)
    layers = cfg.session.steps()[0][1]
    guard.grant_step("a", 0, layers, 0)
    msgs, _ = guard.step_cost(layers)
    sent = 0
    while guard.admit("a", 4096) and sent < 10 * msgs * cfg.network.budget_headroom:
        sent += 1
    assert msgs * cfg.network.budget_headroom <= sent < (msgs + 1) * cfg.network.budget_headroom + 200
    # bytes: chunks of the largest allowed message size go through the byte budget far sooner
    guard = PeerGuard(cfg, clock)
    guard.grant_step("a", 0, layers, 0)
    sent = 0
    while guard.admit("a", cfg.network.max_message_bytes):
        sent += 1
    _, nbytes = guard.step_cost(layers)
    assert sent <= nbytes * cfg.network.budget_headroom / cfg.network.max_message_bytes + 1


def test_control_traffic_at_ten_times_the_heartbeat_is_cut_off(tmp_path):
    cfg = _smollm2(tmp_path, "sequential")
    clock = Clock()
    guard = PeerGuard(cfg, clock)
    for _ in range(100_000):
        clock.now += cfg.network.heartbeat_s / 10
        if not guard.admit("a", 300):
            break
    assert clock.now < 60  # the burst lasts seconds, not minutes


def test_an_honest_party_exchanging_tags_every_round_is_never_cut_off(tmp_path):
    """Dedupe on, 1000 requests per party at most: each round's BLINDED and TAGS carry 2000 padded slots
    (64 kB each, far above a control message); the TAG_OPEN invitation credits them, once per round."""
    cfg = make_config(tmp_path, layers=[3, 4], d_k=1536, d_v=576, chunk_values=262144, rounds=4, dedupe=True,
                      max_edits_per_party=1000, network={"heartbeat_s": 1.0, "max_message_bytes": 64 << 20})
    slots = cfg.session.tag_slots
    blinded, tags = slots * 32 + 4 + 96 + 64 + 1024, 4 + slots * 32 + 96 + 64 + 1024  # + seal, signature, header

    def rounds(guard, grant):
        for round_ in range(cfg.session.rounds):
            if grant:
                guard.grant_tags("a", round_)
            if not (guard.admit("a", blinded) and guard.admit("a", tags)):
                return False
        return True

    assert rounds(PeerGuard(cfg, Clock()), grant=True)
    assert not rounds(PeerGuard(cfg, Clock()), grant=False)  # the control budget alone would cut it off


def test_queries_to_a_served_model_are_credited_per_answer_and_a_flood_is_cut_off(tmp_path):
    """A served release: an honest party asking 10,000 queries one after the other (each answered) at full speed is
    never cut off; one that sends queries without waiting for answers is, after about QUERY_WINDOW × headroom of
    them plus the control burst."""
    from coordinator.guard import QUERY_MESSAGE_BYTES, QUERY_WINDOW

    cfg = make_config(tmp_path, release="served", variant="oneshot",
                      network={"heartbeat_s": 1.0, "max_message_bytes": 1 << 17})
    clock = Clock()
    guard = PeerGuard(cfg, clock)
    guard.grant_queries("a", QUERY_WINDOW)  # the serving stage opens
    for _ in range(10_000):
        assert guard.admit("a", QUERY_MESSAGE_BYTES)
        guard.grant_queries("a", 1)  # its answer is relayed
    flood = PeerGuard(cfg, clock)
    flood.grant_queries("a", QUERY_WINDOW)
    sent = 0
    while flood.admit("a", QUERY_MESSAGE_BYTES):
        sent += 1
    assert QUERY_WINDOW * cfg.network.budget_headroom <= sent <= QUERY_WINDOW * cfg.network.budget_headroom + 16
