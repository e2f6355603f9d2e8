"""Write a complete, commented session.toml from a model: what `secure-collab session init` and the demo use.

Everything derivable is taken from the model (d_k, d_v, layers, λ and the other MEMIT defaults, the weights
digest, the context templates, generated once and written into the file), so no site types a dimension by
hand, and every site's role checks its own model against the file at start (``secure_collab.preflight``).
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from secure_collab.config import COORDINATOR_MEMORY_BYTES, Config, _toml_value, load_config
from secure_collab.errors import ConfigError
from secure_collab.names import NAME_RULE, is_name, shown

# hparams keys the session file does not carry in [session.hparams]: they live in [session] or are per site
_NOT_HPARAMS = ("layers", "variant", "template_seed", "request_batch")
_RENAMED = {"mom2_update_weight": "lambda"}  # one name per concept: the CLI's --lambda
PRECISION_BITS = 48  # ckks: bits of precision below the value bound; `demo` and `session init` both default to it


def hparams_table(hp: Any) -> dict[str, Any]:
    """A session file's [session.hparams] for ``hp`` (a MemitHParams). An unset value (mom2_past_weight: λ unless
    set) is left out: TOML has no null, and leaving it out keeps it unset."""
    return {_RENAMED.get(k, k): v for k, v in hp.to_dict().items() if k not in _NOT_HPARAMS and v is not None}


COMMENTS: dict[str, str] = {
    # [session]
    "id": "names this session in the ledger and in every message",
    "mode": "protection of the statistics: shares (two servers, secret shares) | ckks | plain (none: tests only)",
    "variant": "sequential (MEMIT, layer after layer) | oneshot (CollabEdit's code: all layers at once)",
    "rounds": "each party's requests are split over this many rounds (later rounds keep earlier edits)",
    "layers": "edited layers (down-projections); the model's tuned default",
    "d_k": "down-projection input size, from the model: do not edit",
    "d_v": "down-projection output size, from the model: do not edit",
    "min_parties": "the solver opens no sum of fewer parties' statistics",
    "roster_sha256": "digest of the roster's fingerprints, agreed out of band: every role refuses another roster",
    "value_bound": "declared max |entry| of one party's statistic; parties refuse to send beyond it (at most 2**100)",
    "key_norm_bound": "declared max ‖k‖ of one key: a plausibility bound, and with noise:Z the keys' clipping norm κ",
    "residual_norm_bound": "declared max ‖r‖ of one residual: a plausibility bound, and with noise:Z the residuals' "
                           "clipping norm ρ (SmolLM2: κ = 16, ρ = 32 clip few; docs/dp.md)",
    "chunk_values": "values per message",
    "model": "the base model every party and the solver load (a built-in name, a directory or a hub id)",
    "weights_digest": "sha256 of the base weights: every role refuses to start with other weights",
    "template_seed": "seed the context templates below were generated with",
    "defence": "release defences, joined with '+': none | camouflage:S (each party mixes secret public decoy keys "
               "into its keys, ‖n‖ = S‖k‖) | decoys:R (each party adds R secret public decoy edits per edit, "
               "counted in N) | rank:K (the solver truncates ΔW to rank K) | noise:Z (each party clips "
               "to key_norm_bound, residual_norm_bound and adds discrete Gaussian noise, σ = Z·sensitivity over "
               "min_parties; delta:D sets the δ of its ε); docs/privacy.md, docs/dp.md",
    "release": "weights (every party receives ΔW and applies it) | served (only the solver's host applies ΔW and "
               "answers each party's end-to-end encrypted queries within query_budget); docs/network.md",
    "query_budget": "served: forward passes each party may ask the served model for in this session (at most 10**7)",
    "backend": "memit (targets, λC) | malmen (a public hypernetwork; oneshot, one round; docs/malmen.md)",
    "hypernet_digest": "malmen: sha256 of the hypernetwork (normaliser and λ_l included): every party and the solver "
                       "refuse another",
    # [session.hparams]
    "lambda": "λ: weight of the covariance C in ΔW = ΣB (λC + ΣG)⁻¹ (memit-dynamic: of earlier rounds' ΣKKᵀ too)",
    "v_lr": "target optimisation: Adam learning rate",
    "v_num_grad_steps": "target optimisation: steps",
    "v_loss_early_stop": "target optimisation: stop below this loss",
    "v_weight_decay": "target optimisation: weight decay on δ",
    "kl_factor": "target optimisation: weight of the KL term",
    "clamp_norm_factor": "target optimisation: max ‖δ‖ / ‖z‖",
    "kl_prompt": "target optimisation: KL prompt",
    "n_templates": "number of context templates",
    "template_length": "tokens per context template",
    "mom2_tokens": "covariance C: tokens of the public corpus",
    "mom2_max_len": "covariance C: max tokens per text",
    "mom2_past_weight": "weight of earlier rounds' ΣKKᵀ in memit-dynamic (unset: λ, CollabEdit's)",
    "update_rule": "across rounds: memit-static (C only) | memit-dynamic (earlier rounds' ΣKKᵀ join C) | alphaedit "
                   "(ΔW projected onto C's null space); docs/rounds.md",
    "nullspace_threshold": "alphaedit: eigenvalues of C below this span the preserved null space",
    "alphaedit_l2": "alphaedit: ridge weight on ΔW in the projected solve",
    "precision_bits": "ckks: bits of precision below value_bound (more bits, larger ciphertexts)",
    "dtype": "model dtype in every role: auto (float64 for tiny test models, else float32) | float32 | float64",
    "context_templates": "generated once from the model; every party uses exactly these",
    # [network]
    "coordinator_bind": "where the coordinator listens (an address of its own host; 0.0.0.0: every interface)",
    "coordinator_endpoint": "where the solver and the parties connect to the coordinator",
    "join_timeout_s": "how long the coordinator waits for the solver and the parties to join",
    "stage_timeout_s": "how long one party may take for one step's statistics",
    "solve_timeout_s": "how long the solver may take for one release",
    "heartbeat_s": "seconds between keep-alive messages",
    "wait_log_s": "coordinator: while a stage waits, one log line per interval: whom, since when, the deadline",
    "request_in_turn": "ask parties for statistics one at a time (parties sharing one machine's cores)",
    "coordinator_memory_bytes": "coordinator: bytes of running sums it holds at once (the parties send within that "
                                "window; each chunk's sum goes to the solver as soon as every party's chunk is in)",
    "serve_timeout_s": "served: how long the solver serves queries after the last step, unless every party is done",
    # [paths]
    "keys": "this site's own secret key files (mode 0600; never copied anywhere)",
    "roster": "every site's public keys, assembled from their public key files",
    "ledger": "coordinator only: its append-only SQLite ledger (`secure-collab ledger show --config` reads it)",
    "solver_state": "solver only: its session state",
    "hypernet": "malmen, party and solver: this site's copy of the hypernetwork (checked against hypernet_digest)",
}


@dataclass(frozen=True)
class SessionChoices:
    """What the person writing the session chooses; everything else comes from the model."""

    parties: tuple[str, ...]
    roster_sha256: str = ""  # the roster's digest (Roster.digest), pinned
    mode: str = "shares"
    variant: str = "sequential"
    rounds: int = 1
    layers: tuple[int, ...] | None = None  # None: the model's tuned default
    lam: float | None = None  # None: the model's tuned default
    min_parties: int = 2
    value_bound: float = 1e5
    key_norm_bound: float = 1e3  # κ (SessionConfig's default)
    residual_norm_bound: float = 1e3  # ρ
    precision_bits: int | None = None  # ckks only
    session_id: str | None = None
    dtype: str = "auto"
    bind: str = "tcp://0.0.0.0:5555"
    endpoint: str = "tcp://127.0.0.1:5555"
    join_timeout_s: float = 1800.0
    stage_timeout_s: float = 1800.0
    solve_timeout_s: float = 600.0
    request_in_turn: bool = False
    chunk_values: int = 262144  # values per CONTRIB message
    coordinator_memory_bytes: int = COORDINATOR_MEMORY_BYTES  # the coordinator's window of running sums
    defence: str = "none"  # release defences (secure_collab.editing.defences)
    release: str = "weights"  # secure_collab.config.RELEASES
    query_budget: int = 1000  # served: forward passes per party
    serve_timeout_s: float = 600.0
    backend: str = "memit"  # secure_collab.config.BACKENDS
    hypernet: Path | None = None  # malmen: a trained hypernetwork's directory (or its training run's)
    paths: dict[str, str] = field(default_factory=lambda: {
        "keys": "keys", "roster": "roster.toml", "ledger": "ledger.sqlite", "solver_state": "solver-state"})

    def __post_init__(self) -> None:  # before a model is loaded for a file that load_config would refuse
        if self.session_id is not None and not is_name(self.session_id):
            raise ConfigError(f"bad session id {shown(self.session_id)}: use {NAME_RULE}")
        from secure_collab.editing.defences import DefenceError, parse_defence

        try:
            parse_defence(self.defence)
        except DefenceError as exc:
            raise ConfigError(str(exc)) from None
        from secure_collab.config import MAX_QUERY_BUDGET, RELEASES

        if self.release not in RELEASES:
            raise ConfigError(f"release must be one of {', '.join(RELEASES)}, not {shown(self.release)}")
        if not 0 <= self.query_budget <= MAX_QUERY_BUDGET:
            raise ConfigError(f"the query budget must be between 0 and {MAX_QUERY_BUDGET}")
        from secure_collab.config import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {shown(self.backend)}")
        if (self.backend == "malmen") != (self.hypernet is not None):
            raise ConfigError("--hypernet DIR goes with --backend malmen (and only with it): the hypernetwork the "
                              "session pins")
        if self.release == "served" and (self.variant != "oneshot" or self.rounds != 1):
            raise ConfigError('release "served" needs variant = "oneshot" and rounds = 1: the parties keep the base '
                              "model, so every statistic must come from it")


def session_document(lm: Any, model: str, choices: SessionChoices, templates: list[str] | None = None,
                     cache: Path | None = None) -> dict[str, dict[str, Any]]:
    """The session file's tables for the loaded base model ``lm`` (named ``model`` in the file)."""
    if choices.backend == "malmen":
        return _malmen_document(lm, model, choices)
    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.models.specs import down_weight, n_layers

    depth = n_layers(lm.model, lm.spec)
    hp = default_hparams(model, depth)
    changes: dict[str, Any] = {}
    if choices.layers is not None:
        changes["layers"] = tuple(choices.layers)
    if choices.lam is not None:
        changes["mom2_update_weight"] = float(choices.lam)
    try:
        hp = hp.with_(**changes, variant=choices.variant)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if hp.layers[-1] >= depth:
        raise ConfigError(f"layers {list(hp.layers)}: {model} has layers 0..{depth - 1}")
    d_v, d_k = down_weight(lm.model, lm.spec, hp.layers[0]).shape
    if templates is None:
        templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, cache)
    table = hparams_table(hp)
    table["dtype"] = choices.dtype
    table["context_templates"] = list(templates)
    session = {
        "id": choices.session_id or f"session-{datetime.date.today():%Y%m%d}-{secrets.token_hex(3)}",
        "mode": choices.mode, "variant": choices.variant, "rounds": choices.rounds, "layers": list(hp.layers),
        "d_k": int(d_k), "d_v": int(d_v), "min_parties": choices.min_parties, "roster_sha256": choices.roster_sha256,
        "value_bound": choices.value_bound, "key_norm_bound": choices.key_norm_bound,
        "residual_norm_bound": choices.residual_norm_bound,
        "chunk_values": choices.chunk_values, "model": model, "weights_digest": lm.source_digest,
        "template_seed": hp.template_seed, "defence": choices.defence, "release": choices.release,
        "query_budget": choices.query_budget, "hparams": table,
        "protection": {"precision_bits": choices.precision_bits} if choices.precision_bits is not None else {},
    }
    network = {"coordinator_bind": choices.bind, "coordinator_endpoint": choices.endpoint,
               "join_timeout_s": choices.join_timeout_s, "stage_timeout_s": choices.stage_timeout_s,
               "solve_timeout_s": choices.solve_timeout_s, "heartbeat_s": 1.0, "wait_log_s": 30.0,
               "request_in_turn": choices.request_in_turn, "serve_timeout_s": choices.serve_timeout_s,
               "coordinator_memory_bytes": choices.coordinator_memory_bytes}
    return {"session": session, "network": network, "paths": dict(choices.paths)}


