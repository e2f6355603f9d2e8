"""Red team on the integrity MAC: attacks a cheating coordinator could try that the suite did not cover.

All of these are refused (or harmless), so they pass: they pin the defence. The argument they exercise is
docs/integrity.md: whatever the coordinator does is a change Δ of the opened integers and τ of the tag sum
that it chose without α, and the pads ρ_p it cannot see stop every rescaling of the tags.
"""

from __future__ import annotations

import numpy as np
import pytest

from secure_collab.protection import IntegrityError, PartyFault, Payload, StatContext
from secure_collab.protection import integrity as mac

from .conftest import CTX, accumulate, make_session, protect_all

N_VALUES = 3000  # ckks (2048 slots here): frame 0 holds data only, the tags ride in frame 1


@pytest.fixture(scope="module", params=["plain", "shares", "ckks"])
def session(request):
    return make_session(request.param, 4, 50.0)


def _honest(s, n=N_VALUES, ctx=CTX):
    rng = np.random.default_rng(11)
    values = [rng.uniform(-50, 50, n) for _ in range(3)]
    payloads = protect_all(s, values, ctx)
    return values, payloads, accumulate(s, payloads, (0, 1, 2), ctx)


def test_redteam_public_ckks_context_can_add_and_negate_but_not_multiply_or_rotate():
    """The context the coordinator holds: no Galois keys (no rotation), no relinearisation keys, and a modulus
    with room for one scale only, so even a plaintext multiplication overflows; addition and negation work."""
    import tenseal as ts

    s = make_session("ckks", 4, 50.0)
    ctx = s.scheme._context_for(s.scheme._public(s.keys.public))
    vec = ts.ckks_vector(ctx, [1.0, 2.0, 3.0])
    assert not ctx.has_galois_keys() and not ctx.has_relin_keys() and not ctx.has_secret_key()
    assert (-vec).size() == 3 and (vec + vec).size() == 3
    with pytest.raises(ValueError, match="Galois"):
        vec.sum()  # a rotation
    for product in (lambda: vec * [2.0, 1.0, 1.0], lambda: vec * 2, lambda: vec * vec):
        with pytest.raises(ValueError, match="scale out of bounds"):
            product()


def test_redteam_negated_data_stay_in_bound_and_only_the_mac_refuses_them(session):
    """The coordinator negates the data of the sum and leaves the tags: |−U| = |U| passes the range check,
    so this pins that the MAC (not the bound) refuses it. In shares the negation hits the masked words."""
    import tenseal as ts

    _, _, aggregate = _honest(session)
    frames = list(aggregate.frames)
    if session.scheme.mode == "ckks":
        ctx = session.scheme._context_for(session.scheme._public(session.keys.public))
        frames[0] = (-ts.ckks_vector_from(ctx, bytes(frames[0]))).serialize()  # frame 0: data only
    else:
        words = np.frombuffer(frames[0], dtype=np.uint64).copy()
        np.negative(words[:N_VALUES].view(np.int64), out=words[:N_VALUES].view(np.int64))  # tags untouched
        frames[0] = words.tobytes()
    with pytest.raises(IntegrityError, match="integrity check failed") as err:
        session.open(Payload(dict(aggregate.header), tuple(frames)))
    assert err.value.detail.startswith("range" if session.scheme.mode == "shares" else "mac")


@pytest.mark.parametrize("mode", ["plain", "shares"])
def test_redteam_tag_limbs_are_malleable_but_carry_no_forgery(mode):
    """Tags travel as limbs; the coordinator can move q = 2^61 − 1 = 2^30 · 2^31 − 1 between the two 31-bit
    limbs of a tag sum without changing it mod q. That opens to the exact honest sum (nothing gained), and
    with any data shift the MAC still refuses."""
    s = make_session(mode, 4, 50.0)
    _, _, aggregate = _honest(s)
    truth = s.open_encoded(aggregate)

    def carried(data_shift: int) -> Payload:
        words = np.frombuffer(aggregate.frames[0], dtype=np.uint64).copy()
        tag0 = words[N_VALUES : N_VALUES + 2]  # tag 0: limb 0, limb 1 (array views: uint64 ops wrap quietly)
        np.add(tag0, np.array([2**64 - 1, 1 << 30], dtype=np.uint64), out=tag0)  # −1 + 2^30 · 2^31 = + q
        np.add(words[5:6], np.uint64(data_shift % 2**64), out=words[5:6])
        return Payload(dict(aggregate.header), (words.tobytes(), *aggregate.frames[1:]))

    np.testing.assert_array_equal(s.open_encoded(carried(0)), truth)
    for shift in (1, -1, mac.Q):
        with pytest.raises(IntegrityError):
            s.open_encoded(carried(shift))


