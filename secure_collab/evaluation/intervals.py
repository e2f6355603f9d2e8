"""Percentile-bootstrap intervals of a mean: the one home for the intervals every report gives (attacks over
sessions, edit metrics over records, paired differences between two methods on the same records)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap of the mean over independent units (NaN values left out)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    a = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_ci(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[float, float, float]:
    """``bootstrap_ci`` of a − b over the units both have (the same records measured under two methods)."""
    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths ({len(a)} and {len(b)})")
    return bootstrap_ci([x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None])