def _malmen_document(lm: Any, model: str, choices: SessionChoices) -> dict[str, dict[str, Any]]:
    """A MALMEN session: layers, (d_k, d_v) and the pinned digest from the hypernetwork (checked against the model);
    no MEMIT hyper-parameters, templates or λ. ``paths.hypernet`` is the given directory, relative to the file."""
    from secure_collab.editing.malmen.net import load_hypernet
    from secure_collab.models.specs import down_weight, n_layers

    assert choices.hypernet is not None  # SessionChoices checks it
    if choices.lam is not None:
        raise ConfigError("--lambda is MEMIT's: MALMEN's ridge e^{λ_l} is the hypernetwork's")
    try:
        net = load_hypernet(Path(choices.hypernet), model_digest=lm.source_digest)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    layers = tuple(net.hp.layers)
    if choices.layers is not None and tuple(choices.layers) != layers:
        raise ConfigError(f"--layers {list(choices.layers)}: the hypernetwork edits layers {list(layers)}")
    depth = n_layers(lm.model, lm.spec)
    if layers[-1] >= depth:
        raise ConfigError(f"the hypernetwork edits layers {list(layers)}: {model} has layers 0..{depth - 1}")
    d_v, d_k = down_weight(lm.model, lm.spec, layers[0]).shape
    if any(tuple(net.shapes[lay]) != (int(d_k), int(d_v)) for lay in layers):
        raise ConfigError(f"the hypernetwork was made for other layer shapes than {model}'s (d_k {d_k}, d_v {d_v})")
    doc = session_document(lm, model, replace(choices, backend="memit", hypernet=None, layers=layers), templates=[])
    session = {k: v for k, v in doc["session"].items() if k not in ("template_seed", "hparams", "protection")}
    session.update(variant="oneshot", backend="malmen", hypernet_digest=net.digest(), hparams={"dtype": choices.dtype},
                   protection=doc["session"]["protection"])
    return {"session": session, "network": doc["network"], "paths": dict(choices.paths)}


