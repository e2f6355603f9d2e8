"""Regenerate our own frozen vectors (mask PRG, fixed point, MAC, seal, golden payload, golden message).

Run only on a deliberate format change: the tests exist to catch any accidental one.
    /work/main/.venv/bin/python tests/vectors/make_frozen.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secure_collab.protection import PartySecrets, ProtectionParams, StatContext
from secure_collab.protection import _primitives as hazmat
from secure_collab.protection import integrity as mac
from secure_collab.protection.encoding import encode_fixed, fixed_point_bits
from secure_collab.protection.sealing import SEED_INFO, seal_to
from secure_collab.protection.shares import SharesScheme, mask_vector
from secure_collab.protocol.messages import PROTOCOL_VERSION, Message, MsgType

HERE = Path(__file__).parent
CTX = StatContext("vector-session", 2, 7, "G", "party-a", 3, 1)
SEED = bytes(range(32))
EPHEMERAL = bytes(range(64, 96))
SOLVER = bytes(range(128, 160))
MAC_KEY = bytes(range(160, 192))
RELEASE_KEY = bytes(range(192, 224))
SIGNING = bytes(range(224, 256))
VALUES = [0.0, 1.0, -1.0, 0.5, -0.25, 3.141592653589793, -2.718281828459045, 1e-12, -1e-12, 6.0, -6.0,
          0.1, 2.0**-30, 5.999999999999999]


def ctx_dict(ctx: StatContext) -> dict:
    return {"session_id": ctx.session_id, "round": ctx.round, "layer": ctx.layer, "statistic": ctx.statistic,
            "party": ctx.party, "chunk": ctx.chunk, "attempt": ctx.attempt}


def mask(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.uint64)
    mask_vector(out, SEED, CTX, sign=+1)
    return out


def main() -> None:
    long_n = 300_001  # crosses the 1 MiB keystream chunk and the 2^17-value frame boundary
    (HERE / "mask_prg.json").write_text(json.dumps({
        "description": "PRG(seed) for ctx: HKDF-SHA256(seed, info='secure-collab/v2/mask|'+label) -> "
                       "AES-256-CTR from counter 0, little-endian uint64",
        "seed": SEED.hex(), "ctx": ctx_dict(CTX),
        "first_40": [str(v) for v in mask(40)],
        "long_n": long_n, "long_sha256": hashlib.sha256(mask(long_n).tobytes()).hexdigest(),
    }, indent=2) + "\n")

    cases = []
    for bound, parties in [(6.0, 10), (1.0, 2), (1000.0, 20), (1e-3, 3)]:
        f = fixed_point_bits(bound, parties)
        vals = np.array([v for v in VALUES if abs(v) <= bound], dtype=np.float64)
        cases.append({"bound": bound, "max_parties": parties, "frac_bits": f,
                      "values": [float(v).hex() for v in vals],
                      "encoded": [str(v) for v in encode_fixed(vals, f)]})
    (HERE / "fixed_point.json").write_text(json.dumps({
        "description": "round(x * 2^f) as int64; f = 59 - ceil(log2(P * bound))",
        "cases": cases}, indent=2) + "\n")

    u = encode_fixed(np.array(VALUES), fixed_point_bits(6.0, 10))
    tag_key = hazmat.hkdf_sha256(SEED, None, mac.TAG_KEY_INFO + CTX.label(), 32)
    label = CTX.for_party("").label()
    (HERE / "mac.json").write_text(json.dumps({
        "description": "integrity MAC over Z_q, q = 2^61-1: alpha_j = 61-bit words of AES-256-CTR(HKDF(mac_key, "
                       "'secure-collab/v2/mac-alpha|' + label + '|' + j)); rho_j = PRF(tag_key, j); "
                       "t_j = <alpha_j, u> + rho_j mod q; tag_key = HKDF(seed, 'secure-collab/v2/tag-key|' + "
                       "party label)",
        "mac_key": MAC_KEY.hex(), "seed": SEED.hex(), "ctx": ctx_dict(CTX), "label": label.decode(),
        "u": [str(x) for x in u],
        "alpha_0_first_5": [str(x) for x in mac.alpha(MAC_KEY, label, 0, 5)],
        "pads": [str(mac.tag_pad(tag_key, j)) for j in range(mac.TAGS)],
        "tags": [str(t) for t in mac.tags(u, MAC_KEY, label, tag_key)],
        "limbs_31": [str(x) for x in mac.to_limbs(mac.tags(u, MAC_KEY, label, tag_key), 31)],
    }, indent=2) + "\n")

    scheme = SharesScheme()
    params = ProtectionParams("shares", max_parties=2, bound=6.0)
    recipients = {"party-a": hazmat.x25519_public(bytes(range(32, 64))), "party-b": hazmat.x25519_public(SOLVER)}
    keys = scheme._setup_from_parts(params, recipients, SOLVER, MAC_KEY, RELEASE_KEY,
                                    {"party-a": EPHEMERAL, "party-b": EPHEMERAL})
    solver_public = hazmat.x25519_public(SOLVER)
    sealed = seal_to(solver_public, SEED, SEED_INFO, CTX.label(), EPHEMERAL)
    signer = Ed25519PrivateKey.from_private_bytes(SIGNING)
    payload = scheme._protect_from_parts(np.array(VALUES), CTX, keys.public, PartySecrets(MAC_KEY, RELEASE_KEY),
                                         signer, SEED, EPHEMERAL)
    (HERE / "shares_golden.json").write_text(json.dumps({
        "description": "sealed seed and a whole signed shares party payload (protocol v2) from fixed parts",
        "solver_private": SOLVER.hex(), "ephemeral_private": EPHEMERAL.hex(), "seed": SEED.hex(),
        "mac_key": MAC_KEY.hex(), "release_key": RELEASE_KEY.hex(), "signing_private": SIGNING.hex(),
        "recipients": {k: v.hex() for k, v in recipients.items()},
        "ctx": ctx_dict(CTX), "bound": 6.0, "max_parties": 2,
        "public": keys.public.hex(), "bundles": keys.bundles.hex(), "sealed_seed": sealed.hex(),
        "values": [float(v).hex() for v in VALUES],
        "payload_header": payload.header,
        "payload_frames": [bytes(f).hex() for f in payload.frames],
    }, indent=2) + "\n")

    msg = Message(MsgType.CONTRIB, "golden-session", 0, 3, "G", "a", 42, "ab" * 32,
                  {"attempt": 0, "chunk": 1, "n_chunks": 3, "offset": 7, "count": 7,
                   "payload": {"scheme": "example", "n": 7}},
                  (bytes(range(16)), b"sealed-seed"))
    assert msgpack.unpackb(msg.to_frames()[0])["v"] == PROTOCOL_VERSION
    (HERE / "protocol_golden_message.json").write_text(json.dumps({
        "description": f"secure-collab wire protocol v{PROTOCOL_VERSION}: one CONTRIB message. Frame 0 is the "
                       "msgpack header (keys in this order), frames 1.. the raw payload frames. Changing the format "
                       "must change this file and PROTOCOL_VERSION.",
        "message": {"type": msg.type.value, "session": msg.session, "round": msg.round, "layer": msg.layer,
                    "stat": msg.stat, "sender": msg.sender, "seq": msg.seq, "config": msg.config,
                    "body": dict(msg.body), "frames_hex": [bytes(f).hex() for f in msg.frames]},
        "wire_hex": [bytes(f).hex() for f in msg.to_frames()],
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
