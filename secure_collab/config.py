"""Session configuration: frozen dataclasses loaded from TOML; paths resolve relative to the file.

`secure-collab session init --model M --parties a,b,c --out session.toml` writes a complete, commented file
(dimensions, weights digest and context templates taken from the model); `secure_collab.session_file` holds
the meaning of every key. Its shape (every field of [session] is bound into each message through
``Config.digest``)::

    [session]
    id = "demo-1"
    mode = "shares"              # ckks | shares | plain
    variant = "sequential"       # sequential | oneshot
    rounds = 1
    layers = [3, 4, 5, 6, 7]
    d_k = 1536                   # down-projection input size (G has d_k(d_k+1)/2 values)
    d_v = 576                    # down-projection output size (B has d_v*d_k values)
    min_parties = 2
    roster_sha256 = "..."        # the roster's digest, agreed out of band (`Roster.digest`); pinned
    value_bound = 1e6            # declared max |entry| of one party's statistic
    key_norm_bound = 1e3         # declared max ‖k‖ of one key (plausibility: tr ΣG ≤ κ² · Σ edits)
    residual_norm_bound = 1e3    # declared max ‖r‖ of one residual (‖ΣB‖_F ≤ ρ κ · Σ edits)
    max_edits_per_party = 1000   # declared max edit requests of one party in one round
    answer_pad_s = 0.0           # parties answer a request no earlier than this many seconds (0: at once);
                                 # set it above the statistics time of max_edits_per_party to hide edit counts
    chunk_values = 262144        # values per CONTRIB message
    model = "smollm2-135m"
    weights_digest = "…"         # sha256 of the base weights; every role checks it at start
    template_seed = 0
    update_rule = "memit-static" # memit-static | memit-dynamic | alphaedit (secure_collab.editing.rules)
    dedupe = false               # keyed tags (OPRF held by the solver): a fact at several parties counts once
    conflict_policy = "none"     # none | priority | majority | first: same subject+relation, other objects
    party_priority = []          # roster names, highest first (priority policy, ties, new objects under "first";
                                 # default roster order)
    known_residual = 0.0         # > 0: a party withholds a request with ‖z*−h‖/‖h‖ <= this (the model knows it)
    augment = 2                  # paraphrased requests a conflict winner adds (exempt from dedupe)
    defence = "none"             # none | camouflage:S | decoys:R[@P] (parties) | rank:K (solver) | noise:Z (parties;
                                 # clips to key_norm_bound, residual_norm_bound) [delta:D], joined with '+'
                                 # (secure_collab.editing.defences; docs/privacy.md, docs/dp.md)
    release = "weights"          # weights: every party receives ΔW | served: only the solver's host applies it and
                                 # answers the parties' end-to-end encrypted queries (docs/network.md); served
                                 # needs variant "oneshot" and one round (parties keep the base model)
    query_budget = 1000          # served: forward passes each party may ask the served model for (<= 10**7)
    backend = "memit"            # memit | malmen (docs/malmen.md): MALMEN sessions are oneshot, one round,
    hypernet_digest = ""         #   memit-static, no defence; malmen: the hypernetwork's digest, pinned like the
                                 #   base weights ([paths] hypernet says where each site keeps it)
    [session.hparams]            # MEMIT hyper-parameters (``lambda`` is λ), the dtype, the context templates
    lambda = 300.0
    [session.protection]         # ProtectionParams.extra, e.g. ckks precision_bits = 30

    [network]
    coordinator_bind = "tcp://127.0.0.1:5555"
    coordinator_endpoint = "tcp://127.0.0.1:5555"
    join_timeout_s = 60.0
    stage_timeout_s = 600.0
    solve_timeout_s = 600.0
    heartbeat_s = 1.0
    wait_log_s = 30.0              # coordinator: while a stage waits, one line per interval (whom, since when)
    max_message_bytes = 67108864   # per message, checked before decoding (libzmq MAXMSGSIZE per frame)
    max_frames = 1024
    hwm = 1000
    linger_ms = 10000              # on close, time to flush what is queued (the last ΔW and END)
    send_timeout_s = 10.0          # parties and solver: a send blocked this long counts as failed (the
                                   # coordinator never blocks: a send to a full queue is dropped and recorded)
    request_in_turn = false        # ask parties for statistics one at a time (shared cores)
    recv_buffer_bytes = 134217728  # coordinator (per connection) and solver: complete messages queued, in bytes
                                   # (RCVHWM = recv_buffer_bytes // max_message_bytes, at least 1; 2 by default)
    coordinator_memory_bytes = 67108864  # coordinator: running sums held at once; parties send within the window
                                   # of chunks this holds, and each chunk's sum goes to the solver once complete.
                                   # The process holds about 88 MiB (itself) + this + its connections' messages
                                   # in flight (docs/network.md "Streaming"): with the defaults, within 256 MB
                                   # at any d_k and at 10 parties in shares or plain
    budget_headroom = 4.0          # per-party budgets: this many times what an honest party sends
    max_refusal_rows = 64          # refusals recorded (and answered) one by one per peer and step
    welcome_burst = 3              # full re-welcomes (setup + missing releases) a party gets at once,
    welcome_interval_s = 10.0      #   then one more per interval
    connects_per_minute = 30.0     # CURVE handshakes admitted per roster key (a burst of as many)
    serve_timeout_s = 600.0        # served release: how long the model is served after the last step at most

    [paths]
    keys = "keys"                # this site's secret key files
    roster = "roster.toml"       # every site's public keys
    ledger = "coordinator/ledger.sqlite"
    solver_state = "solver-state"
    party_status = "."           # where a party keeps status-<party>.json (`secure-collab status`)
    hypernet = "hypernet"        # malmen: this site's copy of the hypernetwork (party and solver)
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from secure_collab.errors import ConfigError
from secure_collab.files import child_dir
from secure_collab.keys import Roster, load_roster
from secure_collab.names import NAME_RULE, is_name, shown
from secure_collab.protection.encoding import triangle_size
from secure_collab.protocol import messages as wire
from secure_collab.protocol.messages import MODES, STATISTICS, VARIANTS
from secure_collab.protocol.query import MAX_QUERY_BUDGET
from secure_collab.protocol.tags import ELEMENT_BYTES

CONFLICT_POLICIES = ("none", "priority", "majority", "first")
# How a session releases ΔW: "weights" (encrypted to every party, which applies it) or "served" (kept by the solver's
# host, which applies it and answers each party's queries within ``query_budget``). A release policy, not a
# transform of ΔW, so it is a setting of its own beside ``defence`` (which still applies to the served model).
RELEASES = ("weights", "served")
# The editing backend of a session: MEMIT (targets, λC) or MALMEN (a public hypernetwork, ridge e^{λ_l}·I;
# secure_collab.editing.malmen). Both contribute (G, B) of the same shapes, so the wire is the same.
BACKENDS = ("memit", "malmen")
# The largest value_bound (and key_norm_bound, residual_norm_bound) a session may declare: 2^100 ≈ 1.27e30, far
# above any honest statistic (entries of Σ k kᵀ over max_edits_per_party requests). Every quantity the solver and
# the plausibility checks compute from an in-bound aggregate then stays finite in float64: an opened entry is at
# most P·β ≤ 2^10 · 2^100 (P ≤ wire.MAX_PARTIES), tr ΣG ≤ d_k·P·β ≤ 2^130, ‖ΣB‖_F² ≤ n·(P·β)² ≤ 2^40 · 2^220 =
# 2^260, κ²·N and ρ·κ·N ≤ 2^200 · 2^20, all ≪ 2^1023. Without a cap a finite value_bound of 5e307 set up (the
# shares encoding only needs P·β finite) and g + gᵀ overflowed in the psd check.
MAX_STAT_BOUND = 2.0**100
__all__ = ["BACKENDS", "CONFLICT_POLICIES", "MAX_QUERY_BUDGET", "MODES", "RELEASES", "STATISTICS", "VARIANTS",
           "Config", "ConfigError", "NetworkConfig", "PathsConfig", "SessionConfig", "config_from_dict", "load_config",
           "write_config"]


@dataclass(frozen=True)
class SessionConfig:
    id: str
    mode: str
    layers: tuple[int, ...]
    d_k: int
    d_v: int
    variant: str = "sequential"
    rounds: int = 1
    min_parties: int = 2
    roster_sha256: str = ""
    value_bound: float = 1e6
    key_norm_bound: float = 1e3
    residual_norm_bound: float = 1e3
    max_edits_per_party: int = 1000
    answer_pad_s: float = 0.0  # a party answers a request no earlier than this (hides its edit count's timing)
    chunk_values: int = 262144
    model: str = "smollm2-135m"
    weights_digest: str = ""  # sha256 of the base weights (LoadedModel.source_digest); "" = unchecked
    template_seed: int = 0
    update_rule: str = "memit-static"
    dedupe: bool = False
    conflict_policy: str = "none"
    party_priority: tuple[str, ...] = ()
    known_residual: float = 0.0
    augment: int = 2
    defence: str = "none"  # release defences (editing.defences): camouflage at the parties, rank at the solver
    release: str = "weights"  # RELEASES: weights (every party gets ΔW) | served (only the solver's host holds it)
    query_budget: int = 1000  # served: forward passes each party may ask for (secure_collab.protocol.query)
    backend: str = "memit"  # BACKENDS
    hypernet_digest: str = ""  # malmen: Hypernet.digest() of the pinned hypernetwork; party and solver check it
    hparams: dict[str, Any] = field(default_factory=dict, hash=False)
    protection: dict[str, Any] = field(default_factory=dict, hash=False)  # ProtectionParams.extra

    def n_values(self, stat: str) -> int:
        return {"G": triangle_size(self.d_k), "B": self.d_v * self.d_k, "N": 1}[stat]

    def n_chunks(self, stat: str) -> int:
        return -(-self.n_values(stat) // self.chunk_values)

    @property
    def tags(self) -> bool:
        """Whether each round starts with the keyed-tag exchange (dedupe or conflict resolution)."""
        return self.dedupe or self.conflict_policy != "none"

    @property
    def served(self) -> bool:
        """Whether ΔW stays with the solver's host, which serves the edited model to the parties' queries."""
        return self.release == "served"

    @property
    def counted_edits(self) -> int:
        """The most edits one party may count in N per round: max_edits_per_party × (1 + R) with ``decoys:R`` on
        (decoys count as edits in N, not in the tags: R is this public setting, so the solver scales its checks)."""
        from secure_collab.editing.defences import parse_defence

        return self.max_edits_per_party * parse_defence(self.defence).edit_factor

    @property
    def repair_round(self) -> int | None:
        """The index of the closing round of ``decoys:R`` (``rounds``), or None: with decoys on and the weights
        released, every party then pushes back its decoys the release weakened (``editing.decoys.repairs``; zeros
        when none), solved against the earlier rounds' ΣG. No tags, no verdicts, no targets of its own."""
        from secure_collab.editing.defences import parse_defence

        return self.rounds if parse_defence(self.defence).repair_rounds(self.served) else None

    @property
    def protocol_rounds(self) -> int:
        """Rounds of aggregation the session runs: ``rounds``, and the decoys' repair round when there is one."""
        return self.rounds + (self.repair_round is not None)

    @property
    def tag_slots(self) -> int:
        """Blinded elements (and tags) per party and round: two per request, padded to the declared maximum."""
        return 2 * self.max_edits_per_party

    def steps(self) -> list[tuple[int, tuple[int, ...]]]:
        """(round, layers) aggregated together: one layer per step (sequential) or all (oneshot)."""
        per_round = [(lay,) for lay in self.layers] if self.variant == "sequential" else [self.layers]
        return [(r, layers) for r in range(self.protocol_rounds) for layers in per_round]