def render_session(doc: dict[str, dict[str, Any]], title: str = "") -> str:
    """TOML with a comment on every key (tomllib reads it back to ``doc``)."""
    lines = [
        "# secure-collab session configuration" + (f": {title}" if title else ""),
        "# Every site uses this same file: its digest (`secure-collab session show session.toml`) is bound",
        "# into every message, so compare it out of band. Paths are relative to this file.",
        "",
    ]

    def emit(name: str, table: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                continue
            comment = f"  # {COMMENTS[key]}" if key in COMMENTS else ""
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                lines.append(f"{key} = [{comment}")
                lines.extend(f"    {_toml_value(v)}," for v in value)
                lines.append("]")
            else:
                lines.append(f"{key} = {_toml_value(value)}{comment}")
        lines.append("")
        for key, value in table.items():
            if isinstance(value, dict):
                emit(f"{name}.{key}", value)

    for name, table in doc.items():
        emit(name, table)
    return "\n".join(lines)


def write_session(path: Path, doc: dict[str, dict[str, Any]], *, force: bool = False, title: str = "") -> Config:
    """Write the file (refusing to overwrite unless ``force``) and load it back: the result is validated."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(render_session(doc, title))
    try:
        load_config(tmp)  # validates; a bad file never replaces a good one
    except BaseException:
        tmp.unlink()
        raise
    tmp.replace(path)
    return load_config(path)


def parse_parties(text: str) -> tuple[str, ...]:
    """"a,b,c" -> ("a", "b", "c"), names checked as roster names."""
    from secure_collab.keys import check_name

    names = tuple(check_name(p.strip()) for p in re.split(r"[,\s]+", text) if p.strip())
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"party names must be distinct and non-empty: {text!r}")
    return names


def _dp(config: Config) -> dict[str, Any] | None:
    """The (ε, δ) of the session's noise (``editing.accounting.session_epsilon``), or None without noise."""
    from secure_collab.editing.accounting import session_epsilon
    from secure_collab.editing.defences import parse_defence

    dp = session_epsilon(parse_defence(config.session.defence), config)
    return None if dp is None else dp.summary()


def describe(config: Config) -> dict[str, Any]:
    """What sites compare out of band before a session: its digest, the model and every roster key."""
    s = config.session
    return {
        "session": s.id, "config_digest": config.digest, "model": s.model, "weights_digest": s.weights_digest,
        "mode": s.mode, "variant": s.variant, "layers": list(s.layers), "d_k": s.d_k, "d_v": s.d_v,
        "min_parties": s.min_parties, "defence": s.defence, "dp": _dp(config), "release": s.release,
        "query_budget": s.query_budget if s.served else None, "backend": s.backend,
        "hypernet_digest": s.hypernet_digest or None, "parties": sorted(config.roster.parties),
        "roster_sha256": config.roster.digest(), "fingerprints": config.roster.fingerprints(),
        "coordinator_endpoint": config.network.coordinator_endpoint,
        "coordinator_bind": config.network.coordinator_bind,
    }
