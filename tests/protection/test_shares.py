"""shares mode: exact Z_2^64 sums, dropouts, the headroom below the MAC prime, and property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_collab.protection import StatContext, pack_symmetric, unpack_symmetric
from secure_collab.protection._array import FRAME_VALUES, LIMB_BITS
from secure_collab.protection.encoding import decode_fixed, decode_fixed_in_place, encode_fixed, fixed_point_bits
from secure_collab.protection.integrity import tag_values
from secure_collab.protection.scheme import SEALED_SEED_BYTES

from .conftest import CTX, accumulate, make_session, protect_all


def fsum(values, include):
    """Correctly rounded float64 sum of the included parties (np.sum rounds at every step)."""
    return np.array([math.fsum(col) for col in zip(*(values[i] for i in include), strict=True)])


def exact_sum(values, include, frac_bits):
    """The sum of the parties' fixed-point integers, in Python integers (an independent reference)."""
    return [sum(int(encode_fixed(values[i], frac_bits)[j]) for i in include) for j in range(values[0].shape[0])]




@pytest.mark.parametrize(("parties", "include"), [
    (2, [0, 1]), (3, [0, 1, 2]), (10, list(range(10))), (3, [0, 2]), (10, [1, 3, 4, 8, 9]),
])
def test_opened_sum_is_the_exact_fixed_point_sum(rng, parties, include):
    s = make_session("shares", parties, 5.0)
    values = [rng.uniform(-5, 5, 1000) for _ in range(parties)]
    aggregate = accumulate(s, protect_all(s, values), include)
    f = fixed_point_bits(5.0, parties)
    assert [int(x) for x in s.open_encoded(aggregate)] == exact_sum(values, include, f)  # bit for bit
    opened = s.open(aggregate)
    truth = fsum(values, include)
    # encoding resolution: each party rounds by <= 2^-(f+1); decoding rounds once to float64
    tol = len(include) * 2.0 ** -(f + 1) + np.spacing(np.abs(truth).max())
    assert np.abs(opened - truth).max() <= tol


def test_ten_parties_dim_1536_shape_meets_1e_7(rng):
    """The scale uses the headroom below the MAC prime: f = 59 - ceil(log2(10 * bound)), not 16 or 24 bits."""
    assert fixed_point_bits(1.0, 10) == 55
    s = make_session("shares", 10, 1.0)
    n = FRAME_VALUES + 7  # crosses a frame boundary
    values = [rng.uniform(-1, 1, n) for _ in range(10)]
    opened = s.open(accumulate(s, protect_all(s, values), range(10)))
    truth = np.sum(values, axis=0)
    assert np.abs(opened - truth).max() / np.abs(truth).max() <= 1e-7


def test_decode_in_place_equals_decode():
    """The solver decodes the opened integers where they lie: the same floats as a fresh decode, piece by piece."""
    rng = np.random.default_rng(3)
    ints = rng.integers(-(2**60) + 1, 2**60, 100_003, dtype=np.int64)
    ints[:6] = [2**60 - 1, -(2**60) + 1, 0, -1, 1, 2**53 + 1]
    for frac_bits in (0, 30, 55, 59):
        want = decode_fixed(ints, frac_bits)
        work = ints.copy()
        got = decode_fixed_in_place(work, frac_bits)
        assert got.dtype == np.float64 and np.shares_memory(got, work)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("mode", ["shares", "plain"])
def test_open_equals_the_decoded_exact_sum_across_frames(rng, mode):
    s = make_session(mode, 3, 2.0)
    n = FRAME_VALUES + 70_001  # crosses a frame boundary and the kernels' pieces
    aggregate = accumulate(s, protect_all(s, [rng.uniform(-2, 2, n) for _ in range(3)]), [0, 1, 2])
    opened = s.open(aggregate)
    assert opened.shape == (n,) and opened.dtype == np.float64
    assert np.array_equal(opened, decode_fixed(s.open_encoded(aggregate), fixed_point_bits(2.0, 3)))


def test_extreme_values_at_the_bound_do_not_wrap():
    s = make_session("shares", 7, 3.0)
    for sign in (1.0, -1.0):
        values = [np.full(5, sign * 3.0) for _ in range(7)]
        opened = s.open(accumulate(s, protect_all(s, values), range(7)))
        assert np.array_equal(opened, np.full(5, sign * 21.0))


