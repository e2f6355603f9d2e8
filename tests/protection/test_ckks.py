"""ckks mode: parameter choice, precision, the public context, and ciphertexts from elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secure_collab.protection import IntegrityError, Payload, ProtectionError, StatContext
from secure_collab.protection.ckks import HE_STANDARD_128, choose_parameters, grid_bits

from .conftest import CTX, accumulate, make_session, protect_all


@pytest.fixture(scope="module")
def session():
    return make_session("ckks", 10, 8.0)


def test_sum_bytes_bound_is_what_a_running_sum_holds(session, rng):
    """The coordinator sizes its memory window with ``sum_bytes_bound``: one running ciphertext per frame of slots
    (2 polynomials x N x primes x 8 bytes), plus each party's seal and signature."""
    s = session
    for n, parties in ((1, 2), (5000, 3)):
        acc = s.scheme.accumulator(s.keys.public, n, CTX)
        for i, p in enumerate(protect_all(s, [rng.uniform(-8, 8, n) for _ in range(parties)])):
            acc.add(p, party=f"p{i}")
        assert acc.held_bytes == s.scheme.sum_bytes_bound(s.keys.public, n, parties)


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


def test_sum_is_the_exact_grid_sum_with_dropouts(session, rng):
    s = session
    n = 5000  # three ciphertexts of 2048 slots, the last one partial
    values = [rng.uniform(-8, 8, n) for _ in range(4)]
    include = [0, 2, 3]
    aggregate = accumulate(s, protect_all(s, values), include)
    # the decrypted sum, rounded to the grid, is exactly the sum of the parties' grid integers
    f = s.scheme.frac_bits(s.keys.public)
    grid = [np.rint(np.ldexp(values[i], f)).astype(np.int64) for i in include]
    assert np.array_equal(s.open_encoded(aggregate), np.sum(grid, axis=0))
    opened = s.open(aggregate)
    truth = np.sum([values[i] for i in include], axis=0)
    # the only error left is the grid's rounding: half a step per party
    assert np.abs(opened - truth).max() <= len(include) * 2.0 ** -(f + 1)
    assert np.abs(opened - truth).max() / np.abs(truth).max() <= 1e-6


def test_grid_leaves_room_for_the_noise_and_the_mac():
    for parties, prec in ((2, 8), (10, 30), (20, 48), (1000, 60)):
        p = choose_parameters(parties, prec)
        g = grid_bits(p["error_bits"], parties)
        assert p["error_bits"] <= -(g + 2)  # the noise stays below a quarter of the grid step
        assert parties * 2 ** (g + 1) < 2**61 - 1  # |shift| ≤ 2 P 2^g < q: no structured shift fits


def test_public_context_has_no_secret_key(session):
    import tenseal as ts

    keys = session.keys
    body = keys.public[8 + int.from_bytes(keys.public[4:8], "big") :]
    public = ts.context_from(body)
    assert not public.has_secret_key() and public.is_public()
    vec = ts.ckks_vector(public, [1.0, 2.0])
    with pytest.raises(ValueError):
        vec.decrypt()


def test_ciphertext_from_another_context_is_refused(session, rng):
    s = session
    other = make_session("ckks", 10, 8.0)  # same parameters, another key
    x = rng.uniform(-8, 8, 100)
    foreign = other.protect(x, CTX.for_party("p9"))
    acc = s.scheme.accumulator(s.keys.public, 100, CTX)
    with pytest.raises(ProtectionError, match="other public parameters"):
        acc.add(foreign)
    # a party that lies about the context digest: parses (same parameters) but decrypts to garbage
    mine = s.protect(x, CTX.for_party("p0"))
    acc.add(mine)
    liar = s.protect(x, CTX.for_party("p1"))  # its own seal and signature, another key's ciphertexts
    forged = Payload(liar.header, foreign.frames[:-2] + liar.frames[-2:])
    acc.add(forged)
    with pytest.raises(IntegrityError, match="integrity check failed"):
        s.open(acc.aggregate())


def test_ciphertext_with_other_parameters_is_refused(session, rng):
    s = session
    small = make_session("ckks", 2, 8.0, precision_bits=12)
    foreign = small.protect(rng.uniform(-8, 8, 10), CTX.for_party("p1"))
    mine = s.protect(rng.uniform(-8, 8, 10), CTX.for_party("p1"))
    acc = s.scheme.accumulator(s.keys.public, 10, CTX)
    with pytest.raises(ProtectionError, match="does not parse under the session context|holds"):
        acc.add(Payload(mine.header, foreign.frames[:-2] + mine.frames[-2:]))
    assert acc.parties == ()


def test_altered_or_truncated_ciphertext_is_refused_all_or_nothing(session, rng):
    s = session
    n = 3000  # two frames
    x0, x1 = rng.uniform(-8, 8, n), rng.uniform(-8, 8, n)
    good = s.protect(x0, CTX.for_party("p0"))
    bad = s.protect(x1, CTX.for_party("p1"))
    acc = s.scheme.accumulator(s.keys.public, n, CTX)
    acc.add(good)
    truncated = Payload(bad.header, (bad.frames[0], bytes(bad.frames[1])[:-100], *bad.frames[2:]))
    with pytest.raises(ProtectionError, match="frame 1"):
        acc.add(truncated)
    tiny = Payload(bad.header, (bad.frames[0], b"xx" * 50, *bad.frames[2:]))  # parses as an empty vector
    with pytest.raises(ProtectionError, match="frame 1"):
        acc.add(tiny)
    assert acc.parties == ("p0",)
    acc.add(bad)  # the refused attempts left no trace in the running sum
    assert acc.parties == ("p0", "p1")
    f = s.scheme.frac_bits(s.keys.public)
    assert np.abs(s.open(acc.aggregate()) - (x0 + x1)).max() <= 2.0 ** -f


def test_precision_target_at_scale(session):
    """The chosen scale leaves the stated error far below the 1e-6 acceptance target."""
    p = choose_parameters(10)
    assert 2.0 ** p["error_bits"] < 1e-9
    assert p["scale_bits"] == math.ceil(math.log2(10) + math.log2(
        8 * math.sqrt(2) * 3.2 * 4096 + 6 * 3.2 * 64 + 16 * 3.2 * 4096)) + 32


@pytest.mark.slow
def test_ten_parties_dim_1536_meets_1e_6(rng):
    from secure_collab.protection import triangle_size

    s = make_session("ckks", 10, 1.0)
    n = triangle_size(1536)
    ctx = StatContext("slow", 0, 0, "G")
    acc = s.scheme.accumulator(s.keys.public, n, ctx)
    truth = np.zeros(n)
    for i in range(10):
        x = rng.uniform(-1, 1, n)
        truth += x
        acc.add(s.protect(x, ctx.for_party(f"p{i}")))
    opened = s.open(acc.aggregate(), ctx)
    assert np.abs(opened - truth).max() / np.abs(truth).max() <= 1e-6
