"""Every refusal raises ProtectionError with a message that says why."""

from __future__ import annotations

import numpy as np
import pytest

from secure_collab.protection import Payload, ProtectionError, ProtectionParams, StatContext, get_scheme
from secure_collab.protection.shares import SEALED_BYTES

from .conftest import CTX, accumulate, protect_all

FAST_MODES = ["shares", "plain", "ckks"]


@pytest.fixture(scope="module", params=FAST_MODES)
def session(request):
    scheme = get_scheme(request.param)
    return scheme, scheme.solver_setup(ProtectionParams(request.param, max_parties=5, bound=2.0,
                                                        min_parties=3))


def party(i: int = 0) -> StatContext:
    return CTX.for_party(f"p{i}")


@pytest.mark.parametrize(("bad", "why"), [(np.nan, "non-finite value nan at index 3"),
                                          (np.inf, "non-finite value inf at index 3"),
                                          (-np.inf, "non-finite value -inf at index 3")])
def test_non_finite_values_name_statistic_and_layer(session, bad, why):
    scheme, keys = session
    x = np.zeros(10)
    x[3] = bad
    with pytest.raises(ProtectionError, match=f"statistic 'G' of layer 4: {why}"):
        scheme.protect(x, party(), keys.public)


def test_over_bound(session):
    scheme, keys = session
    with pytest.raises(ProtectionError, match="layer 4: .*2.5.* at index 1 exceeds the declared bound 2"):
        scheme.protect(np.array([0.0, -2.5, 1.0]), party(), keys.public)


@pytest.mark.parametrize(("values", "why"), [
    (np.zeros(4, dtype=np.float32), "expected dtype float64, got float32"),
    (np.zeros((2, 2)), r"expected a flat vector, got shape \(2, 2\)"),
    (np.zeros(0), "empty statistic"),
    ([0.0, 1.0], "expected a numpy array"),
])
def test_wrong_dtype_or_shape(session, values, why):
    scheme, keys = session
    with pytest.raises(ProtectionError, match=why):
        scheme.protect(values, party(), keys.public)


def test_wrong_length_at_the_coordinator(session):
    scheme, keys = session
    acc = scheme.accumulator(keys.public, 11, CTX)
    with pytest.raises(ProtectionError, match="n_values=10"):
        acc.add(scheme.protect(np.zeros(10), party(), keys.public))


def test_truncated_or_padded_payload(session):
    scheme, keys = session
    p = scheme.protect(np.ones(10), party(), keys.public)
    acc = scheme.accumulator(keys.public, 10, CTX)
    with pytest.raises(ProtectionError, match="frames, expected"):
        acc.add(Payload(p.header, p.frames[:-1]))
    with pytest.raises(ProtectionError, match="frames, expected"):
        acc.add(Payload(p.header, p.frames + (b"",)))
    with pytest.raises(ProtectionError, match="frame 0"):
        acc.add(Payload(p.header, (bytes(p.frames[0])[:-8],) + p.frames[1:]))
    assert acc.parties == ()


@pytest.mark.parametrize(("key", "value", "why"), [
    ("session", "sess-2", "session 'sess-2'"), ("round", 2, "round 2"), ("layer", 5, "layer 5"),
    ("statistic", "B", "statistic 'B'"), ("round", True, "round True"), ("v", 2, "version 2"),
    ("mode", "other", "'other'"), ("n_values", 9, "n_values=9"), ("public", "00" * 32, "other public"),
])
def test_altered_header_is_refused(session, key, value, why):
    scheme, keys = session
    p = scheme.protect(np.ones(10), party(), keys.public)
    with pytest.raises(ProtectionError, match=why):
        scheme.accumulator(keys.public, 10, CTX).add(Payload({**p.header, key: value}, p.frames))


def test_extra_header_key_is_refused(session):
    scheme, keys = session
    p = scheme.protect(np.ones(10), party(), keys.public)
    with pytest.raises(ProtectionError, match="header keys"):
        scheme.accumulator(keys.public, 10, CTX).add(Payload({**p.header, "pickle": "no"}, p.frames))


