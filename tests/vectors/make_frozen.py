"""Regenerate our own frozen vectors (mask PRG, fixed point, sealed seed, golden shares payload).

Run only on a deliberate format change: the tests exist to catch any accidental one.
    /work/main/.venv/bin/python tests/vectors/make_frozen.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from secure_collab.protection import ProtectionParams, StatContext
from secure_collab.protection.encoding import encode_fixed, fixed_point_bits
from secure_collab.protection.shares import SharesScheme, mask_vector, seal_seed_for_solver

HERE = Path(__file__).parent
CTX = StatContext("vector-session", 2, 7, "G", "party-a")
SEED = bytes(range(32))
EPHEMERAL = bytes(range(64, 96))
SOLVER = bytes(range(128, 160))
VALUES = [0.0, 1.0, -1.0, 0.5, -0.25, 3.141592653589793, -2.718281828459045, 1e-12, -1e-12, 6.0, -6.0,
          0.1, 2.0**-30, 5.999999999999999]


def mask(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.uint64)
    mask_vector(out, SEED, CTX, sign=+1)
    return out


def main() -> None:
    ctx = {"session_id": CTX.session_id, "round": CTX.round, "layer": CTX.layer,
           "statistic": CTX.statistic, "party": CTX.party}
    long_n = 300_001  # crosses the 1 MiB keystream chunk and the 2^17-value frame boundary
    (HERE / "mask_prg.json").write_text(json.dumps({
        "description": "PRG(seed) for ctx: HKDF-SHA256(seed, info='secure-collab/v1/mask|'+label) -> "
                       "AES-256-CTR from counter 0, little-endian uint64",
        "seed": SEED.hex(), "ctx": ctx,
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
        "description": "round(x * 2^f) as two's complement uint64; f = 62 - ceil(log2(P * bound))",
        "cases": cases}, indent=2) + "\n")

    scheme = SharesScheme()
    keys = scheme._setup_from_parts(ProtectionParams("shares", max_parties=10, bound=6.0), SOLVER)
    sealed = seal_seed_for_solver(SEED, CTX, bytes.fromhex(json.loads(keys.public[8:])["solver_x25519"]),
                                  EPHEMERAL)
    payload = scheme._protect_from_parts(np.array(VALUES), CTX, keys.public, SEED, EPHEMERAL)
    (HERE / "shares_golden.json").write_text(json.dumps({
        "description": "sealed seed and a whole shares party payload from fixed parts",
        "solver_private": SOLVER.hex(), "ephemeral_private": EPHEMERAL.hex(), "seed": SEED.hex(),
        "ctx": ctx, "bound": 6.0, "max_parties": 10,
        "public": keys.public.hex(), "sealed_seed": sealed.hex(),
        "values": [float(v).hex() for v in VALUES],
        "payload_header": payload.header,
        "payload_frames": [bytes(f).hex() for f in payload.frames],
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
