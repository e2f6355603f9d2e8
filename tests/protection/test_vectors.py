"""Known-answer tests read from tests/vectors: published standards, then our own frozen vectors."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secure_collab.protection import Authenticated, PartySecrets, Payload, ProtectionParams, StatContext
from secure_collab.protection import _primitives as hazmat
from secure_collab.protection import integrity as mac
from secure_collab.protection.encoding import decode_fixed, encode_fixed, fixed_point_bits
from secure_collab.protection.sealing import SEED_INFO, open_sealed, seal_to
from secure_collab.protection.shares import SharesScheme, mask_vector

VECTORS = Path(__file__).parent.parent / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def ctx_of(d: dict) -> StatContext:
    return StatContext(d["session_id"], d["round"], d["layer"], d["statistic"], d["party"], d["chunk"],
                       d["attempt"])


# --- published vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("rfc7748_x25519.json")["scalar_mult"], ids=lambda c: c["name"])
def test_x25519_rfc7748_scalar_mult(case):
    out = hazmat.x25519(bytes.fromhex(case["scalar"]), bytes.fromhex(case["u"]))
    assert out.hex() == case["output"]


def test_x25519_rfc7748_iterated():
    k = u = (9).to_bytes(32, "little")
    done = 0
    for case in load("rfc7748_x25519.json")["iterated"]:
        while done < case["iterations"]:
            k, u = hazmat.x25519(k, u), k
            done += 1
        assert k.hex() == case["output"]


def test_x25519_rfc7748_diffie_hellman():
    v = load("rfc7748_x25519.json")["diffie_hellman"]
    alice, bob = bytes.fromhex(v["alice_private"]), bytes.fromhex(v["bob_private"])
    assert hazmat.x25519_public(alice).hex() == v["alice_public"]
    assert hazmat.x25519_public(bob).hex() == v["bob_public"]
    assert hazmat.x25519(alice, bytes.fromhex(v["bob_public"])).hex() == v["shared"]
    assert hazmat.x25519(bob, bytes.fromhex(v["alice_public"])).hex() == v["shared"]


def test_x25519_refuses_low_order_point():
    with pytest.raises(hazmat.AuthenticationFailed):
        hazmat.x25519(bytes(range(32)), bytes(32))


@pytest.mark.parametrize("case", load("rfc5869_hkdf_sha256.json")["cases"], ids=lambda c: c["name"])
def test_hkdf_rfc5869(case):
    ikm, salt, info = (bytes.fromhex(case[k]) for k in ("ikm", "salt", "info"))
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()  # the extract step, for the PRK
    assert prk.hex() == case["prk"]
    assert hazmat.hkdf_sha256(ikm, salt or None, info, case["length"]).hex() == case["okm"]


@pytest.mark.parametrize("case", load("sp800_38a_aes_ctr.json")["cases"], ids=lambda c: c["name"])
def test_aes_ctr_sp800_38a(case):
    key, ctr = bytes.fromhex(case["key"]), bytes.fromhex(case["counter"])
    pt, ct = bytes.fromhex(case["plaintext"]), bytes.fromhex(case["ciphertext"])
    stream = hazmat.aes_ctr_keystream(key, ctr, len(pt))
    assert bytes(a ^ b for a, b in zip(pt, stream, strict=True)) == ct
    # the chunked writer continues the stream across calls of any size
    ks = hazmat.Keystream(key, ctr)
    buf = bytearray(len(pt))
    for lo, hi in [(0, 5), (5, 16), (16, 17), (17, 64)]:
        ks.fill(memoryview(buf)[lo:hi])
    assert bytes(buf) == stream


# --- our frozen vectors --------------------------------------------------------------------------


def test_mask_prg_frozen():
    v = load("mask_prg.json")
    ctx, seed = ctx_of(v["ctx"]), bytes.fromhex(v["seed"])
    out = np.zeros(40, dtype=np.uint64)
    mask_vector(out, seed, ctx, sign=+1)
    assert [str(x) for x in out] == v["first_40"]
    long = np.zeros(v["long_n"], dtype=np.uint64)
    mask_vector(long, seed, ctx, sign=+1)
    assert hashlib.sha256(long.tobytes()).hexdigest() == v["long_sha256"]
    assert np.array_equal(long[:40], out)


@pytest.mark.parametrize(
    "case", load("fixed_point.json")["cases"], ids=lambda c: f"b{c['bound']}-p{c['max_parties']}"
)
def test_fixed_point_frozen(case):
    f = fixed_point_bits(case["bound"], case["max_parties"])
    assert f == case["frac_bits"]
    values = np.array([float.fromhex(x) for x in case["values"]])
    enc = encode_fixed(values, f)
    assert [str(x) for x in enc] == case["encoded"]
    assert np.all(np.abs(decode_fixed(enc, f) - values) <= 2.0 ** -(f + 1))


def test_mac_frozen():
    v = load("mac.json")
    ctx, seed, key = ctx_of(v["ctx"]), bytes.fromhex(v["seed"]), bytes.fromhex(v["mac_key"])
    label = ctx.aggregate().label()
    assert label.decode() == v["label"]
    u = np.array([int(x) for x in v["u"]], dtype=np.int64)
    tag_key = hazmat.hkdf_sha256(seed, None, mac.TAG_KEY_INFO + ctx.label(), 32)
    assert [str(x) for x in mac.alpha(key, label, 0, 5)] == v["alpha_0_first_5"]
    assert [str(mac.tag_pad(tag_key, j)) for j in range(mac.TAGS)] == v["pads"]
    tags = mac.tags(u, key, label, tag_key)
    assert [str(t) for t in tags] == v["tags"]
    assert [str(x) for x in mac.to_limbs(tags, 31)] == v["limbs_31"]
    # and the tag is what its definition says, in Python integers
    for j in range(mac.TAGS):
        alpha = [int(a) for a in mac.alpha(key, label, j, len(u))]
        assert tags[j] == (sum(a * int(x) for a, x in zip(alpha, u, strict=True)) + int(v["pads"][j])) % mac.Q


def test_sealed_seed_and_shares_payload_frozen():
    v = load("shares_golden.json")
    ctx = ctx_of(v["ctx"])
    solver, eph, seed = (bytes.fromhex(v[k]) for k in ("solver_private", "ephemeral_private", "seed"))
    mac_key, release_key = bytes.fromhex(v["mac_key"]), bytes.fromhex(v["release_key"])
    signer = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["signing_private"]))
    scheme = SharesScheme()
    recipients = {k: bytes.fromhex(h) for k, h in v["recipients"].items()}
    keys = scheme._setup_from_parts(ProtectionParams("shares", v["max_parties"], v["bound"]), recipients, solver,
                                    mac_key, release_key, {k: eph for k in recipients})
    assert keys.public.hex() == v["public"] and keys.bundles.hex() == v["bundles"]
    sealed = seal_to(hazmat.x25519_public(solver), seed, SEED_INFO, ctx.label(), eph)
    assert sealed.hex() == v["sealed_seed"]
    assert open_sealed(sealed, solver, SEED_INFO, ctx.label(), 32) == seed
    values = np.array([float.fromhex(x) for x in v["values"]])
    payload = scheme._protect_from_parts(values, ctx, keys.public, PartySecrets(mac_key, release_key), signer,
                                         seed, eph)
    assert payload.header == v["payload_header"]
    assert [bytes(f).hex() for f in payload.frames] == v["payload_frames"]
    golden = Payload(v["payload_header"], tuple(bytes.fromhex(f) for f in v["payload_frames"]))
    acc = scheme.accumulator(keys.public, len(values), ctx.aggregate())
    acc.add(golden, party=ctx.party)
    assert acc.parties == (ctx.party,)
    # one party's aggregate opens to its own values (min_parties is not checked at this level)
    auth = Authenticated((ctx.party,), (seed,))
    opened = scheme.open(acc.aggregate(), keys, ctx.aggregate(), auth)
    assert np.all(np.abs(opened - values) <= 2.0 ** -(fixed_point_bits(v["bound"], v["max_parties"]) + 1))
