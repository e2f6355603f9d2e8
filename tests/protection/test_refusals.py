"""Every refusal raises ProtectionError with a message that says why."""

from __future__ import annotations

import numpy as np
import pytest

from secure_collab.protection import (
    PartyFault,
    Payload,
    ProtectionError,
    ProtectionParams,
    StatContext,
    get_scheme,
)
from secure_collab.protection.scheme import SEALED_SEED_BYTES

from .conftest import CTX, accumulate, make_session, protect_all

FAST_MODES = ["shares", "plain", "ckks"]


@pytest.fixture(scope="module", params=FAST_MODES)
def session(request):
    return make_session(request.param, 5, 2.0, min_parties=3)


def party(i: int = 0) -> StatContext:
    return CTX.for_party(f"p{i}")


@pytest.mark.parametrize(("bad", "why"), [(np.nan, "non-finite value nan at index 3"),
                                          (np.inf, "non-finite value inf at index 3"),
                                          (-np.inf, "non-finite value -inf at index 3")])
def test_non_finite_values_name_statistic_and_layer(session, bad, why):
    s = session
    x = np.zeros(10)
    x[3] = bad
    with pytest.raises(ProtectionError, match=f"statistic 'G' of layer 4: {why}"):
        s.protect(x, party())


def test_over_bound(session):
    s = session
    with pytest.raises(ProtectionError, match="layer 4: .*2.5.* at index 1 exceeds the declared bound 2"):
        s.protect(np.array([0.0, -2.5, 1.0]), party())


@pytest.mark.parametrize(("values", "why"), [
    (np.zeros(4, dtype=np.float32), "expected dtype float64, got float32"),
    (np.zeros((2, 2)), r"expected a flat vector, got shape \(2, 2\)"),
    (np.zeros(0), "empty statistic"),
    ([0.0, 1.0], "expected a numpy array"),
])
def test_wrong_dtype_or_shape(session, values, why):
    s = session
    with pytest.raises(ProtectionError, match=why):
        s.protect(values, party())


def test_wrong_length_at_the_coordinator(session):
    s = session
    acc = s.scheme.accumulator(s.keys.public, 11, CTX)
    with pytest.raises(ProtectionError, match="n_values=10"):
        acc.add(s.protect(np.zeros(10), party()))


def test_truncated_or_padded_payload(session):
    s = session
    p = s.protect(np.ones(10), party())
    acc = s.scheme.accumulator(s.keys.public, 10, CTX)
    with pytest.raises(ProtectionError, match="frames, expected"):
        acc.add(Payload(p.header, p.frames[:-1]))
    with pytest.raises(ProtectionError, match="frames, expected"):
        acc.add(Payload(p.header, p.frames + (b"",)))
    with pytest.raises(ProtectionError, match="frame 0"):
        acc.add(Payload(p.header, (bytes(p.frames[0])[:-8],) + p.frames[1:]))
    assert acc.parties == ()


@pytest.mark.parametrize(("key", "value", "why"), [
    ("session", "sess-2", "session 'sess-2'"), ("round", 2, "round 2"), ("layer", 5, "layer 5"),
    ("statistic", "B", "statistic 'B'"), ("round", True, "round True"), ("v", 1, "version 1"),
    ("chunk_index", 1, "chunk_index 1"), ("attempt", 2, "attempt 2"), ("tag_values", 3, "tag_values=3"),
    ("mode", "other", "'other'"), ("n_values", 9, "n_values=9"), ("public", "00" * 32, "other public"),
])
def test_altered_header_is_refused(session, key, value, why):
    s = session
    p = s.protect(np.ones(10), party())
    with pytest.raises(ProtectionError, match=why):
        s.scheme.accumulator(s.keys.public, 10, CTX).add(Payload({**p.header, key: value}, p.frames))


def test_extra_header_key_is_refused(session):
    s = session
    p = s.protect(np.ones(10), party())
    with pytest.raises(ProtectionError, match="header keys"):
        s.scheme.accumulator(s.keys.public, 10, CTX).add(Payload({**p.header, "pickle": "no"}, p.frames))


def test_duplicate_party_and_impersonation(session):
    s = session
    acc = s.scheme.accumulator(s.keys.public, 10, CTX)
    acc.add(s.protect(np.ones(10), party(1)), party="p1")
    with pytest.raises(ProtectionError, match="'p1' already contributed"):
        acc.add(s.protect(np.ones(10), party(1)), party="p1")
    with pytest.raises(ProtectionError, match="claims party 'p2' but came from 'p3'"):
        acc.add(s.protect(np.ones(10), party(2)), party="p3")