@pytest.mark.parametrize("field", ["session", "round", "layer", "statistic", "party"])
def test_redteam_contribution_relabelled_to_another_context_is_refused_unopened(session, field):
    """Domain separation: a whole contribution (data, seal, signature) made for another session, round,
    layer or statistic of the same length, or by another party, with its header rewritten by the coordinator
    to fit this aggregate. Its signature and seal are bound to where it was made: refused before opening,
    naming the party it is listed as."""
    other = {"session": StatContext("sess-2", CTX.round, CTX.layer, CTX.statistic),
             "round": StatContext(CTX.session_id, CTX.round + 1, CTX.layer, CTX.statistic),
             "layer": StatContext(CTX.session_id, CTX.round, CTX.layer + 1, CTX.statistic),
             "statistic": StatContext(CTX.session_id, CTX.round, CTX.layer, "B"),
             "party": CTX}[field]
    _, elsewhere, _ = _honest(session, n=300, ctx=other)
    _, payloads, _ = _honest(session, n=300)
    source = elsewhere[0] if field == "party" else elsewhere[2]  # p0's own, listed as p2; or p2's from elsewhere
    forged = Payload({**payloads[2].header}, source.frames)
    with pytest.raises(PartyFault) as err:
        session.open(accumulate(session, [payloads[0], payloads[1], forged], (0, 1, 2)))
    assert err.value.parties == ("p2",)


def test_redteam_one_party_over_its_value_bound_opens_while_the_sum_stays_in_bound(monkeypatch):
    """A documented limit (docs/integrity.md, threat-model.md): only the sum is range-checked, and a hostile
    party knows the MAC key, so it may exceed value_bound by the headroom the others leave. The aggregate
    opens; the plausibility checks on the opened statistics are what bound it."""
    from secure_collab.protection import scheme as scheme_module

    s = make_session("shares", 4, 50.0)  # β = 50
    rng = np.random.default_rng(3)
    honest = [rng.uniform(-1, 1, 300) for _ in range(2)]
    payloads = protect_all(s, honest)
    hostile = rng.uniform(-1, 1, 300)
    hostile[0] = 120.0  # 2.4 β
    with monkeypatch.context() as m:  # the hostile party's own code, altered: no bound check, honest tags
        m.setattr(scheme_module, "refuse_range", lambda *a, **k: None)
        payloads.append(s.protect(hostile, CTX.for_party("p2")))
    opened = s.open(accumulate(s, payloads, (0, 1, 2)))
    assert opened[0] > 100  # 2.4 β from one party: opened, and handed to the plausibility checks


def test_redteam_refusal_text_after_opening_answers_a_threshold_query():
    s = make_session("shares", 4, 50.0)
    _, _, aggregate = _honest(s, n=300)
    u0 = int(s.open_encoded(aggregate)[0])  # the value the coordinator asks about (it never sees it)
    limit = s.scheme._aggregate_bound(s.scheme._public(s.keys.public), 3)

    def refusal(threshold: int) -> str:  # the coordinator adds δ = limit − threshold to entry 0
        words = np.frombuffer(aggregate.frames[0], dtype=np.uint64).copy()
        np.add(words[:1], np.uint64((limit - threshold) % 2**64), out=words[:1])
        with pytest.raises(IntegrityError) as err:
            s.open(Payload(dict(aggregate.header), (words.tobytes(), *aggregate.frames[1:])))
        return str(err.value)

    assert refusal(u0 - 1) == refusal(u0), "the refusal text tells whether U_0 > threshold"


def test_redteam_setup_bundles_do_not_open_for_another_party_name_or_another_setup():
    """Beneath the solver's setup signature: a sealed (mac_key, release_key) bundle is bound to the party's
    X25519 key, its name and the public parameters' digest. Relabelled for another name (even opened by the
    party it was sealed to), or moved into another setup, it does not open."""
    from secure_collab.protection import ProtectionError
    from secure_collab.protection._wire import decode_bundles, encode_bundles

    s, other = make_session("plain", 3, 50.0), make_session("plain", 3, 50.0)
    own = decode_bundles(s.keys.bundles)
    key = {name: k.private_bytes_raw() for name, k in s.sealing.items()}
    assert s.scheme.join(s.keys.public, s.keys.bundles, "p0", key["p0"]).mac_key == s.keys.mac_key
    as_p0 = encode_bundles({**own, "p0": own["p1"]})
    for holder in ("p0", "p1"):  # p0 cannot open p1's bundle; p1 cannot open its own bundle as p0's
        with pytest.raises(ProtectionError, match="authentication failed"):
            s.scheme.join(s.keys.public, as_p0, "p0", key[holder])
    moved = encode_bundles({**decode_bundles(other.keys.bundles), "p0": own["p0"]})  # p0's sealing key differs
    with pytest.raises(ProtectionError, match="authentication failed"):
        other.scheme.join(other.keys.public, moved, "p0", key["p0"])  # the right key, the wrong setup