# the coordinator's window of running sums by default: with its fixed size (about 88 MiB) and the messages in flight
# (coordinator/memory.py) the whole process stays within 256 MB at 10 parties in shares or plain, at any d_k
COORDINATOR_MEMORY_BYTES = 64 << 20


@dataclass(frozen=True)
class NetworkConfig:
    coordinator_bind: str = "tcp://127.0.0.1:5555"
    coordinator_endpoint: str = "tcp://127.0.0.1:5555"
    join_timeout_s: float = 60.0
    stage_timeout_s: float = 600.0
    solve_timeout_s: float = 600.0
    heartbeat_s: float = 1.0
    wait_log_s: float = 30.0
    max_message_bytes: int = 64 << 20
    max_frames: int = 1024
    hwm: int = 1000
    linger_ms: int = 10000
    send_timeout_s: float = 10.0
    request_in_turn: bool = False
    recv_buffer_bytes: int = 128 << 20  # RCVHWM 2 at the default max_message_bytes (RCVHWM 1 hangs a session: 7b55659)
    coordinator_memory_bytes: int = COORDINATOR_MEMORY_BYTES  # the window of running sums (docs/network.md, Streaming)
    budget_headroom: float = 4.0
    max_refusal_rows: int = 64
    welcome_burst: int = 3
    welcome_interval_s: float = 10.0
    connects_per_minute: float = 30.0
    serve_timeout_s: float = 600.0  # served release: the longest the model is served after the last step

    def idle_limit_s(self, parties: int, served: bool = False) -> float:
        """The longest a live coordinator can stay silent towards a party or the solver: every party's turn, then the
        solve (and a served release's serving, for the solver, whose queries may be few and far between)."""
        return (self.join_timeout_s + self.stage_timeout_s * parties + self.solve_timeout_s
                + (self.serve_timeout_s if served else 0.0))


