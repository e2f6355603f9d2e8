"""MEMIT hyper-parameters and per-round request lists from a session's configuration (shared by the roles)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams, default_hparams
from secure_collab.editing.memit import split_parties
from secure_collab.errors import ConfigError


def session_hparams(model: str, n_layers: int, layers: tuple[int, ...], variant: str,
                    template_seed: int, table: dict[str, Any], request_batch: int) -> MemitHParams:
    """The model's defaults, overridden by the session's [session.hparams] table (unknown keys refused).

    ``lambda`` is λ (``mom2_update_weight``), the name the CLI's ``--lambda`` uses; giving both is refused."""
    known = {f.name for f in fields(MemitHParams)}
    table = dict(table)
    if "lambda" in table:
        if "mom2_update_weight" in table:
            raise ConfigError("[session.hparams] gives both lambda and mom2_update_weight (the same λ)")
        table["mom2_update_weight"] = table.pop("lambda")
    unknown = set(table) - known - {"dtype", "context_templates"}
    if unknown:
        raise ConfigError(f"unknown [session.hparams] keys: {sorted(unknown)}")
    changes = {k: (tuple(v) if k == "layers" else v) for k, v in table.items() if k in known}
    hp = default_hparams(model, n_layers)
    try:
        return hp.with_(**{**changes, "layers": tuple(layers), "variant": variant, "template_seed": template_seed,
                           "request_batch": request_batch})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[session.hparams]: {exc}") from None


def rounds_of(requests: list[Request], rounds: int) -> list[list[Request]]:
    """A party's requests over the session's rounds: contiguous, near-equal shares (round r gets block r)."""
    return split_parties(requests, rounds)
