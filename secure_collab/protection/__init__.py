"""Protection of per-layer statistics: ``ckks`` (TenSEAL), ``shares`` (Z_2^64 masks), ``plain`` (none).

Use ``get_scheme(mode)`` with the mode named explicitly; there is no default, so ``plain`` is only ever
used when asked for. The life cycle is documented in ``base``, the integrity checks in docs/integrity.md.
The coordinator uses ``public_scheme(mode)`` (``public``): the part of a mode that holds and needs no secret.
``ProtectionScheme`` loads lazily, so importing this package loads none of the secret-handling modules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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


def encoding_frac_bits(mode: str, bound: float, max_parties: int, extra: Mapping[str, Any] | None = None) -> int:
    """Fractional bits f of the integer encoding a session of ``mode`` sets up with (one encoded step is 2^-f in
    value units, ``PublicScheme.frac_bits`` of its public parameters), computed from the public settings alone:
    the same functions as the modes' setup (``encoding.fixed_point_bits``; ``ckks_public.choose_parameters`` and
    ``grid_bits``), with no secret and no hazmat loaded, so the coordinator can compute it too. f does not grow
    with ``max_parties``: the step at ``protocol.messages.MAX_PARTIES`` is a multiple of every smaller roster's."""
    if mode == "ckks":
        from .ckks_public import DEFAULT_PRECISION_BITS, choose_parameters, grid_bits

        chosen = choose_parameters(max_parties, int((extra or {}).get("precision_bits", DEFAULT_PRECISION_BITS)))
        return grid_bits(chosen["error_bits"], max_parties) - math.ceil(math.log2(bound))
    if mode in ("shares", "plain"):
        from .encoding import fixed_point_bits

        return fixed_point_bits(bound, max_parties)
    raise ProtectionError(f"unknown protection mode {mode!r}; choose one of {', '.join(MODES)}")


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
    "encoding_frac_bits", "get_scheme", "pack_symmetric", "public_scheme", "triangle_size", "unpack_symmetric",
]
