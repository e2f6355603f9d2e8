"""What the role commands share: choosing the protection scheme for a mode, and printing outcomes."""

from __future__ import annotations

from typing import Any


def load_scheme(mode: str) -> Any:
    """The ProtectionScheme for ``mode`` (named explicitly: plain is never a default)."""
    try:
        from secure_collab.protection import get_scheme
    except ImportError as exc:
        raise RuntimeError(f"the protection layer is not available: {exc}") from None
    return get_scheme(mode)


def set_threads(n: int | None) -> None:
    """Cap this process's math threads: roles sharing a machine's cores slow each other down otherwise."""
    if not n:
        return
    import os

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)
