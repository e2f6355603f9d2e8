"""Protection of per-layer statistics: ``ckks`` (TenSEAL), ``shares`` (Z_2^64 masks), ``plain`` (none).

Use ``get_scheme(mode)`` with the mode named explicitly; there is no default, so ``plain`` is only ever
used when asked for. The life cycle is documented in ``base``, the integrity checks in docs/integrity.md.
The coordinator uses ``public_scheme(mode)`` (``public``): the part of a mode that holds and needs no secret.
``ProtectionScheme`` loads lazily, so importing this package loads none of the secret-handling modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    MODES,
    Accumulator,
    Authenticated,
    IntegrityError,
    PartyFault,
    PartySecrets,
    Payload,
    ProtectionError,
    ProtectionParams,
    SolverKeys,
    StatContext,
)
from .encoding import pack_symmetric, triangle_size, unpack_symmetric
from .public import PublicScheme

if TYPE_CHECKING:
    from .scheme import ProtectionScheme

def __getattr__(name: str) -> Any:
    if name == "ProtectionScheme":  # the full schemes import the hazmat primitives: only when asked for
        from .scheme import ProtectionScheme

        return ProtectionScheme
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def public_scheme(mode: str) -> PublicScheme:
    """The coordinator's view of ``mode``: its public side only (no secret, no hazmat), through a fixed table."""
    from ._array import PlainPublic, SharesPublic
    from .ckks_public import CkksPublic

    table: dict[str, type[PublicScheme]] = {"ckks": CkksPublic, "shares": SharesPublic, "plain": PlainPublic}
    if mode not in table:
        raise ProtectionError(f"unknown protection mode {mode!r}; choose one of {', '.join(MODES)}")
    return table[mode]()


def get_scheme(mode: str) -> ProtectionScheme:
    """The scheme for ``mode`` ("ckks" | "shares" | "plain"), dispatched through a fixed table."""
    from .ckks import CkksScheme
    from .plain import PlainScheme
    from .shares import SharesScheme

    table: dict[str, type[ProtectionScheme]] = {
        "ckks": CkksScheme, "shares": SharesScheme, "plain": PlainScheme,
    }
    if mode not in table:
        raise ProtectionError(f"unknown protection mode {mode!r}; choose one of {', '.join(MODES)}")
    return table[mode]()


__all__ = [
    "MODES", "Accumulator", "Authenticated", "IntegrityError", "PartyFault", "PartySecrets", "Payload",
    "ProtectionError", "ProtectionParams", "ProtectionScheme", "PublicScheme", "SolverKeys", "StatContext",
    "get_scheme", "pack_symmetric", "public_scheme", "triangle_size", "unpack_symmetric",
]