def test_no_more_than_max_parties(session):
    s = session  # max_parties=5
    acc = s.scheme.accumulator(s.keys.public, 3, CTX)
    for i in range(5):
        acc.add(s.protect(np.ones(3), party(i)))
    extra = make_session(s.keys.params.mode, 6, 2.0, min_parties=3)  # a sixth payload, same header shape
    sixth = extra.protect(np.ones(3), party(5))
    with pytest.raises(ProtectionError, match="max_parties=5 reached|other public parameters"):
        acc.add(sixth)
    assert acc.parties == tuple(f"p{i}" for i in range(5))


def test_no_contribution_after_the_aggregate(session):
    s = session
    acc = s.scheme.accumulator(s.keys.public, 10, CTX)
    with pytest.raises(ProtectionError, match="no party has contributed"):
        acc.aggregate()
    acc.add(s.protect(np.ones(10), party(1)))
    acc.aggregate()
    with pytest.raises(ProtectionError, match="already aggregated"):
        acc.add(s.protect(np.ones(10), party(2)))


def test_fewer_than_min_parties_at_open(session):
    s = session
    payloads = protect_all(s, [np.ones(10)] * 3)
    with pytest.raises(ProtectionError, match="holds 2 parties; at least min_parties=3"):
        s.open(accumulate(s, payloads, [0, 1]))
    assert np.allclose(s.open(accumulate(s, payloads, [0, 1, 2])), 3.0)


def test_open_with_another_context_is_refused(session):
    s = session
    aggregate = accumulate(s, protect_all(s, [np.ones(10)] * 3), [0, 1, 2])
    for other in (StatContext("sess-2", 1, 4, "G"), StatContext("sess-1", 0, 4, "G"),
                  StatContext("sess-1", 1, 3, "G"), StatContext("sess-1", 1, 4, "B"),
                  StatContext("sess-1", 1, 4, "G", chunk=1), StatContext("sess-1", 1, 4, "G", attempt=1)):
        with pytest.raises(ProtectionError, match="payload is for"):
            s.open(aggregate, other)
    with pytest.raises(ProtectionError, match="no party"):
        s.open(aggregate, party())


def test_context_fields_are_checked_and_the_label_is_unambiguous():
    for bad in (dict(round=-1), dict(layer=1.0), dict(round=True), dict(session_id=""), dict(statistic=3),
                dict(chunk=2**31), dict(attempt=-1)):
        with pytest.raises(ProtectionError, match="StatContext"):
            StatContext(**(dict(session_id="s", round=0, layer=0, statistic="G") | bad))
    # a session id containing a separator cannot collide with another context
    assert StatContext("a|1", 2, 3, "G").label() != StatContext("a", 1, 2, "3|G").label()
    assert StatContext("s", 1, 2, "G", "p", 3, 4).label() == b'["secure-collab/v2","s",1,2,"G",3,4,"p"]'


def test_parameters_checked_at_setup():
    scheme = get_scheme("shares")
    recipients = {f"p{i}": bytes(range(32)) for i in range(5)}
    for bad in (dict(bound=float("nan")), dict(bound=0.0), dict(bound=-1.0), dict(min_parties=1),
                dict(max_parties=0), dict(min_parties=6)):
        kwargs = dict(mode="shares", max_parties=5, bound=1.0, min_parties=2) | bad
        with pytest.raises(ProtectionError):
            scheme.solver_setup(ProtectionParams(**kwargs), recipients)
    with pytest.raises(ProtectionError, match="for mode 'ckks', not 'shares'"):
        scheme.solver_setup(ProtectionParams("ckks", 5, 1.0), recipients)
    with pytest.raises(ProtectionError, match="4 bundle recipients for max_parties=5"):
        scheme.solver_setup(ProtectionParams("shares", 5, 1.0), dict(list(recipients.items())[:4]))
    with pytest.raises(ProtectionError, match="unknown protection mode"):
        get_scheme("none")


def test_public_parameters_of_another_mode_are_refused():
    plain = make_session("plain", 3, 1.0)
    shares = get_scheme("shares")
    secrets = plain.scheme.join(plain.keys.public, plain.keys.bundles, "p0", plain.sealing["p0"].private_bytes_raw())
    with pytest.raises(ProtectionError, match="for mode 'plain', not 'shares'"):
        shares.protect(np.ones(3), party(), plain.keys.public, secrets, plain.signing["p0"])
    with pytest.raises(ProtectionError, match="not a secure-collab public blob"):
        shares.protect(np.ones(3), party(), b"garbage", secrets, plain.signing["p0"])


