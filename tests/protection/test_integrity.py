"""The integrity MAC and what a cheating coordinator can do to an aggregate: each attack is refused.

Every attack runs in every mode against a positive control (the honest aggregate opens to the exact sum).
Attacks that need no crypto (a made-up party, a relabelled seal) are refused before anything is opened,
naming the party (PartyFault); attacks on the sum itself (flip, shift, scale, drop, swap, zeros under the
public key) are refused after opening by the range check or the MAC (IntegrityError). docs/integrity.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_collab.protection import IntegrityError, PartyFault, Payload, StatContext
from secure_collab.protection import integrity as mac
from secure_collab.protection.encoding import encode_fixed
from secure_collab.protection.sealing import SEED_INFO, seal_to

from .conftest import CTX, Session, accumulate, make_session, protect_all

MODES = ["plain", "shares", "ckks"]
Q = mac.Q


# --- the MAC's arithmetic against Python integers -------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, Q), st.integers(-(2**60) + 1, 2**60 - 1)), min_size=1, max_size=50))
def test_dot_mod_q_equals_python_integers(pairs):
    a = np.array([p[0] for p in pairs], dtype=np.uint64)
    u = np.array([p[1] for p in pairs], dtype=np.int64)
    assert mac.dot_mod_q(a, u) == sum(x * y for x, y in pairs) % Q


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**32), st.integers(0, 58), st.sampled_from([1, 7, 64, 4096]),
       st.booleans())
def test_tag_stream_protect_is_encode_fixed_then_tags_then_mask(n, seed, frac_bits, size, masked):
    """The compiled protect pass gives numpy's encoding (``encode_fixed``: x · 2^f rounded half to even) minus the
    mask's AES-CTR words mod 2^64, and the tags of the unmasked integers as Python integers compute them: ties,
    signs, the bound's edge (|x · 2^f| up to 2^58), values below one step, pieces of any size."""
    from secure_collab.protection import _primitives as hazmat

    rng = np.random.default_rng(seed)
    top = 2.0 ** (58 - frac_bits)
    x = rng.uniform(-top, top, n) * rng.choice([1.0, 1e-3, 1e-12, 2.0 ** -(frac_bits + 1)], n)
    x[rng.integers(0, n, 3)] = rng.choice([0.5, -0.5, 1.5, -2.5, 0.0, -0.0, top, -top], 3) * 2.0**-frac_bits
    key = bytes(range(32))
    out, stream = np.empty(n, dtype=np.uint64), mac.TagStream(b"k" * 32, b"label", size)
    mask = hazmat.Keystream(key, bytes(16)) if masked else None
    peak = 0.0
    for start in range(0, n, size):
        peak = max(peak, stream.protect(x[start : start + size], frac_bits, out[start : start + size], mask))
    want = encode_fixed(x, frac_bits)
    assert [int(v) for v in want[:4]] == [round(float(v) * 2**frac_bits) for v in x[:4]]  # Python's: half to even
    words = np.frombuffer(hazmat.aes_ctr_keystream(key, bytes(16), 8 * n), dtype=np.uint64)
    assert np.array_equal(out, want.view(np.uint64) - words if masked else want.view(np.uint64))
    assert peak == float(np.max(np.abs(x)))
    alphas = [[int(a) for a in mac.alpha(b"k" * 32, b"label", j, n)] for j in range(mac.TAGS)]
    assert stream.digests() == [sum(a * int(u) for a, u in zip(al, want, strict=True)) % Q for al in alphas]


def test_tag_stream_protect_reports_a_nan_wherever_it_is():
    x = np.zeros(100)
    x[57] = np.nan
    assert np.isnan(mac.TagStream(b"k" * 32, b"label", 100).protect(x, 10, np.empty(100, dtype=np.uint64)))