@dataclass(frozen=True)
class PathsConfig:
    keys: Path
    roster: Path
    ledger: Path
    solver_state: Path
    party_status: Path  # the directory of a party's status-<party>.json (parties/status.py)
    hypernet: Path  # malmen: this site's copy of the hypernetwork (checked against session.hypernet_digest)


@dataclass(frozen=True)
class Config:
    session: SessionConfig
    network: NetworkConfig
    paths: PathsConfig
    roster: Roster

    @property
    def digest(self) -> str:
        """sha256 over the session section and the roster: what every party must agree on."""
        session = asdict(self.session)
        session["layers"] = list(self.session.layers)
        session["party_priority"] = list(self.session.party_priority)
        if self.session.backend == "memit":  # a MEMIT session's digest stays what it was before backends existed,
            del session["backend"], session["hypernet_digest"]  # so a ledger or solver state of it is still its own
        doc = {"session": session, "roster": self.roster.digest()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def solver_dir(self) -> Path:
        """The solver's state directory of this session, ``<paths.solver_state>/<session.id>``: the id is a name
        (checked at load) and the resolved directory lies directly inside the resolved parent (``child_dir``)."""
        return child_dir(self.paths.solver_state, self.session.id)


def load_config(path: Path) -> Config:
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"no session file at {path}")
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return config_from_dict(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_from_dict(data: dict[str, Any], base_dir: Path) -> Config:
    session = _build(SessionConfig, data.get("session", {}), "session")
    network = _build(NetworkConfig, data.get("network", {}), "network")
    raw_paths = data.get("paths", {})
    defaults = {"keys": "keys", "roster": "keys/roster.toml", "ledger": "coordinator/ledger.sqlite",
                "solver_state": "solver-state", "party_status": ".", "hypernet": "hypernet"}
    unknown = set(raw_paths) - set(defaults)
    if unknown:
        raise ConfigError(f"unknown [paths] keys: {sorted(unknown)}")
    paths = PathsConfig(**{k: (Path(base_dir) / raw_paths.get(k, v)).resolve() for k, v in defaults.items()})
    _validate(session, network)
    if not paths.roster.is_file():
        raise ConfigError(f"no roster at {paths.roster} ([paths] roster)")
    roster = load_roster(paths.roster)
    if len(roster.parties) > wire.MAX_PARTIES:
        raise ConfigError(f"the roster lists {len(roster.parties)} parties; at most {wire.MAX_PARTIES}")
    unknown_parties = [p for p in session.party_priority if p not in roster.parties]
    if unknown_parties or len(set(session.party_priority)) != len(session.party_priority):
        raise ConfigError(f"session.party_priority must list distinct roster parties; not in the roster: "
                          f"{unknown_parties}")
    if not session.roster_sha256:
        raise ConfigError(f"session.roster_sha256 is missing: pin the roster's digest ({roster.digest()} for "
                          f"{paths.roster}) after checking its fingerprints with every site")
    if roster.digest() != session.roster_sha256:
        raise ConfigError(f"the roster {paths.roster} does not match session.roster_sha256: its digest is "
                          f"{roster.digest()}; a key was added, removed or changed since it was pinned")
    return Config(session=session, network=network, paths=paths, roster=roster)


def _build(cls: type, table: dict[str, Any], name: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown [{name}] keys: {sorted(unknown)}")
    values = dict(table)
    for f in fields(cls):
        if f.name in values and not _has_type(values[f.name], str(f.type)):
            raise ConfigError(f"{name}.{f.name} must be {_TYPE_WORDS.get(str(f.type), f.type)}, "
                              f"got {values[f.name]!r}")
    if "layers" in values:
        values["layers"] = tuple(values["layers"])
    if "party_priority" in values:
        values["party_priority"] = tuple(values["party_priority"])
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{name}]: {exc}") from None


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "tuple[int, ...]": "a list of integers", "tuple[str, ...]": "a list of names",
               "dict[str, Any]": "a table"}


