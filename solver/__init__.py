"""The solver (trusted): opens authenticated aggregates only, checks, solves and releases ΔW; holds the session's
secrets (CKKS secret key or share seeds, the tag OPRF key, the sealed cross-round state).

It reaches the hazmat primitives only through protection's recipes (import-linter contract). Names load
lazily so that importing one module of the package loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Solver": "solver.server", "SolverResult": "solver.server", "SolveFn": "solver.server",
         "run_solver": "solver.server", "SessionSolve": "solver.solve"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'solver' has no attribute {name!r}")