def test_duplicate_party_and_impersonation(session):
    scheme, keys = session
    acc = scheme.accumulator(keys.public, 10, CTX)
    acc.add(scheme.protect(np.ones(10), party(1), keys.public), party="p1")
    with pytest.raises(ProtectionError, match="'p1' already contributed"):
        acc.add(scheme.protect(np.ones(10), party(1), keys.public), party="p1")
    with pytest.raises(ProtectionError, match="claims party 'p2' but came from 'p3'"):
        acc.add(scheme.protect(np.ones(10), party(2), keys.public), party="p3")


def test_no_more_than_max_parties(session):
    scheme, keys = session  # max_parties=5
    acc = scheme.accumulator(keys.public, 3, CTX)
    for i in range(5):
        acc.add(scheme.protect(np.ones(3), party(i), keys.public))
    with pytest.raises(ProtectionError, match="max_parties=5 reached"):
        acc.add(scheme.protect(np.ones(3), party(5), keys.public))


def test_no_contribution_after_the_aggregate(session):
    scheme, keys = session
    acc = scheme.accumulator(keys.public, 10, CTX)
    with pytest.raises(ProtectionError, match="no party has contributed"):
        acc.aggregate()
    acc.add(scheme.protect(np.ones(10), party(1), keys.public))
    acc.aggregate()
    with pytest.raises(ProtectionError, match="already aggregated"):
        acc.add(scheme.protect(np.ones(10), party(2), keys.public))


def test_fewer_than_min_parties_at_open(session):
    scheme, keys = session
    payloads = protect_all(scheme, keys, [np.ones(10)] * 3)
    with pytest.raises(ProtectionError, match="holds 2 parties; at least min_parties=3"):
        scheme.open(accumulate(scheme, keys, payloads, [0, 1]), keys, CTX)
    assert np.allclose(scheme.open(accumulate(scheme, keys, payloads, [0, 1, 2]), keys, CTX), 3.0)


def test_open_with_another_context_is_refused(session):
    scheme, keys = session
    aggregate = accumulate(scheme, keys, protect_all(scheme, keys, [np.ones(10)] * 3), [0, 1, 2])
    for other in (StatContext("sess-2", 1, 4, "G"), StatContext("sess-1", 0, 4, "G"),
                  StatContext("sess-1", 1, 3, "G"), StatContext("sess-1", 1, 4, "B")):
        with pytest.raises(ProtectionError, match="payload is for"):
            scheme.open(aggregate, keys, other)
    with pytest.raises(ProtectionError, match="no party"):
        scheme.open(aggregate, keys, party())


def test_context_fields_are_checked_and_the_label_is_unambiguous():
    for bad in (dict(round=-1), dict(layer=1.0), dict(round=True), dict(session_id=""), dict(statistic=3)):
        with pytest.raises(ProtectionError, match="StatContext"):
            StatContext(**(dict(session_id="s", round=0, layer=0, statistic="G") | bad))
    # a session id containing the old separator cannot collide with another context
    assert StatContext("a|1", 2, 3, "G").label() != StatContext("a", 1, 2, "3|G").label()
    assert StatContext("s", 1, 2, "G", "p").label() == b'["secure-collab/v1","s",1,2,"G","p"]'


def test_plain_aggregate_with_raw_nan_frames_is_refused():
    scheme = get_scheme("plain")
    keys = scheme.solver_setup(ProtectionParams("plain", 3, 1.0))
    good = protect_all(scheme, keys, [np.ones(4)] * 2)
    raw = Payload(good[1].header, (np.array([np.nan, 0, 0, 0]).tobytes(),))  # skipped protect()'s checks
    with pytest.raises(ProtectionError, match="layer 4: non-finite aggregate"):
        scheme.open(accumulate(scheme, keys, [good[0], raw], [0, 1]), keys, CTX)


