"""``plain`` mode: no protection at all, behind the same interface. For baselines and benchmarks only.

The coordinator sees every party's exact fixed-point integers (and its integrity tags, which carry a pad
only the solver can derive, so they still authenticate the sum and reveal nothing of the MAC key).
Never the default: it must be named.
"""

from __future__ import annotations

from .scheme import ArrayScheme


class PlainScheme(ArrayScheme):
    mode = "plain"