@pytest.mark.parametrize("field", ["grid_bits", "slots", "poly_modulus_degree"])
def test_ckks_public_parameters_with_a_float_where_an_int_belongs_are_refused(field):
    from secure_collab.protection import _wire

    s = make_session("ckks", 3, 1.0)
    pub = _wire.decode_public(s.keys.public, "ckks")
    forged = _wire.encode_public({**pub.meta, field: float(pub.meta[field])}, pub.body)  # JSON 30.0 == 30
    with pytest.raises(ProtectionError, match="ckks public parameters are inconsistent"):
        s.scheme.accumulator(forged, 10, CTX)


def test_a_bundle_opens_only_for_its_party(session):
    s = session
    with pytest.raises(ProtectionError, match="bundle of party 'p1': authentication failed"):
        s.scheme.join(s.keys.public, s.keys.bundles, "p1", s.sealing["p0"].private_bytes_raw())
    with pytest.raises(ProtectionError, match="no bundle for party 'p9'"):
        s.scheme.join(s.keys.public, s.keys.bundles, "p9", s.sealing["p0"].private_bytes_raw())
    other = make_session(s.keys.params.mode, 5, 2.0, min_parties=3)  # bundles of another setup
    with pytest.raises(ProtectionError, match="authentication failed"):
        s.scheme.join(s.keys.public, other.keys.bundles, "p0", s.sealing["p0"].private_bytes_raw())


# --- seals and signatures: found before anything is opened, naming the party -----------------------


def test_altered_sealed_seed_or_signature_names_the_party(session):
    s = session
    aggregate = accumulate(s, protect_all(s, [np.ones(10)] * 3), [0, 1, 2])
    for frame in (-4, -3):  # p1's seal, p1's signature (each party adds [seal, signature])
        for pos in (0, 40, 63):
            altered = bytearray(aggregate.frames[frame])
            altered[pos] ^= 1
            frames = list(aggregate.frames)
            frames[frame] = bytes(altered)
            with pytest.raises(PartyFault, match="do not authenticate.*: p1$") as err:
                s.open(Payload(aggregate.header, tuple(frames)))
            assert err.value.parties == ("p1",)


def test_seal_from_another_context_is_refused_before_opening(session):
    """A party's seal and signature for round 2 put in place of its round-1 ones: nothing opens."""
    s = session
    other = StatContext(CTX.session_id, 2, CTX.layer, CTX.statistic)
    for ctx2 in (other, StatContext("sess-x", 1, 4, "G"), StatContext("sess-1", 1, 9, "G"),
                 StatContext("sess-1", 1, 4, "B"), StatContext("sess-1", 1, 4, "G", chunk=1),
                 StatContext("sess-1", 1, 4, "G", attempt=3)):
        good = protect_all(s, [np.ones(10)] * 3)
        foreign = s.protect(np.ones(10), ctx2.for_party("p1"))
        relabelled = Payload(good[1].header, good[1].frames[:-2] + foreign.frames[-2:])
        with pytest.raises(PartyFault, match="p1"):
            s.open(accumulate(s, [good[0], relabelled, good[2]], [0, 1, 2]))


def test_coordinator_cannot_relabel_a_party(session):
    s = session
    aggregate = accumulate(s, protect_all(s, [np.ones(10)] * 4), [0, 1, 2])
    swapped = Payload({**aggregate.header, "parties": ["p0", "p1", "p3"]}, aggregate.frames)
    with pytest.raises(PartyFault, match="p3"):
        s.open(swapped)


def test_seal_or_signature_of_wrong_size_is_refused_by_the_coordinator(session):
    s = session
    p = s.protect(np.ones(10), party())
    acc = s.scheme.accumulator(s.keys.public, 10, CTX)
    with pytest.raises(ProtectionError, match="sealed seed and a 64-byte signature"):
        acc.add(Payload(p.header, p.frames[:-2] + (b"x" * (SEALED_SEED_BYTES - 1), p.frames[-1])))
    with pytest.raises(ProtectionError, match="sealed seed and a 64-byte signature"):
        acc.add(Payload(p.header, p.frames[:-1] + (b"x" * 63,)))
    assert acc.parties == ()


def test_coordinator_checks_signatures_early(session):
    s = session
    p = s.protect(np.ones(10), party(0))
    s.scheme.check_signature(p, party(0), s.verify_keys["p0"], s.keys.public)
    with pytest.raises(ProtectionError, match="party 'p1': contribution signature does not verify"):
        s.scheme.check_signature(p, party(1), s.verify_keys["p1"], s.keys.public)
