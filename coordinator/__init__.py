"""The coordinator (untrusted): relays and adds protected payloads, keeps the ledger, never opens anything.

It imports neither ``solver`` nor ``parties`` (import-linter contract in pyproject.toml). Names load lazily so that
importing one module of the package loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Coordinator": "coordinator.server", "Outcome": "coordinator.server", "run_coordinator": "coordinator.server"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coordinator' has no attribute {name!r}")
