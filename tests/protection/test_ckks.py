"""ckks mode: parameter choice, precision, the public context, and ciphertexts from elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secure_collab.protection import Payload, ProtectionError, ProtectionParams, StatContext, get_scheme
from secure_collab.protection.ckks import HE_STANDARD_128, choose_parameters

from .conftest import CTX, accumulate, protect_all


@pytest.fixture(scope="module")
def session():
    scheme = get_scheme("ckks")
    return scheme, scheme.solver_setup(ProtectionParams("ckks", max_parties=10, bound=8.0))


def test_parameters_are_the_smallest_secure_ones():
    p = choose_parameters(10)
    assert p["poly_modulus_degree"] == 4096  # 2048 cannot hold 10 parties at 30 bits (54-bit limit)
    assert sum(p["coeff_mod_bit_sizes"]) <= HE_STANDARD_128[4096]
    assert p["error_bits"] <= -30
    small = choose_parameters(2, precision_bits=8)
    assert small["poly_modulus_degree"] == 2048
    big = choose_parameters(1000, precision_bits=60)
    assert big["poly_modulus_degree"] > 4096 and len(big["coeff_mod_bit_sizes"]) > 2
    for params in (p, small, big):
        assert sum(params["coeff_mod_bit_sizes"]) <= HE_STANDARD_128[params["poly_modulus_degree"]]


def test_sum_within_the_stated_error_with_dropouts(session, rng):
    scheme, keys = session
    n = 5000  # three ciphertexts of 2048 slots, the last one partial
    values = [rng.uniform(-8, 8, n) for _ in range(4)]
    include = [0, 2, 3]
    opened = scheme.open(accumulate(scheme, keys, protect_all(scheme, keys, values), include), keys, CTX)
    truth = np.sum([values[i] for i in include], axis=0)
    # stated bound: 2^error_bits relative to the pre-scaled bound, plus the release rounding
    meta_error = 2.0 ** choose_parameters(10)["error_bits"] * 8.0
    assert np.abs(opened - truth).max() <= 2 * meta_error
    assert np.abs(opened - truth).max() / np.abs(truth).max() <= 1e-6


def test_public_context_has_no_secret_key(session):
    import tenseal as ts

    _, keys = session
    body = keys.public[8 + int.from_bytes(keys.public[4:8], "big") :]
    public = ts.context_from(body)
    assert not public.has_secret_key() and public.is_public()
    vec = ts.ckks_vector(public, [1.0, 2.0])
    with pytest.raises(ValueError):
        vec.decrypt()


def test_ciphertext_from_another_context_is_refused(session, rng):
    scheme, keys = session
    other = scheme.solver_setup(ProtectionParams("ckks", max_parties=10, bound=8.0))  # same params, new key
    x = rng.uniform(-8, 8, 100)
    foreign = scheme.protect(x, CTX.for_party("p9"), other.public)
    acc = scheme.accumulator(keys.public, 100, CTX)
    with pytest.raises(ProtectionError, match="other public parameters"):
        acc.add(foreign)
    # a party that lies about the context digest: parses (same parameters) but cannot decrypt sensibly
    mine = scheme.protect(x, CTX.for_party("p0"), keys.public)
    acc.add(mine)
    forged = Payload({**foreign.header, "public": mine.header["public"]}, foreign.frames)
    acc.add(forged)
    with pytest.raises(ProtectionError, match="another key or was altered"):
        scheme.open(acc.aggregate(), keys, CTX)


def test_ciphertext_with_other_parameters_is_refused(session, rng):
    scheme, keys = session
    small = ProtectionParams("ckks", max_parties=2, bound=8.0, extra={"precision_bits": 8})
    other = scheme.solver_setup(small)
    foreign = scheme.protect(rng.uniform(-8, 8, 10), CTX.for_party("p1"), other.public)
    mine = scheme.protect(rng.uniform(-8, 8, 10), CTX.for_party("p1"), keys.public)
    acc = scheme.accumulator(keys.public, 10, CTX)
    with pytest.raises(ProtectionError, match="does not parse under the session context"):
        acc.add(Payload(mine.header, foreign.frames))
    assert acc.parties == ()


def test_altered_or_truncated_ciphertext_is_refused_all_or_nothing(session, rng):
    scheme, keys = session
    n = 3000  # two frames
    good = scheme.protect(rng.uniform(-8, 8, n), CTX.for_party("p0"), keys.public)
    bad = scheme.protect(rng.uniform(-8, 8, n), CTX.for_party("p1"), keys.public)
    acc = scheme.accumulator(keys.public, n, CTX)
    acc.add(good)
    truncated = Payload(bad.header, (bad.frames[0], bytes(bad.frames[1])[:-100]))
    with pytest.raises(ProtectionError, match="frame 1"):
        acc.add(truncated)
    tiny = Payload(bad.header, (bad.frames[0], b"xx" * 50))  # parses as an empty vector in TenSEAL
    with pytest.raises(ProtectionError, match="frame 1"):
        acc.add(tiny)
    assert acc.parties == ("p0",)
    acc.add(bad)  # the refused attempts left no trace in the running sum
    assert acc.parties == ("p0", "p1")


def test_precision_target_at_scale(session):
    """The chosen scale leaves the stated error far below the 1e-6 acceptance target."""
    p = choose_parameters(10)
    assert 2.0 ** p["error_bits"] < 1e-9
    assert p["scale_bits"] == math.ceil(math.log2(10) + math.log2(
        8 * math.sqrt(2) * 3.2 * 4096 + 6 * 3.2 * 64 + 16 * 3.2 * 4096)) + 30


@pytest.mark.slow
def test_ten_parties_dim_1536_meets_1e_6(rng):
    from secure_collab.protection import triangle_size

    scheme = get_scheme("ckks")
    keys = scheme.solver_setup(ProtectionParams("ckks", max_parties=10, bound=1.0))
    n = triangle_size(1536)
    ctx = StatContext("slow", 0, 0, "G")
    acc = scheme.accumulator(keys.public, n, ctx)
    truth = np.zeros(n)
    for i in range(10):
        x = rng.uniform(-1, 1, n)
        truth += x
        acc.add(scheme.protect(x, ctx.for_party(f"p{i}"), keys.public))
    opened = scheme.open(acc.aggregate(), keys, ctx)
    assert np.abs(opened - truth).max() / np.abs(truth).max() <= 1e-6