def _has_type(value: Any, annotation: str) -> bool:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    return {
        "int": is_int(value), "float": is_int(value) or isinstance(value, float), "str": isinstance(value, str),
        "bool": isinstance(value, bool), "dict[str, Any]": isinstance(value, dict),
        "tuple[int, ...]": isinstance(value, list | tuple) and all(is_int(v) for v in value),
        "tuple[str, ...]": isinstance(value, list | tuple) and all(isinstance(v, str) for v in value),
    }.get(annotation, True)


def _validate(s: SessionConfig, n: NetworkConfig) -> None:
    """Everything a session puts on the wire must fit the wire's bounds (``protocol.messages``)."""
    if not is_name(s.id):  # it names the solver's state directory: refuse "../x", "/abs", "s/.", "a\n", ...
        raise ConfigError(f"session.id must be a name ({NAME_RULE}), not {shown(s.id)}")
    if s.mode not in MODES:
        raise ConfigError(f"session.mode must be one of {MODES}, got {s.mode!r}")
    if s.variant not in VARIANTS:
        raise ConfigError(f"session.variant must be one of {VARIANTS}, got {s.variant!r}")
    if not s.layers or len(set(s.layers)) != len(s.layers) or list(s.layers) != sorted(s.layers):
        raise ConfigError("session.layers must be distinct and ascending")
    for key in ("d_k", "d_v", "rounds", "min_parties", "chunk_values", "max_edits_per_party"):
        if getattr(s, key) < 1:
            raise ConfigError(f"session.{key} must be >= 1")
    if not 0 <= s.answer_pad_s < float("inf"):
        raise ConfigError("session.answer_pad_s must be a finite number >= 0")
    for key in ("value_bound", "key_norm_bound", "residual_norm_bound"):
        if not 0 < getattr(s, key) <= MAX_STAT_BOUND:
            raise ConfigError(f"session.{key} must be a positive number <= 2**100 ({MAX_STAT_BOUND:.4g}): larger "
                              "bounds would let the solver's float64 checks overflow")
    bounds = {"rounds": wire.MAX_ROUND + 1, "chunk_values": wire.MAX_VALUES, "min_parties": wire.MAX_PARTIES}
    for key, top in bounds.items():
        if getattr(s, key) > top:
            raise ConfigError(f"session.{key} must be <= {top}")
    if max(s.layers) > wire.MAX_LAYER or min(s.layers) < 0 or len(s.layers) > wire.MAX_LAYERS:
        raise ConfigError(f"session.layers must be at most {wire.MAX_LAYERS} layers in 0..{wire.MAX_LAYER}")
    if max(s.d_k, s.d_v) > wire.MAX_DIM or max(s.n_values(st) for st in STATISTICS) > wire.MAX_VALUES:
        raise ConfigError(f"session.d_k and d_v must be <= {wire.MAX_DIM} (and d_v * d_k <= {wire.MAX_VALUES})")
    if s.rounds * len(s.layers) > wire.MAX_STEPS:
        raise ConfigError(f"session.rounds * len(layers) must be <= {wire.MAX_STEPS}")
    from secure_collab.editing import UPDATE_RULES

    if s.update_rule not in UPDATE_RULES:
        raise ConfigError(f"session.update_rule must be one of {UPDATE_RULES}, got {s.update_rule!r}")
    if s.conflict_policy not in CONFLICT_POLICIES:
        raise ConfigError(f"session.conflict_policy must be one of {CONFLICT_POLICIES}, got {s.conflict_policy!r}")
    if not isinstance(s.dedupe, bool):
        raise ConfigError("session.dedupe must be true or false")
    if not 0 <= s.known_residual < float("inf"):
        raise ConfigError("session.known_residual must be a finite number >= 0")
    if not 0 <= s.augment <= 16:
        raise ConfigError("session.augment must be between 0 and 16")
    from secure_collab.editing.defences import DefenceError, parse_defence

    try:
        defence = parse_defence(s.defence)
    except DefenceError as exc:
        raise ConfigError(f"session.defence: {exc}") from None
    if s.release not in RELEASES:
        raise ConfigError(f"session.release must be one of {RELEASES}, got {s.release!r}")
    if s.protocol_rounds > wire.MAX_ROUND + 1 or s.protocol_rounds * len(s.layers) > wire.MAX_STEPS:
        raise ConfigError(f"session.rounds must be <= {wire.MAX_ROUND} with decoys (their repair round is one more) "
                          f"and (rounds + 1) * len(layers) <= {wire.MAX_STEPS}")
    if not 0 <= s.query_budget <= MAX_QUERY_BUDGET:
        raise ConfigError(f"session.query_budget must be between 0 and {MAX_QUERY_BUDGET}")
    if s.served and (s.variant != "oneshot" or s.rounds != 1):
        # a party holds only the base model: statistics after a step (the sequential variant's next layers, a later
        # round's targets) would need the edited weights, which a served release never hands out
        raise ConfigError("session.release = \"served\" needs variant = \"oneshot\" and rounds = 1: the parties keep "
                          "the base model, so every statistic must come from it")
    _validate_backend(s)
    from secure_collab.editing.noise import session_noise_plan

    try:  # noise:Z must fit the declared bounds and the encoding (docs/dp.md)
        session_noise_plan(defence, s)
    except ValueError as exc:
        raise ConfigError(f"session.defence: {exc}") from None
    if s.tags and s.tag_slots > wire.MAX_TAG_SLOTS:
        raise ConfigError(f"session.max_edits_per_party must be <= {wire.MAX_TAG_SLOTS // 2} with dedupe or a "
                          "conflict policy (two tag slots per request)")
    if s.tags and s.tag_slots * ELEMENT_BYTES * 2 + 4096 > n.max_message_bytes:
        raise ConfigError(f"network.max_message_bytes must hold a party's padded tags ({s.tag_slots} slots of "
                          f"{ELEMENT_BYTES} bytes, twice): lower session.max_edits_per_party or raise it")
    if s.chunk_values * 64 > n.max_message_bytes:
        raise ConfigError("network.max_message_bytes must allow 64 bytes per value of a chunk")
    # a release's ΔW (and holders note) that does not fit one message travels in RELEASE_PARTs (protocol/release.py)
    positive = ("heartbeat_s", "recv_buffer_bytes", "coordinator_memory_bytes", "budget_headroom", "max_refusal_rows",
                "welcome_burst", "welcome_interval_s", "connects_per_minute", "hwm", "max_frames")
    for key in positive:
        if not getattr(n, key) > 0:
            raise ConfigError(f"network.{key} must be > 0")
    if not 0 < n.serve_timeout_s < float("inf"):
        raise ConfigError("network.serve_timeout_s must be a finite number > 0")
    if n.budget_headroom < 1:
        raise ConfigError("network.budget_headroom must be >= 1 (below it an honest party is cut off)")


