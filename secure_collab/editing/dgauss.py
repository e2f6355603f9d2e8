"""Exact sampling of the discrete Gaussian N_Z(0, σ²), P[X = x] ∝ exp(−x²/2σ²) on the integers, from uniform words.

Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020, arXiv 2004.00010):

- Algorithm 1, Bernoulli(exp(−γ)) for a rational γ = num/den ≥ 0: for γ ≤ 1, K ← 1 and K ← K + 1 while a
  Bernoulli(γ/K) succeeds, then return [K odd]; for γ > 1, ⌊γ⌋ Bernoulli(exp(−1)) and one Bernoulli(exp(−(γ−⌊γ⌋)))
  must all succeed.
- Algorithm 2, the discrete Laplace P[Y = y] ∝ exp(−|y|/t) for an integer t ≥ 1: U uniform on {0..t−1}, kept with
  probability exp(−U/t); V the number of Bernoulli(exp(−1)) successes before the first failure; X = U + tV; a fair
  sign B, with (B = 1, X = 0) rejected; Y = (1 − 2B) X.
- Algorithm 3, the discrete Gaussian: Y from the discrete Laplace with t, kept with probability
  exp(−(|Y| − σ²/t)² / 2σ²). The output is N_Z(0, σ²) for every t > 0 (the acceptance divides the Laplace's
  exp(−|y|/t) out and leaves exp(−y²/2σ²)); we take σ an integer and t = σ, so σ²/t = σ and every probability
  above is a ratio of integers: γ = (|Y| − σ)² / (2σ²).

Every Bernoulli(a/b) compares a uniform integer in [0, b) with a: ``_below`` draws it from 64-bit words exactly
(a word w is used as w mod b only when w ≥ 2^64 mod b, so every residue is equally likely); within one step of
Algorithm 1 every candidate has the same b, so the division is by one scalar. Nothing is a float: for
σ ≤ ``MAX_SIGMA`` = 2^24, 2σ² ≤ 2^49 and K ≤ 2^13, every product stays below 2^64 (uint64). A |Y| so large that
(|Y| − σ)² would leave 62 bits (|Y| > 2^31, an event of probability about exp(−127) at σ = 2^24) is decided by the
same algorithm in Python integers (``_bern_exp_exact``), so the sampler is exact without a cut-off.

Vectorised with numpy: a batch of candidates goes through each step together, the rejected ones are drawn again.
Speed, one thread of this 2-core machine, AES-256-CTR words (``protection.randomness``), σ = 2^23 (a session's σ_g):
2.9 million values per second with the other core busy, 1.6 million with the machine loaded to 3
(``OMP_NUM_THREADS=1 python -m secure_collab.editing.dgauss``; docs/dp.md). SmolLM2's 2.07 million values per layer
(G's triangle and B) took 0.8 to 1.0 s with the party's rounding and mirroring.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Words = Callable[[int], np.ndarray]  # n -> n uniform independent uint64 words
MAX_SIGMA = 1 << 24
_K_LIMIT = 1 << 13  # K of Algorithm 1 reaches k with probability below 1/(k−1)!: 2^13 is never reached
_ONE = np.uint64(1)


def _below(bound: int, n: int, words: Words) -> np.ndarray:
    """``n`` uniform integers in [0, bound) (uint64, 1 ≤ bound < 2^64), exactly."""
    b = np.uint64(bound)
    floor = np.uint64((1 << 64) % bound)  # words below it would favour the small residues
    w = words(n)
    out = w % b
    bad = np.flatnonzero(w < floor)  # probability below bound / 2^64 each
    while bad.size:
        w = words(bad.size)
        ok = w >= floor
        out[bad[ok]] = w[ok] % b
        bad = bad[~ok]
    return out


def _bern_exp_unit(num: np.ndarray, den: int, words: Words) -> np.ndarray:
    """Bernoulli(exp(−num_i/den)) for 0 ≤ num_i ≤ den (Algorithm 1, γ ≤ 1), as booleans. Every element still in the
    loop has the same K, so each Bernoulli(γ/K) = [U < num] with U uniform below the one bound den·K."""
    k = np.ones(num.shape, dtype=np.uint64)
    alive = np.arange(num.size)
    step = 1
    while alive.size:
        assert step < _K_LIMIT and den * step < 1 << 64
        go = _below(den * step, alive.size, words) < num[alive]  # Bernoulli(γ/K), K = step
        alive = alive[go]
        k[alive] += _ONE
        step += 1
    return (k & _ONE) == _ONE


def _bern_exp_minus_one(n: int, words: Words) -> np.ndarray:
    return _bern_exp_unit(np.ones(n, dtype=np.uint64), 1, words)


def _bern_exp(num: np.ndarray, den: int, words: Words) -> np.ndarray:
    """Bernoulli(exp(−num_i/den)) for num_i ≥ 0 (Algorithm 1), as booleans."""
    d = np.uint64(den)
    whole, rest = num // d, num % d
    out = _bern_exp_unit(rest, den, words)
    idx = np.flatnonzero(out & (whole > 0))
    done = 0
    while idx.size:
        ok = _bern_exp_minus_one(idx.size, words)
        out[idx[~ok]] = False
        done += 1
        idx = idx[ok & (whole[idx] > done)]
    return out


def _below_exact(bound: int, words: Words) -> int:
    """A uniform integer in [0, bound) for any bound ≥ 1 (Python integers), exactly."""
    n = (bound.bit_length() + 63) // 64
    top = 1 << (64 * n)
    floor = top % bound
    while True:
        w = 0
        for x in words(n).tolist():
            w = (w << 64) | int(x)
        if w >= floor:
            return w % bound


def _bern_exp_exact(num: int, den: int, words: Words) -> bool:
    """Bernoulli(exp(−num/den)) in Python integers (Algorithm 1): the rare huge γ."""
    for _ in range(num // den):
        if not bool(_bern_exp_minus_one(1, words)[0]):
            return False
    rest, k = num % den, 1
    while _below_exact(den * k, words) < rest:
        k += 1
    return k % 2 == 1


def discrete_laplace(t: int, n: int, words: Words) -> np.ndarray:
    """``n`` draws of P[Y = y] ∝ exp(−|y|/t) (Algorithm 2), int64."""
    if not (isinstance(t, int) and 1 <= t <= MAX_SIGMA):
        raise ValueError(f"discrete Laplace scale must be an integer in [1, {MAX_SIGMA}], got {t!r}")
    out = np.empty(n, dtype=np.int64)
    filled = 0
    tt = np.uint64(t)
    while filled < n:
        m = (n - filled) * 2 + 16  # about 0.63 × 0.5 × 2: one pass usually fills the rest
        u = _below(t, m, words)
        u = u[_bern_exp_unit(u, t, words)]  # kept with probability exp(−U/t)
        v = np.zeros(u.size, dtype=np.uint64)
        alive = np.arange(u.size)
        while alive.size:  # V: successes of Bernoulli(exp(−1)) before the first failure
            alive = alive[_bern_exp_minus_one(alive.size, words)]
            v[alive] += _ONE
        x = (u + tt * v).astype(np.int64)  # V ≤ 2^30 (probability e^−2^30 beyond): no overflow
        sign = (words(x.size) & _ONE).astype(bool)
        keep = ~(sign & (x == 0))
        y = np.where(sign, -x, x)[keep]
        take = min(y.size, n - filled)
        out[filled:filled + take] = y[:take]
        filled += take
    return out


def discrete_gaussian(sigma: int, n: int, words: Words) -> np.ndarray:
    """``n`` independent draws of N_Z(0, σ²) for an integer σ in [1, ``MAX_SIGMA``] (Algorithm 3, t = σ), int64."""
    if not (isinstance(sigma, int) and not isinstance(sigma, bool) and 1 <= sigma <= MAX_SIGMA):
        raise ValueError(f"discrete Gaussian σ must be an integer in [1, {MAX_SIGMA}], got {sigma!r}")
    if n < 0:
        raise ValueError(f"cannot draw {n} values")
    out = np.empty(n, dtype=np.int64)
    filled = 0
    s = np.uint64(sigma)
    cap = 1 << 31  # (|Y| − σ)² < 2^62 below it
    while filled < n:
        want = n - filled
        y = discrete_laplace(sigma, want + want // 2 + 16, words)  # about 3/4 are accepted at any σ ≥ 1
        mag = np.abs(y).astype(np.uint64)
        small = mag < np.uint64(cap)
        keep = np.zeros(y.size, dtype=bool)
        diff = np.where(mag >= s, mag - s, s - mag)[small]
        keep[np.flatnonzero(small)] = _bern_exp(diff * diff, 2 * sigma * sigma, words)
        for i in np.flatnonzero(~small).tolist():  # exact, in Python integers
            keep[i] = _bern_exp_exact((int(mag[i]) - sigma) ** 2, 2 * sigma * sigma, words)
        y = y[keep]
        take = min(y.size, want)
        out[filled:filled + take] = y[:take]
        filled += take
    return out


def _measure(n: int = 2_000_000, sigma: int = 1 << 23) -> float:
    """Values per second of ``discrete_gaussian`` on AES-CTR words (one thread: set OMP_NUM_THREADS=1)."""
    import time

    from secure_collab.protection.randomness import WordSource

    stream = WordSource.fresh().stream("measure")
    discrete_gaussian(sigma, 10_000, stream.words)  # warm up
    start = time.perf_counter()
    discrete_gaussian(sigma, n, stream.words)
    return n / (time.perf_counter() - start)


if __name__ == "__main__":
    for s in (3, 1 << 16, 1 << 23):
        print(f"σ = {s}: {_measure(sigma=s) / 1e6:.2f} million values/s")