def test_masked_vector_hides_the_values(rng):
    s = make_session("shares", 2, 1.0)
    x = np.zeros(4096)
    a = s.protect(x, CTX.for_party("p0"))
    b = s.protect(x, CTX.for_party("p0"))
    masked_a, masked_b = (np.frombuffer(p.frames[0], dtype=np.uint64) for p in (a, b))
    assert not np.array_equal(masked_a, masked_b)  # a fresh seed each time
    assert not np.any(masked_a == 0)  # zeros never show through (prob. 4096 * 2^-64)
    bits = np.unpackbits(masked_a.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01
    assert len(a.frames[-2]) == SEALED_SEED_BYTES and len(a.frames[-1]) == 64  # seal, signature


def test_coordinator_holds_one_sum_whatever_the_party_count(rng):
    n = 5000
    held = {}
    per_party = SEALED_SEED_BYTES + 64  # the forwarded seal and signature
    for parties in (2, 20):
        s = make_session("shares", 20, 1.0)
        acc = s.scheme.accumulator(s.keys.public, n, CTX)
        for i, p in enumerate(protect_all(s, [rng.uniform(-1, 1, n) for _ in range(parties)])):
            acc.add(p, party=f"p{i}")
        held[parties] = acc.held_bytes
    assert held[2] == (n + tag_values(LIMB_BITS)) * 8 + 2 * per_party
    assert held[20] - held[2] == 18 * per_party  # only the 144 bytes per party grow


@pytest.mark.parametrize("mode", ["shares", "plain"])
def test_sum_bytes_bound_is_what_a_running_sum_holds(rng, mode):
    """The coordinator sizes its memory window with ``sum_bytes_bound`` before any chunk arrives: it must be what an
    accumulator holds once every party is in (array modes: exactly)."""
    s = make_session(mode, 20, 1.0)
    for n, parties in ((1, 2), (5000, 3), (4096, 20)):
        acc = s.scheme.accumulator(s.keys.public, n, CTX)
        for i, p in enumerate(protect_all(s, [rng.uniform(-1, 1, n) for _ in range(parties)])):
            acc.add(p, party=f"p{i}")
        assert acc.held_bytes == s.scheme.sum_bytes_bound(s.keys.public, n, parties)


# a statistic is either G (symmetric d x d, sent as its triangle) or B (d_v x d_k, raveled)
SHAPES = st.one_of(st.tuples(st.just("G"), st.integers(1, 24)),
                   st.tuples(st.just("B"), st.integers(1, 16), st.integers(1, 16)))


def random_statistic(gen, shape, bound):
    if shape[0] == "G":
        a = gen.uniform(-bound, bound, (shape[1], shape[1]))
        full = np.triu(a) + np.triu(a, 1).T  # symmetric, entries within the bound
        packed = pack_symmetric(full)
        assert np.array_equal(unpack_symmetric(packed, shape[1]), full)
        return packed
    return gen.uniform(-bound, bound, shape[1:]).ravel()


@settings(max_examples=40, deadline=None)
@given(
    shape=SHAPES,
    parties=st.integers(2, 8),
    bound_exp=st.integers(-20, 20),
    data=st.data(),
)
def test_property_random_shapes_parties_and_subsets(shape, parties, bound_exp, data):
    bound = 2.0**bound_exp * 1.37
    include = sorted(data.draw(st.sets(st.integers(0, parties - 1), min_size=2)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    gen = np.random.default_rng(seed)
    values = [random_statistic(gen, shape, bound) for _ in range(parties)]
    values[0][:2] = bound  # the bound itself is allowed
    s = make_session("shares", parties, bound)
    ctx = StatContext("prop", 0, 1, shape[0])
    aggregate = accumulate(s, protect_all(s, values, ctx), include, ctx)
    f = fixed_point_bits(bound, parties)
    assert [int(x) for x in s.open_encoded(aggregate, ctx)] == exact_sum(values, include, f)
    opened = s.open(aggregate, ctx)
    truth = fsum(values, include)
    err = np.abs(opened - truth).max()
    assert err <= len(include) * 2.0 ** -(f + 1) + np.spacing(np.abs(truth).max())