def test_parameters_checked_at_setup():
    scheme = get_scheme("shares")
    for bad in (dict(bound=float("nan")), dict(bound=0.0), dict(bound=-1.0), dict(min_parties=1),
                dict(max_parties=0), dict(min_parties=6)):
        kwargs = dict(mode="shares", max_parties=5, bound=1.0, min_parties=2) | bad
        with pytest.raises(ProtectionError):
            scheme.solver_setup(ProtectionParams(**kwargs))
    with pytest.raises(ProtectionError, match="for mode 'ckks', not 'shares'"):
        scheme.solver_setup(ProtectionParams("ckks", 5, 1.0))
    with pytest.raises(ProtectionError, match="unknown protection mode"):
        get_scheme("none")


def test_public_parameters_of_another_mode_are_refused():
    shares, plain = get_scheme("shares"), get_scheme("plain")
    keys = plain.solver_setup(ProtectionParams("plain", 3, 1.0))
    with pytest.raises(ProtectionError, match="for mode 'plain', not 'shares'"):
        shares.protect(np.ones(3), party(), keys.public)
    with pytest.raises(ProtectionError, match="not a secure-collab public blob"):
        shares.protect(np.ones(3), party(), b"garbage")


# --- shares: the sealed seeds -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shares_session():
    scheme = get_scheme("shares")
    return scheme, scheme.solver_setup(ProtectionParams("shares", max_parties=5, bound=2.0))


def test_altered_sealed_seed_is_one_opaque_error(shares_session):
    scheme, keys = shares_session
    aggregate = accumulate(scheme, keys, protect_all(scheme, keys, [np.ones(10)] * 2), [0, 1])
    seal = bytearray(aggregate.frames[-1])
    for pos in (0, 40, SEALED_BYTES - 1):  # the ephemeral key, the ciphertext, the tag
        altered = bytearray(seal)
        altered[pos] ^= 1
        tampered = Payload(aggregate.header, aggregate.frames[:-1] + (bytes(altered),))
        with pytest.raises(ProtectionError, match=r"^sealed seed of party 'p1': authentication failed$"):
            scheme.open(tampered, keys, CTX)


def test_wrong_session_round_layer_in_the_associated_data(shares_session):
    """The header says round 1, but the seal was bound to round 2: the AEAD refuses it."""
    scheme, keys = shares_session
    ctx2 = StatContext(CTX.session_id, 2, CTX.layer, CTX.statistic)
    for other in (ctx2, StatContext("sess-x", 1, 4, "G"), StatContext("sess-1", 1, 9, "G"),
                  StatContext("sess-1", 1, 4, "B")):
        good = protect_all(scheme, keys, [np.ones(10)] * 2)
        foreign = scheme.protect(np.ones(10), other.for_party("p1"), keys.public)
        relabelled = Payload({**good[1].header}, good[1].frames[:-1] + (foreign.frames[-1],))
        aggregate = accumulate(scheme, keys, [good[0], relabelled], [0, 1])
        with pytest.raises(ProtectionError, match="authentication failed"):
            scheme.open(aggregate, keys, CTX)


def test_coordinator_cannot_relabel_a_party(shares_session):
    scheme, keys = shares_session
    aggregate = accumulate(scheme, keys, protect_all(scheme, keys, [np.ones(10)] * 3), [0, 1])
    swapped = Payload({**aggregate.header, "parties": ["p0", "p2"]}, aggregate.frames)
    with pytest.raises(ProtectionError, match="party 'p2': authentication failed"):
        scheme.open(swapped, keys, CTX)


def test_sealed_seed_of_wrong_size_is_refused_by_the_coordinator(shares_session):
    scheme, keys = shares_session
    p = scheme.protect(np.ones(10), party(), keys.public)
    with pytest.raises(ProtectionError, match="sealed seed frame"):
        scheme.accumulator(keys.public, 10, CTX).add(Payload(p.header, p.frames[:-1] + (b"x" * 79,)))
