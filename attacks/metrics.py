"""Leakage metrics with confidence intervals: ranking recall, chance, object top-1, token F1, judge similarity.

For a ranking attack over N candidates with m edited subjects in the view:
- subject_top1 = recall@m: the fraction of the m edited subjects ranked within the top m (plain top-1 at m = 1);
- subject_top5 = recall@5m;
- chance_top1 = m / N: what a random ranking scores on recall@m in expectation.
Each figure is a mean over trials (independent draws of the m edits); its interval is a percentile bootstrap
over trials (the edits of one trial share a subspace, so they are not independent draws).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from secure_collab.evaluation.intervals import (
    bootstrap_ci as bootstrap_ci,  # re-exported: reports call metrics.bootstrap_ci
)


def recall_at(ranks: Sequence[int], k: int) -> float:
    """Fraction of targets whose 0-based rank is below k."""
    return float(np.mean([r < k for r in ranks])) if ranks else float("nan")


def wilson_ci(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return float("nan"), float("nan")
    z = {0.9: 1.6448536, 0.95: 1.9599640, 0.99: 2.5758293}[level]
    p = hits / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_sf(hits: int, n: int, p: float) -> float:
    """P[X ≥ hits] for X ~ Binomial(n, p): the one-sided exact test of 'no better than chance'."""
    if hits <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
            + (n - k) * math.log1p(-p) for k in range(hits, n + 1)]
    top = max(logs)
    return float(min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs)))


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(pred: str, truth: str) -> float:
    """SQuAD-style bag-of-words F1 between two texts (lower-cased word tokens)."""
    p, t = _tokens(pred), _tokens(truth)
    if not p and not t:
        return 1.0
    common = sum((Counter(p) & Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def best_match(sim: np.ndarray) -> np.ndarray:
    """For a (truths, recovered) similarity matrix: each truth's best similarity over the recovered texts."""
    return sim.max(axis=1) if sim.size else np.zeros(sim.shape[0])


def greedy_matching(sim: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs of a similarity matrix, highest similarity first."""
    s = np.array(sim, dtype=float)
    pairs = []
    for _ in range(min(s.shape)):
        i, j = np.unravel_index(int(np.argmax(s)), s.shape)
        pairs.append((int(i), int(j)))
        s[i, :] = -np.inf
        s[:, j] = -np.inf
    return sorted(pairs)


def random_pair_baseline(sim_all: np.ndarray, seed: int = 0, n: int = 2000) -> float:
    """Mean similarity of random pairs (i ≠ j) from a square similarity matrix of unrelated true texts."""
    k = sim_all.shape[0]
    if k < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, k, n)
    j = (i + rng.integers(1, k, n)) % k
    return float(sim_all[i, j].mean())
