"""The OPRF against RFC 9497's test vectors, and the padded batches the tag exchange uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secure_collab.protection import oprf
from secure_collab.protection.base import ProtectionError

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "rfc9497_oprf_ristretto255.json").read_text())


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["input"][:6])
def test_rfc9497_vectors(v):
    key, x, r = bytes.fromhex(VECTORS["skSm"]), bytes.fromhex(v["input"]), bytes.fromhex(v["blind"])
    blinded = oprf.blind(x, r)
    assert blinded.hex() == v["blinded_element"]
    evaluated = oprf.blind_evaluate(key, blinded)
    assert evaluated.hex() == v["evaluation_element"]
    assert oprf.finalize(x, r, evaluated).hex() == v["output"]


def test_expand_message_xmd_rfc9380_sha512_vector():
    # RFC 9380 K.3, expand_message_xmd(SHA-512), DST "QUUX-V01-CS02-with-expander-SHA512-256", msg "", 0x20 bytes
    out = oprf.expand_message_xmd(b"", b"QUUX-V01-CS02-with-expander-SHA512-256", 0x20)
    assert out.hex() == "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"
    long = oprf.expand_message_xmd(b"abc", b"QUUX-V01-CS02-with-expander-SHA512-256", 0x80)
    assert long.hex().startswith("7f1dddd13c08b543f2e2037b14cefb25")


def test_batches_pad_to_fixed_size_and_evaluate_only_the_declared_count():
    key = oprf.new_key()
    inputs = [b"fact-1", b"fact-2", b"fact-3"]
    batch, blinds = oprf.blind_batch(inputs, slots=8)
    assert len(batch) == 8 * oprf.ELEMENT_BYTES
    answer = oprf.evaluate_batch(key, batch, slots=8, count=3)
    tags = oprf.finalize_batch(inputs, blinds, answer, slots=8)
    assert tags == [oprf.finalize(x, b"\x01" + bytes(31), oprf.blind_evaluate(key, oprf.blind(x, b"\x01" + bytes(31))))
                    [:oprf.TAG_BYTES] for x in inputs]  # the same tag whatever the blind
    again, blinds2 = oprf.blind_batch(inputs, slots=8)
    assert again[:96] != batch[:96]  # fresh blinds: the coordinator cannot link two requests for one fact
    assert oprf.finalize_batch(inputs, blinds2, oprf.evaluate_batch(key, again, 8, 3), 8) == tags
    # past the declared count the party gets random elements, not evaluations
    over = oprf.finalize_batch(inputs, blinds, oprf.evaluate_batch(key, batch, slots=8, count=2), slots=8)
    assert over[:2] == tags[:2] and over[2] != tags[2]
    other = oprf.finalize_batch(inputs, blinds, oprf.evaluate_batch(oprf.new_key(), batch, 8, 3), 8)
    assert not set(other) & set(tags)  # another session's key: other tags


def test_bad_elements_and_counts_are_refused():
    key = oprf.new_key()
    with pytest.raises(ProtectionError, match="valid ristretto255"):
        oprf.blind_evaluate(key, bytes(32))
    with pytest.raises(ProtectionError, match="valid ristretto255"):
        oprf.blind_evaluate(key, b"\xff" * 32)
    with pytest.raises(ProtectionError, match="batch holds"):
        oprf.evaluate_batch(key, bytes(40), slots=2, count=1)
    batch, _ = oprf.blind_batch([b"x"], slots=2)
    with pytest.raises(ProtectionError, match="does not fit"):
        oprf.evaluate_batch(key, batch, slots=2, count=3)
