"""``protection.encoding_frac_bits``: a session's encoding step from its public settings, as each mode sets it up."""

from __future__ import annotations

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