def _validate_backend(s: SessionConfig) -> None:
    """MALMEN in a session: a pinned hypernetwork, and only what its one-shot edit is exact for (docs/malmen.md)."""
    if s.backend not in BACKENDS:
        raise ConfigError(f"session.backend must be one of {BACKENDS}, got {shown(s.backend)}")
    if s.backend == "memit":
        if s.hypernet_digest:
            raise ConfigError('session.hypernet_digest is set but session.backend is "memit": only MALMEN uses a '
                              "hypernetwork")
        return
    if len(s.hypernet_digest) != 64 or any(c not in "0123456789abcdef" for c in s.hypernet_digest):
        raise ConfigError('session.backend = "malmen" needs session.hypernet_digest, the sha256 (64 hex digits) of '
                          "the hypernetwork every site uses: write the file with `secure-collab session init "
                          "--backend malmen --hypernet DIR`")
    # every MALMEN row is taken on the unedited model (the single-machine edit is one-shot), so a session is one
    # aggregation of all layers; λC, earlier rounds' ΣG and the defences' C-metric have no MALMEN meaning yet
    refused = [(s.variant != "oneshot", 'variant = "oneshot" (all layers\' rows come from the unedited model)'),
               (s.rounds != 1, "rounds = 1 (no cross-round rule for MALMEN yet)"),
               (s.update_rule != "memit-static", 'update_rule = "memit-static" (the rules across rounds are '
                                                 "MEMIT's: λC and earlier rounds' ΣG)"),
               (s.defence != "none", 'defence = "none" (camouflage, rank and noise are built on MEMIT\'s keys and C)'),
               (s.release != "weights", 'release = "weights"'),
               (s.known_residual != 0, "known_residual = 0 (it reads MEMIT's targets)")]
    wrong = [what for bad, what in refused if bad]
    if wrong:
        raise ConfigError(f'session.backend = "malmen" needs {"; ".join(wrong)}')