def test_dot_mod_q_at_the_extremes():
    a = np.full(1000, Q, dtype=np.uint64)  # α = q ≡ 0
    assert mac.dot_mod_q(a, np.full(1000, 2**60 - 1, dtype=np.int64)) == 0
    a = np.full(3, Q - 1, dtype=np.uint64)
    u = np.array([2**60 - 1, -(2**60 - 1), -1], dtype=np.int64)
    assert mac.dot_mod_q(a, u) == sum((Q - 1) * int(x) for x in u) % Q


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**32), st.sampled_from([1, 7, 64, 1000, 4096]), st.data())
def test_tag_stream_in_any_pieces_equals_python_integers(n, seed, size, data):
    """Every tag's digest of u fed in pieces of any lengths (at most ``size``) is ⟨α_j, u⟩ mod q, α_j continuing
    across pieces: the same integers as the definition, whatever the piece and buffer sizes."""
    rng = np.random.default_rng(seed)
    u = rng.integers(-(2**60) + 1, 2**60, n, dtype=np.int64)
    u[rng.integers(0, n, 3)] = rng.choice([2**60 - 1, -(2**60) + 1, 0, -1], 3)
    stream, start = mac.TagStream(b"k" * 32, b"label", size), 0
    while start < n:
        step = data.draw(st.integers(1, size))
        stream.update(u[start : start + step])
        start += step
    alphas = [[int(x) for x in mac.alpha(b"k" * 32, b"label", j, n)] for j in range(mac.TAGS)]
    assert stream.digests() == [sum(x * int(y) for x, y in zip(a, u, strict=True)) % Q for a in alphas]


def test_tag_stream_feeds_whole_vectors_in_its_own_piece_size():
    u = np.arange(-5000, 5000, dtype=np.int64) * 99_991
    small, whole = mac.TagStream(b"k" * 32, b"label", 64), mac.TagStream(b"k" * 32, b"label")
    small.update_all(u)
    whole.update_all(u)
    assert small.digests() == whole.digests()


@pytest.mark.parametrize("limb_bits", [8, 16, 28, 31])
def test_limbs_round_trip_and_add_up(limb_bits):
    rng = np.random.default_rng(limb_bits)
    tags = [[int(x) for x in rng.integers(0, Q, 2, dtype=np.uint64)] for _ in range(7)]
    limbs = [mac.to_limbs(t, limb_bits) for t in tags]
    assert all(mac.from_limbs(li, limb_bits) == t for li, t in zip(limbs, tags, strict=True))
    assert all(int(x) < 2**limb_bits for li in limbs for x in li)
    assert mac.from_limbs(np.sum(limbs, axis=0), limb_bits) == [sum(t[j] for t in tags) % Q for j in range(2)]


def test_alpha_depends_on_key_label_and_index():
    a = mac.alpha(b"k" * 32, b"label", 0, 64)
    assert a.max() <= Q and len(set(a.tolist())) == 64
    assert not np.array_equal(a, mac.alpha(b"k" * 32, b"label", 1, 64))
    assert not np.array_equal(a, mac.alpha(b"k" * 32, b"label2", 0, 64))
    assert not np.array_equal(a, mac.alpha(b"j" * 32, b"label", 0, 64))
    assert np.array_equal(a[:10], mac.alpha(b"k" * 32, b"label", 0, 10))


# --- attacks on the aggregate ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=MODES)
def session(request) -> Session:
    return make_session(request.param, 4, 50.0, min_parties=2, **({"precision_bits": 40}
                                                                   if request.param == "ckks" else {}))


def honest(s: Session, n: int = 300, include=(0, 1, 2), ctx: StatContext = CTX):
    rng = np.random.default_rng(7)
    values = [rng.uniform(-50, 50, n) for _ in range(4)]
    payloads = protect_all(s, values, ctx)
    return values, payloads, accumulate(s, payloads, include, ctx)


def truth_ok(s: Session, aggregate: Payload, values, include) -> None:
    opened = s.open(aggregate)
    f = s.scheme.frac_bits(s.keys.public)
    truth = sum(values[i] for i in include)
    assert np.abs(opened - truth).max() <= len(include) * 2.0 ** -f + 4 * np.spacing(np.abs(truth).max())


def with_frames(aggregate: Payload, frames) -> Payload:
    return Payload(dict(aggregate.header), tuple(frames))


