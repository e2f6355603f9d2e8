"""One party's whole session as a library call: the network loop with an editing engine, then its report."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parties.client import ApplyDelta, ComputeStatistics, PartyResult, ServedQueries, run_party
from secure_collab.config import Config
from secure_collab.protection import ProtectionScheme


@dataclass(frozen=True)
class PartyEngine:
    """What the editing engine gives the party runtime (see parties.client for the contracts)."""

    compute_statistics: ComputeStatistics  # (round, layer) -> {"G": (d_k, d_k), "B": (d_v, d_k)}
    apply_delta: ApplyDelta  # (layer, ΔW (d_v, d_k) float64), already verified
    finish: Callable[[PartyResult], dict] | None = None  # (PartyResult) -> report (evaluation, saving the model)
    tagger: Any = None  # parties.tags.Tagger: tag inputs and the solver's verdicts (sessions with tags)
    served_queries: ServedQueries | None = None  # served release: this party's own queries once every step is served


def run_party_session(config: Config, name: str, scheme: ProtectionScheme, engine: PartyEngine, *,
                      stop: threading.Event | None = None) -> dict[str, Any]:
    """Take part in the session until the coordinator ends it; the report (JSON-ready) says what happened."""
    result = run_party(config, name, scheme, engine.compute_statistics, engine.apply_delta, stop=stop,
                       tagger=engine.tagger if config.session.tags else None,
                       served_queries=engine.served_queries if config.session.served else None)
    report: dict[str, Any] = {
        "party": name, "session": config.session.id, "config_digest": config.digest, "ok": result.ok,
        "reason": result.reason, "bytes_sent": result.bytes_sent,
        "bytes_received": result.bytes_received, "seconds": round(result.seconds, 3),
        "refusals": result.refusals, "left_out": [f"{r}/{lay}" for r, lay in result.left_out],
        "applied": {f"{r}/{lay}": sha for (r, lay), sha in sorted(result.applied.items())},
        "release": config.session.release}
    if config.session.served:  # no ΔW here: each step's solver-signed notice, and what this party asked
        report["noticed"] = {f"{r}/{lay}": sha for (r, lay), sha in sorted(result.noticed.items())}
        report["served"] = result.served or {"evaluated": False, "why": "this party asked no queries of its own"}
    if engine.finish is not None and result.ok:
        report.update(engine.finish(result))
    return report


def party_editor(config: Config, requests: list, **options: Any) -> Any:
    """The editing engine of the session's backend for this party's ``requests``: ``parties.engine.PartyEditor``
    (MEMIT) or ``parties.malmen.MalmenPartyEditor`` (MALMEN, with this site's [paths] hypernet); ``options`` are
    theirs (device, cache, rounds, progress, ...)."""
    if config.session.backend == "malmen":
        from parties.malmen import MalmenPartyEditor

        options.pop("target_cache", None)
        options.pop("defence_rng", None)
        return MalmenPartyEditor(config.session, requests, config.paths.hypernet, **options)
    from parties.engine import PartyEditor

    return PartyEditor(config.session, requests, **options)