def write_config(path: Path, session: dict[str, Any], network: dict[str, Any] | None = None,
                 paths: dict[str, Any] | None = None, *, pin_roster: bool = True) -> Config:
    """Write a configuration file (tables as documented above) and load it back, e.g. for the demo.

    ``pin_roster``: fill in ``session.roster_sha256`` from the roster file when the caller made that roster
    itself (demo, tests); a real deployment pins the digest its sites agreed on instead."""
    path = Path(path)
    if pin_roster and "roster_sha256" not in session:
        roster_path = Path((paths or {}).get("roster", "keys/roster.toml"))
        roster_path = roster_path if roster_path.is_absolute() else path.parent / roster_path
        session = {**session, "roster_sha256": load_roster(roster_path).digest()}
    doc: dict[str, dict[str, Any]] = {"session": session, "network": network or {}, "paths": paths or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_toml(doc))
    return load_config(path)


def dump_toml(doc: dict[str, dict[str, Any]]) -> str:
    """Write the small subset of TOML our configs use (tables of scalars, lists, one nesting level)."""
    out: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        out.append(f"[{prefix}]")
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        for key, value in table.items():
            if not isinstance(value, dict):
                out.append(f"{key} = {_toml_value(value)}")
        out.append("")
        for key, value in nested.items():
            emit(f"{prefix}.{key}", value)

    for name, table in doc.items():
        emit(name, table)
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return toml_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def toml_string(text: str) -> str:
    """A TOML basic string: backslash, quote and every control character escaped (DEL too)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