def shifted(s: Session, aggregate: Payload, index: int, delta: int) -> Payload:
    """The coordinator adds ``delta`` (in encoded integers) to one coordinate of the sum."""
    frames = list(aggregate.frames)
    if s.scheme.mode == "ckks":
        import tenseal as ts

        m = s.scheme._public(s.keys.public).meta
        ctx = s.scheme._context_for(s.scheme._public(s.keys.public))
        slots = m["slots"]
        frame, pos = divmod(index, slots)
        vec = ts.ckks_vector_from(ctx, bytes(frames[frame]))
        count = vec.size()
        add = np.zeros(count)
        add[pos] = np.ldexp(float(delta), -m["grid_bits"])
        frames[frame] = (vec + ts.ckks_vector(ctx, add)).serialize()  # needs only the public key
    else:
        chunk = aggregate.header["chunk"]
        frame, pos = divmod(index, chunk)
        arr = np.frombuffer(frames[frame], dtype=np.uint64).copy()
        np.add(arr[pos : pos + 1], np.uint64(delta % 2**64), out=arr[pos : pos + 1])  # wraps mod 2^64
        frames[frame] = arr.tobytes()
    return with_frames(aggregate, frames)


def test_positive_control_honest_aggregate_opens(session):
    values, _, aggregate = honest(session)
    truth_ok(session, aggregate, values, (0, 1, 2))


@pytest.mark.parametrize("delta", [1, -1, 12345, 2**40, Q, -Q, 2 * Q, 2**61, 2**62, 2**63])
def test_shifted_sum_is_refused(session, delta):
    """Small shifts, and structured ones: multiples of q, powers of two, 2^63 (= −2^63 in int64). In ckks
    the coordinator can only add what it can encrypt at the session's scale (|shift| up to ~2^45 here)."""
    if session.scheme.mode == "ckks" and abs(delta) > 2**45:
        delta = int(np.sign(delta)) * 2**45 + 3
    values, _, aggregate = honest(session)
    with pytest.raises(IntegrityError, match="integrity check failed"):
        session.open(shifted(session, aggregate, 17, delta))


def test_shifted_tag_is_refused(session):
    _, _, aggregate = honest(session)
    with pytest.raises(IntegrityError, match="integrity check failed"):
        session.open(shifted(session, aggregate, 300, 1))  # the first tag limb follows the 300 data values


def test_data_and_tag_shifted_together_without_alpha_is_refused(session):
    """The coordinator shifts a value and guesses the tag change (it does not know α)."""
    _, _, aggregate = honest(session)
    both = shifted(session, shifted(session, aggregate, 5, 1000), 300, 1000)
    with pytest.raises(IntegrityError, match="integrity check failed"):
        session.open(both)


def test_scaled_sum_is_refused(session):
    values, _, aggregate = honest(session)
    if session.scheme.mode == "ckks":
        import tenseal as ts

        ctx = session.scheme._context_for(session.scheme._public(session.keys.public))
        n_data = len(aggregate.frames) - 6  # three parties' seal and signature follow the ciphertexts
        frames = [(ts.ckks_vector_from(ctx, bytes(f)) + ts.ckks_vector_from(ctx, bytes(f))).serialize()
                  if i < n_data else f for i, f in enumerate(aggregate.frames)]
    else:
        frames = [(np.frombuffer(f, dtype=np.uint64) * np.uint64(2)).tobytes() if i == 0 else f
                  for i, f in enumerate(aggregate.frames)]
    with pytest.raises(IntegrityError):
        session.open(with_frames(aggregate, frames))


def test_listed_party_left_out_of_the_sum_is_refused(session):
    """p2 is listed with its genuine seal and signature, but its data are not in the sum."""
    values, payloads, _ = honest(session)
    two = accumulate(session, payloads, (0, 1))
    extras = payloads[2].frames[-2:]
    forged = Payload({**two.header, "parties": ["p0", "p1", "p2"]}, two.frames + extras)
    with pytest.raises(IntegrityError):
        session.open(forged)
    truth_ok(session, two, values, (0, 1))  # the honest two-party aggregate still opens


