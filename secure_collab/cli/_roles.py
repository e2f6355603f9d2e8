"""What the role commands share: choosing the protection scheme for a mode, and printing outcomes."""

from __future__ import annotations

import importlib
import inspect
from typing import Any


def load_scheme(mode: str) -> Any:
    """The ProtectionScheme implementing ``mode``, found in ``secure_collab.protection.<mode>``."""
    from secure_collab.protection.base import ProtectionScheme

    try:
        module = importlib.import_module(f"secure_collab.protection.{mode}")
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"protection mode {mode!r} is not available: {exc}") from None
    found = [obj for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, ProtectionScheme) and not inspect.isabstract(obj)
             and getattr(obj, "mode", None) == mode and obj.__module__ == module.__name__]
    if len(found) != 1:
        raise RuntimeError(f"secure_collab.protection.{mode} must define exactly one scheme "
                           f"with mode={mode!r}, found {len(found)}")
    return found[0]()


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
