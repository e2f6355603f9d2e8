"""Start-up checks of each role against the session file: weights, dimensions, templates, the MALMEN hypernetwork,
left-over state.

Every check raises ``SessionMismatch`` or ``StaleStateError`` (one line, naming what differs and what to do)
before any socket is opened, so a site whose model or state does not fit the session learns it at once
instead of after target optimisation or as an unverifiable signature.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from secure_collab.errors import SessionMismatch, StaleStateError
from secure_collab.files import private_dir, write_private

log = logging.getLogger(__name__)
SOLVER_DIGEST_FILE = "config_digest"


def check_model(lm: Any, session: Any) -> None:
    """The loaded base model fits the session: layers exist, (d_v, d_k) match, weights digest matches."""
    from secure_collab.models.specs import down_weight, n_layers

    depth = n_layers(lm.model, lm.spec)
    beyond = [lay for lay in session.layers if not 0 <= lay < depth]
    if beyond:
        raise SessionMismatch(f"session.layers {beyond} do not exist: {session.model} has {depth} layers")
    for layer in session.layers:
        d_v, d_k = down_weight(lm.model, lm.spec, layer).shape
        if (d_v, d_k) != (session.d_v, session.d_k):
            raise SessionMismatch(
                f"session file says d_k = {session.d_k}, d_v = {session.d_v}, but {session.model}'s "
                f"down-projection at layer {layer} has d_k = {d_k}, d_v = {d_v}; write the file with "
                "`secure-collab session init`, which takes them from the model")
    want = getattr(session, "weights_digest", "")
    if want and want != lm.source_digest:
        raise SessionMismatch(
            f"the base weights of {session.model} here (sha256 {lm.source_digest[:16]}…) differ from the "
            f"session's weights_digest ({want[:16]}…): every site must hold the same base model")
    if not want:
        log.warning("the session file has no weights_digest: nothing checks that every site holds the same "
                    "weights (write it with `secure-collab session init`)")


def session_hypernet(session: Any, path: Path, dtype: Any = None, device: Any = None,
                     model_digest: str | None = None) -> Any:
    """The session's MALMEN hypernetwork from this site's ``path`` ([paths] hypernet), refused in one line unless
    its digest is ``session.hypernet_digest`` and it edits exactly ``session.layers`` at (d_k, d_v); then cast.

    The digest is taken as stored (before the cast: it hashes every tensor as float64, so a float64 network cast
    to float32 would hash otherwise). It covers the frozen normaliser and every λ_l, so the solver's ridges and the
    parties' value differences are the pinned ones."""
    from secure_collab.editing.malmen.net import load_hypernet

    want = session.hypernet_digest
    try:
        net = load_hypernet(Path(path), model_digest=model_digest)
    except Exception as exc:  # a file another site handed over: whatever it holds is one line, not a traceback
        raise SessionMismatch(f"the session's MALMEN hypernetwork could not be loaded from {path} ([paths] hypernet): "
                              f"{type(exc).__name__}: {exc}") from None
    got = net.digest()
    if got != want:
        raise SessionMismatch(f"the hypernetwork in {path} (sha256 {got[:16]}…) differs from the session's "
                              f"hypernet_digest ({want[:16]}…): every party and the solver must hold the same "
                              "hypernetwork")
    if tuple(net.hp.layers) != tuple(session.layers):
        raise SessionMismatch(f"the hypernetwork edits layers {list(net.hp.layers)}, the session "
                              f"{list(session.layers)}")
    bad = [lay for lay in session.layers if tuple(net.shapes[lay]) != (session.d_k, session.d_v)]
    if bad:
        raise SessionMismatch(f"the hypernetwork's layers {bad} are not (d_k, d_v) = ({session.d_k}, {session.d_v})")
    return net.to(device=device, dtype=dtype) if (dtype is not None or device is not None) else net


def check_templates(session: Any) -> None:
    """Context templates written into the session file are well formed (every site then uses exactly them)."""
    templates = session.hparams.get("context_templates")
    if templates is None:
        log.warning("the session file has no context_templates: each site generates them from the seed, and "
                    "sites whose weights or libraries differ would silently disagree")
        return
    if (not isinstance(templates, list) or not templates or templates[0] != "{}"
            or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates)):
        raise SessionMismatch("session.hparams.context_templates must be a list of strings, the first \"{}\", "
                              "each containing exactly one {}")


def check_coordinator_state(config: Any) -> None:
    """Refuse a ledger that already holds this session id under another configuration, or as finished."""
    from secure_collab.ledger import recorded_session

    found = recorded_session(config.paths.ledger, config.session.id)
    if found is None:
        return
    digest, ended = found
    if digest != config.digest:
        raise StaleStateError(
            f"the ledger {config.paths.ledger} holds session {config.session.id!r} under another configuration "
            f"(digest {digest[:12]}…, this file {config.digest[:12]}…): the file changed since that run; remove "
            f"the ledger (and the solver's {config.solver_dir}) or give the session "
            "a new id")
    if ended:
        raise StaleStateError(
            f"the ledger {config.paths.ledger} records session {config.session.id!r} as {ended}; to run it again "
            f"remove the ledger (and the solver's {config.solver_dir}) or give the "
            "session a new id")


def check_solver_state(config: Any) -> None:
    """Refuse solver state of another configuration; record this configuration's digest for the next start."""
    state = config.solver_dir  # never outside paths.solver_state
    marker = state / SOLVER_DIGEST_FILE
    if state.is_dir() and any(p.name != "lock" for p in state.iterdir()):  # the solver's lock file is no state
        found = marker.read_text().strip() if marker.is_file() else "unknown"
        if found != config.digest:
            raise StaleStateError(
                f"{state} holds solver state of session {config.session.id!r} under another configuration "
                f"(digest {found[:12]}…, this file {config.digest[:12]}…): remove {state} (and the "
                "coordinator's ledger) or give the session a new id")
        return
    private_dir(state)  # the solver's state directory: 0700 (its parents too when missing) whatever the umask
    write_private(marker, config.digest + "\n")