def test_swapped_contribution_is_refused(session):
    """p1's data from another chunk (same length) put under p1's seal and signature for this chunk."""
    other_ctx = StatContext(CTX.session_id, CTX.round, CTX.layer, CTX.statistic, chunk=1)
    _, other, _ = honest(session, ctx=other_ctx)
    values, payloads, _ = honest(session)
    swapped = Payload(payloads[1].header, other[1].frames[:-2] + payloads[1].frames[-2:])
    with pytest.raises(IntegrityError):
        session.open(accumulate(session, [payloads[0], swapped, payloads[2]], (0, 1, 2)))
    # and the whole of another chunk's contribution (with its own seal and signature) is refused unopened
    whole = Payload(payloads[1].header, other[1].frames)
    with pytest.raises(PartyFault, match="p1"):
        session.open(accumulate(session, [payloads[0], whole, payloads[2]], (0, 1, 2)))


def test_contribution_replayed_from_another_attempt_is_refused_unopened(session):
    old_ctx = StatContext(CTX.session_id, CTX.round, CTX.layer, CTX.statistic, attempt=1)
    _, old, _ = honest(session, ctx=old_ctx)
    _, payloads, _ = honest(session)
    replay = Payload(payloads[2].header, old[2].frames)
    with pytest.raises(PartyFault, match="p2"):
        session.open(accumulate(session, [payloads[0], payloads[1], replay], (0, 1, 2)))


def test_made_up_party_is_refused_unopened_and_named(session):
    """The coordinator adds 'mallory' (not in the roster), or poses as roster party p3 with a seed it
    sealed itself to the solver: neither signs as a roster party."""
    values, payloads, aggregate = honest(session, include=(0, 1))
    for fake in ("mallory", "p3"):
        seed = bytes(32)
        ctx = CTX.for_party(fake)
        m = session.scheme._public(session.keys.public).meta
        sealed = seal_to(bytes.fromhex(m["solver_x25519"]), seed, SEED_INFO, ctx.label(), bytes(range(32)))
        forged = Payload({**aggregate.header, "parties": ["p0", "p1", fake]},
                         aggregate.frames + (sealed, bytes(64)))
        with pytest.raises(PartyFault, match=f": {fake}$") as err:
            session.open(forged)
        assert err.value.parties == (fake,)


def test_zeros_under_the_public_key_in_place_of_a_party_are_refused():
    """ckks: the coordinator keeps p2's seal and signature but replaces its ciphertexts by encryptions of
    zeros (data and tags) made with the public key: the tag pad ρ_p2 is missing from the sum."""
    import tenseal as ts

    s = make_session("ckks", 4, 50.0)
    _, payloads, _ = honest(s, include=(0, 1))
    ctx = s.scheme._context_for(s.scheme._public(s.keys.public))
    zeros = tuple(ts.ckks_vector(ctx, np.zeros(ts.ckks_vector_from(ctx, bytes(f)).size())).serialize()
                  for f in payloads[2].frames[:-2])
    fake = Payload(payloads[2].header, zeros + payloads[2].frames[-2:])
    with pytest.raises(IntegrityError, match="integrity check failed"):
        s.open(accumulate(s, [payloads[0], payloads[1], fake], (0, 1, 2)))


def test_over_bound_contribution_from_a_hostile_party_is_refused_after_opening():
    """A party bypasses its own bound check (shares): the sum leaves the bound of in-bound parties."""
    s = make_session("shares", 4, 50.0)
    _, payloads, _ = honest(s, include=(0, 1))
    frames = list(payloads[2].frames)
    arr = np.frombuffer(frames[0], dtype=np.uint64).copy()
    np.add(arr[3:4], np.uint64(2**62), out=arr[3:4])  # a huge value hidden under its own mask (wraps)
    poisoned = Payload(payloads[2].header, (arr.tobytes(), *frames[1:]))
    with pytest.raises(IntegrityError, match="integrity check failed") as err:
        s.open(accumulate(s, [payloads[0], payloads[1], poisoned], (0, 1, 2)))
    assert err.value.detail.startswith("range")  # for the solver's own log only
