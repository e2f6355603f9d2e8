"""``protection.encoding_frac_bits``: a session's encoding step from its public settings, as each mode sets it up,
and the noise words of ``protection.randomness`` (AES-256-CTR under an HKDF key per label)."""

from __future__ import annotations

import numpy as np
import pytest

from secure_collab.protection import ProtectionError, ProtectionParams, encoding_frac_bits, get_scheme
from secure_collab.protocol.messages import MAX_PARTIES


@pytest.mark.parametrize(("mode", "extra"), [("shares", {}), ("plain", {}), ("ckks", {}),
                                             ("ckks", {"precision_bits": 20})])
@pytest.mark.parametrize("parties", [2, 3, 17])
def test_the_step_is_the_one_the_mode_sets_up_with(mode, extra, parties):
    for bound in (1000.0, 1e5, 3.5):
        meta, _, _ = get_scheme(mode)._public_meta(ProtectionParams(mode, parties, bound, 2, dict(extra)))
        assert encoding_frac_bits(mode, bound, parties, extra) == meta["frac_bits"]
        # the step at the largest roster is a multiple of this roster's: noise on it survives any encoding
        assert encoding_frac_bits(mode, bound, MAX_PARTIES, extra) <= meta["frac_bits"]


def test_the_step_never_grows_finer_with_more_parties_and_unknown_modes_are_refused():
    for mode in ("shares", "ckks"):
        bits = [encoding_frac_bits(mode, 1e5, p) for p in (2, 3, 4, 5, 8, 9, 100, 513, MAX_PARTIES)]
        assert bits == sorted(bits, reverse=True)
    with pytest.raises(ProtectionError, match="unknown protection mode"):
        encoding_frac_bits("paillier", 1e5, 3)


def test_noise_words_are_the_aes_ctr_keystream_of_the_labels_hkdf_key():
    from secure_collab.protection import _primitives as hazmat
    from secure_collab.protection.randomness import NOISE_INFO, WordSource

    key = bytes(range(32))
    source = WordSource(key)
    stream = source.stream("round 0 layer 3 G")
    got = np.concatenate([stream.words(5), stream.words(11)])  # a stream continues where it stopped
    want = hazmat.aes_ctr_keystream(hazmat.hkdf_sha256(key, None, NOISE_INFO + b"round 0 layer 3 G", 32),
                                    bytes(16), 16 * 8)
    assert got.dtype == np.uint64 and got.tobytes() == want
    assert np.array_equal(source.stream("round 0 layer 3 G").words(16), got)  # the same label: the same words
    assert not np.array_equal(source.stream("round 0 layer 3 B").words(16), got)
    assert not np.array_equal(WordSource.fresh().stream("round 0 layer 3 G").words(16), got)
    with pytest.raises(ValueError, match="32 bytes"):
        WordSource(bytes(16))
