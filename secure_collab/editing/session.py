"""MEMIT hyper-parameters and per-round request lists from a session's configuration (shared by the roles)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams, default_hparams
from secure_collab.editing.memit import split_parties
from secure_collab.errors import ConfigError


def session_hparams(model: str, n_layers: int, layers: tuple[int, ...], variant: str,
                    template_seed: int, table: dict[str, Any], request_batch: int,
                    update_rule: str = "memit-static") -> MemitHParams:
    """The model's defaults, overridden by the session's [session.hparams] table (unknown keys refused).

    ``lambda`` is λ (``mom2_update_weight``), the name the CLI's ``--lambda`` uses; giving both is refused."""
    known = {f.name for f in fields(MemitHParams)} - {"update_rule"}  # chosen by session.update_rule
    table = dict(table)
    if "lambda" in table:
        if "mom2_update_weight" in table:
            raise ConfigError("[session.hparams] gives both lambda and mom2_update_weight (the same λ)")
        table["mom2_update_weight"] = table.pop("lambda")
    unknown = set(table) - known - {"dtype", "context_templates", "update_rule"}
    if unknown:
        raise ConfigError(f"unknown [session.hparams] keys: {sorted(unknown)}")
    if table.get("update_rule", update_rule) != update_rule:  # a full MemitHParams table may carry it
        raise ConfigError(f"[session.hparams] update_rule {table['update_rule']!r} differs from session.update_rule "
                          f"{update_rule!r}: set it there")
    changes = {k: (tuple(v) if k == "layers" else v) for k, v in table.items() if k in known}
    hp = default_hparams(model, n_layers)
    try:
        return hp.with_(**{**changes, "layers": tuple(layers), "variant": variant, "template_seed": template_seed,
                           "request_batch": request_batch, "update_rule": update_rule})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[session.hparams]: {exc}") from None


def rounds_of(requests: list[Request], rounds: int) -> list[list[Request]]:
    """A party's requests over the session's rounds: contiguous, near-equal shares (round r gets block r)."""
    return split_parties(requests, rounds)


def requests_by_round(files: list[list[Request]], rounds: int) -> list[list[Request]]:
    """A party's requests per round, from one list per request file.

    One file per round (``len(files) == rounds > 1``): file r is round r (a record's own ``round`` field, if
    any, must agree). One file: its records' ``round`` fields place them (every record needs one, each below
    ``rounds``); without any ``round`` field the requests are split into contiguous near-equal blocks.
    """
    if len(files) > 1:
        if len(files) != rounds:
            raise ValueError(f"{len(files)} request files for a session of {rounds} rounds: give one file per "
                             "round, or one file whose records carry a 'round' field")
        for r, reqs in enumerate(files):
            wrong = [q.case_id for q in reqs if q.round is not None and q.round != r]
            if wrong:
                raise ValueError(f"request file {r + 1} is round {r}, but records {wrong[:5]} say another round")
        return [list(reqs) for reqs in files]
    reqs = files[0] if files else []
    marked = [q for q in reqs if q.round is not None]
    if not marked:
        return rounds_of(reqs, rounds)
    if len(marked) != len(reqs):
        raise ValueError(f"{len(reqs) - len(marked)} of {len(reqs)} requests lack the 'round' field the others have")
    late = sorted({q.round for q in marked if q.round is not None and q.round >= rounds})
    if late:
        raise ValueError(f"requests for rounds {late}, but the session has rounds 0-{rounds - 1}")
    return [[q for q in reqs if q.round == r] for r in range(rounds)]
