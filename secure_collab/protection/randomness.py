"""A party's secret noise randomness: uniform 64-bit words from AES-256-CTR under a key only that party holds.

The calibrated-noise defence (``editing.noise``) draws its discrete Gaussians from these words. A party makes one
``WordSource.fresh()`` per session (a 256-bit key from ``_primitives.random_bytes``, the one caller of
``os.urandom``); each statistic reads its own stream, keyed by HKDF-SHA256(key, info = ``NOISE_INFO`` ‖ label) with
the label naming the round, layer and statistic. So the noise of a statistic computed again (a retried step) is the
same noise, never a second independent draw that an observer of both could average away. Tests and the
simulation pass a fixed key (``WordSource(key)``): the same code path, reproducible.
"""

from __future__ import annotations

import numpy as np

from . import _primitives as hazmat

NOISE_INFO = b"secure-collab/noise-words/v1\0"
KEY_BYTES = 32
_COUNTER0 = bytes(16)


class WordStream:
    """Uniform independent 64-bit words (native byte order), continuing where the previous call stopped."""

    def __init__(self, key: bytes) -> None:
        self._stream = hazmat.Keystream(key, _COUNTER0)

    def words(self, n: int) -> np.ndarray:
        """``n`` words as a uint64 array."""
        if n < 0:
            raise ValueError(f"cannot draw {n} words")
        out = np.empty(n, dtype=np.uint64)
        if n:
            self._stream.fill(out.data)
        return out


class WordSource:
    """A key and the streams derived from it, one per label."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError(f"a noise key has {KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def fresh(cls) -> WordSource:
        """A source under a fresh secret key (the CSPRNG of the operating system)."""
        return cls(hazmat.random_bytes(KEY_BYTES))

    def stream(self, label: str) -> WordStream:
        """The stream of ``label`` (e.g. "round 0 layer 3 G"): independent of every other label's."""
        return WordStream(hazmat.hkdf_sha256(self._key, None, NOISE_INFO + label.encode(), KEY_BYTES))
