"""shares mode: exact Z_2^64 sums, dropouts, the 64-bit headroom, and property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_collab.protection import (
    ProtectionParams,
    StatContext,
    get_scheme,
    pack_symmetric,
    unpack_symmetric,
)
from secure_collab.protection.encoding import decode_fixed, encode_fixed, fixed_point_bits
from secure_collab.protection.shares import CHUNK, SEALED_BYTES

from .conftest import CTX, accumulate, protect_all


def fsum(values, include):
    """Correctly rounded float64 sum of the included parties (np.sum rounds at every step)."""
    return np.array([math.fsum(col) for col in zip(*(values[i] for i in include), strict=True)])


def exact_sum(values, include, frac_bits):
    total = np.zeros(values[0].shape[0], dtype=np.uint64)
    for i in include:
        total += encode_fixed(values[i], frac_bits)  # numpy uint64 arrays wrap mod 2^64
    return total


@pytest.mark.parametrize(("parties", "include"), [
    (2, [0, 1]), (3, [0, 1, 2]), (10, list(range(10))), (3, [0, 2]), (10, [1, 3, 4, 8, 9]),
])
def test_opened_sum_is_the_exact_fixed_point_sum(rng, parties, include):
    scheme = get_scheme("shares")
    keys = scheme.solver_setup(ProtectionParams("shares", max_parties=parties, bound=5.0))
    values = [rng.uniform(-5, 5, 1000) for _ in range(parties)]
    aggregate = accumulate(scheme, keys, protect_all(scheme, keys, values), include)
    f = fixed_point_bits(5.0, parties)
    encoded = scheme.open_encoded(aggregate, keys, CTX)
    assert np.array_equal(encoded, exact_sum(values, include, f))  # bit for bit
    opened = scheme.open(aggregate, keys, CTX)
    truth = fsum(values, include)
    # encoding resolution: each party rounds by <= 2^-(f+1); decoding rounds once to float64
    tol = len(include) * 2.0 ** -(f + 1) + np.spacing(np.abs(truth).max())
    assert np.abs(opened - truth).max() <= tol


def test_ten_parties_dim_1536_shape_meets_1e_7(rng):
    """The scale uses the 64-bit headroom: f = 62 - ceil(log2(10 * bound)), not 16 or 24 bits."""
    assert fixed_point_bits(1.0, 10) == 58
    scheme = get_scheme("shares")
    keys = scheme.solver_setup(ProtectionParams("shares", max_parties=10, bound=1.0))
    n = CHUNK + 7  # crosses a frame boundary
    values = [rng.uniform(-1, 1, n) for _ in range(10)]
    opened = scheme.open(accumulate(scheme, keys, protect_all(scheme, keys, values), range(10)), keys, CTX)
    truth = np.sum(values, axis=0)
    assert np.abs(opened - truth).max() / np.abs(truth).max() <= 1e-7


def test_extreme_values_at_the_bound_do_not_wrap():
    scheme = get_scheme("shares")
    keys = scheme.solver_setup(ProtectionParams("shares", max_parties=7, bound=3.0))
    for sign in (1.0, -1.0):
        values = [np.full(5, sign * 3.0) for _ in range(7)]
        opened = scheme.open(accumulate(scheme, keys, protect_all(scheme, keys, values), range(7)), keys, CTX)
        assert np.array_equal(opened, np.full(5, sign * 21.0))


def test_masked_vector_hides_the_values(rng):
    scheme = get_scheme("shares")
    keys = scheme.solver_setup(ProtectionParams("shares", max_parties=2, bound=1.0))
    x = np.zeros(4096)
    a = scheme.protect(x, CTX.for_party("p0"), keys.public)
    b = scheme.protect(x, CTX.for_party("p0"), keys.public)
    masked_a, masked_b = (np.frombuffer(p.frames[0], dtype=np.uint64) for p in (a, b))
    assert not np.array_equal(masked_a, masked_b)  # a fresh seed each time
    assert not np.any(masked_a == 0)  # zeros never show through (prob. 4096 * 2^-64)
    bits = np.unpackbits(masked_a.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01
    assert len(a.frames[-1]) == SEALED_BYTES


def test_coordinator_holds_one_sum_whatever_the_party_count(rng):
    scheme = get_scheme("shares")
    n = 5000
    held = {}
    for parties in (2, 20):
        keys = scheme.solver_setup(ProtectionParams("shares", max_parties=20, bound=1.0))
        acc = scheme.accumulator(keys.public, n, CTX)
        for p in protect_all(scheme, keys, [rng.uniform(-1, 1, n) for _ in range(parties)]):
            acc.add(p)
        held[parties] = acc.held_bytes
    assert held[2] == n * 8 + 2 * SEALED_BYTES
    assert held[20] - held[2] == 18 * SEALED_BYTES  # only the forwarded 80-byte seals grow


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
    scheme = get_scheme("shares")
    keys = scheme.solver_setup(ProtectionParams("shares", max_parties=parties, bound=bound))
    ctx = StatContext("prop", 0, 1, shape[0])
    aggregate = accumulate(scheme, keys, protect_all(scheme, keys, values, ctx), include, ctx)
    f = fixed_point_bits(bound, parties)
    encoded = scheme.open_encoded(aggregate, keys, ctx)
    assert np.array_equal(encoded, exact_sum(values, include, f))
    truth = fsum(values, include)
    err = np.abs(decode_fixed(encoded, f) - truth).max()
    assert err <= len(include) * 2.0 ** -(f + 1) + np.spacing(np.abs(truth).max())
