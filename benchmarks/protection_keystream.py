"""Throughput of the shares mask PRG (AES-256-CTR keystream into a preallocated, reused buffer).

    PYTHONPATH=. .venv/bin/python benchmarks/protection_keystream.py
"""

from __future__ import annotations

import time

import numpy as np

from secure_collab.protection import StatContext
from secure_collab.protection.shares import mask_vector


def main() -> None:
    n = 20_000_000  # ~ the triangle of dim 6400 (20.5M values, 164 MB)
    out = np.zeros(n, dtype=np.uint64)  # touched once, as a long-lived buffer would be
    ctx = StatContext("bench", 0, 0, "G", "p")
    mask_vector(out, bytes(32), ctx, sign=+1)  # warm-up
    best = min(_timed(lambda: mask_vector(out, bytes(32), ctx, sign=+1)) for _ in range(3))
    print(f"mask_vector: {n * 8 / best / 1e9:.2f} GB/s of mask added in place ({best / n * 1e9:.2f} ns"
          f" per value; {best:.3f} s for {n:,} values)")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
