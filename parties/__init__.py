"""A party (a site): computes, protects and sends its statistics; verifies and applies each ΔW.

The editing engine plugs in through two callbacks. Names load lazily so that importing one module of the package
loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {n: "parties.client" for n in ("ApplyDelta", "ComputeStatistics", "Party", "PartyResult", "run_party")}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'parties' has no attribute {name!r}")
