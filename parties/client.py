"""A party's network loop: join, check the solver-signed setup and open its sealed session keys, send
protected, signed statistics in chunks, verify and decrypt each signed ΔW before applying it.

The engine supplies two callbacks and never sees a socket:

    compute_statistics(round, layer) -> {"G": (d_k, d_k), "B": (d_v, d_k),
                                         "N": this party's number of edit requests in the round}
    apply_delta(layer, delta)        # delta: (d_v, d_k) float64, already verified and decrypted

Statistics of a step are computed once and cached until the step's releases are applied, so a step that
is collected again (a new attempt) is re-protected with fresh randomness but not recomputed.

In a served session (``session.release = "served"``) no ΔW arrives: each step ends with the solver's signed NOTICE,
and ``apply_delta`` is never called. Once every step is noticed the party runs ``served_queries`` (its evaluation
through queries to the served model, ``parties.queries``), if it was given one, and ends without waiting for END:
serving goes on for other parties and for later `secure-collab query` runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import zmq

from parties.queries import QueryChannel
from parties.status import StatusFile
from parties.tags import PartyTags, Tagger
from secure_collab.config import STATISTICS, Config
from secure_collab.editing.defences import DefenceError, parse_defence
from secure_collab.editing.noise import session_noise_plan
from secure_collab.keys import CurveKeyPair, load_identity
from secure_collab.protection import PartySecrets, ProtectionError, ProtectionScheme, StatContext
from secure_collab.protection.sealing import decrypt_release
from secure_collab.protection.statements import release_label, setup_bytes
from secure_collab.protocol import transport
from secure_collab.protocol.messages import (
    STORED_TEXT,
    Frame,
    Message,
    MsgType,
    ProtocolError,
    Sequencer,
    build,
    check_tag_body,
    clean_text,
    part_of,
    peek,
    release_of,
    sha256_hex,
)
from secure_collab.protocol.plausibility import Bounds, plausibility_problems
from secure_collab.protocol.release import check_release, max_ciphertext_bytes, split_release, verify
from secure_collab.protocol.statistics import chunk_body, chunk_bounds, pack_statistics
from secure_collab.protocol.watch import ConnectionWatch


class ComputeStatistics(Protocol):
    def __call__(self, round_: int, layer: int) -> Mapping[str, np.ndarray]: ...


class ApplyDelta(Protocol):
    def __call__(self, layer: int, delta: np.ndarray) -> None: ...


Ask = Callable[[dict[str, Any]], dict[str, Any]]  # a query (protocol/query.py) -> its decoded answer
ServedQueries = Callable[[Ask], dict[str, Any]]  # a party's own queries once every step is served -> its report


class Fatal(Exception):
    """The party stops: the coordinator sent something that must not be acted on."""


@dataclass
class PartyResult:
    ok: bool = False
    reason: str = ""
    applied: dict[tuple[int, int], str] = field(default_factory=dict)  # (round, layer) -> sha256 of ΔW
    noticed: dict[tuple[int, int], str] = field(default_factory=dict)  # served: (round, layer) -> sha256, no ΔW here
    served: dict[str, Any] = field(default_factory=dict)  # served: what ``served_queries`` reported
    refusals: list[str] = field(default_factory=list)  # reasons the coordinator gave for refusing us
    decisions: dict[int, list[tuple[int, str, str, str, int]]] = field(default_factory=dict)  # round -> verdicts
    own_tags: dict[int, list[bytes]] = field(default_factory=dict)  # round -> this party's tags (its own)
    left_out: list[tuple[int, int]] = field(default_factory=list)  # releases computed without us
    # (round, request index) -> (k, m): a request kept at weight 1/m whose release had only k < m of the fact's
    # holders in the step (the solver says so, signed): the fact counts k/m of one copy (the fewest over layers)
    weakened: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0  # every frame the coordinator sent us (setup, requests, encrypted releases)
    seconds: float = 0.0


@dataclass
class _Parts:
    """A release's ciphertext arriving in RELEASE_PARTs: (round, layer), the whole's sha256, the part count."""

    key: tuple[int, int]
    sha256: str
    parts: int
    received: int = 0
    data: bytearray = field(default_factory=bytearray)


@dataclass
class _Stream:
    """A step's chunks being sent: (round, layers, attempt), their order (layer, statistic, chunk), the next one."""

    key: tuple[int, tuple[int, ...], int]
    order: tuple[tuple[int, str, int], ...]
    where: str  # for the status file
    stage_end: float
    next: int = 0


class Party:
    def __init__(self, config: Config, name: str, scheme: ProtectionScheme,
                 compute_statistics: ComputeStatistics, apply_delta: ApplyDelta, *,
                 ctx: zmq.Context | None = None, stop: threading.Event | None = None,
                 keys: CurveKeyPair | None = None, tagger: Tagger | None = None,
                 served_queries: ServedQueries | None = None) -> None:
        if name not in config.roster.parties:
            raise ValueError(f"party {name!r} is not in the roster")
        self.cfg, self.s, self.name, self.scheme = config, config.session, name, scheme
        self.compute, self.apply = compute_statistics, apply_delta
        ident = load_identity(config.paths.keys / f"party-{name}.key_secret")
        if ident.signing is None or ident.sealing is None or ident.public != config.roster.parties[name]:
            raise ValueError(f"party-{name}.key_secret does not hold party {name!r}'s identity in the pinned roster")
        self.identity = ident
        self.queries = QueryChannel(config, name, ident.sealing.private_bytes_raw()) if config.session.served else None
        self.served_queries = served_queries
        self.keys = keys or ident.curve
        self.secrets: PartySecrets | None = None
        self.stop = stop or threading.Event()
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.seq = Sequencer()
        self.public: bytes | None = None
        self.cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self.sent: set[tuple[int, tuple[int, ...], int]] = set()
        self.stream: _Stream | None = None  # the step being sent, as far as the coordinator's window allows
        self.parts: _Parts | None = None  # a release arriving in parts (one at a time)
        self.result = PartyResult()
        self.ended = False
        self.log = logging.getLogger(f"party.{name}")
        self.handlers = {MsgType.SETUP: self._on_setup, MsgType.REQUEST: self._on_request,
                         MsgType.RELEASE: self._on_release, MsgType.RELEASE_PART: self._on_release_part,
                         MsgType.ERROR: self._on_error,
                         MsgType.TAG_OPEN: self._on_tag_open, MsgType.EVALUATED: self._on_evaluated,
                         MsgType.DECISION: self._on_decision, MsgType.NOTICE: self._on_release}
        if config.session.tags and tagger is None:
            raise ValueError("this session exchanges tags (dedupe or conflict_policy): the engine must give a tagger")
        net = config.network
        # the longest a live coordinator can stay silent towards us: every party's turn, then the solve
        self.idle_limit = net.idle_limit_s(len(config.roster.parties))
        self.status = StatusFile(config, name, self.log)
        # noise:Z: what this party's engine adds (the same plan on every role), so the checks below allow for it
        self.noise_plan = session_noise_plan(parse_defence(config.session.defence), config.session)
        self.fact_tags = (PartyTags(config.session, config.digest, name, ident, config.roster.signing_public(), tagger,
                               len(config.roster.parties))
                     if config.session.tags and tagger is not None else None)

    def run(self) -> PartyResult:
        start = time.monotonic()
        with contextlib.ExitStack() as stack:
            if self._own_ctx:
                stack.callback(self.ctx.term)
            self.sock = transport.dealer(self.ctx, self.keys, self.cfg.roster.coordinator.curve, self.cfg.network)
            # after END nothing we still queue matters (the coordinator is gone): do not wait for it
            stack.callback(lambda: self.sock.close(linger=0 if self.ended else self.cfg.network.linger_ms))
            self.watch = ConnectionWatch(self.sock, self.cfg.network.coordinator_endpoint, self.log,
                                         self.cfg.network.join_timeout_s, idle_s=self.idle_limit).start()
            stack.callback(self.watch.stop)
            self.status.update("joining", deadline=time.time() + self.cfg.network.join_timeout_s,
                               means="this party gives up unless it reaches the coordinator")
            try:
                self._loop()
            except Fatal as exc:
                self.result.ok, self.result.reason = False, str(exc)
                self.log.error("stopped: %s", exc)
                if self.stop.is_set():
                    self.status.update("stopped", "(restart the same command to rejoin)")
                else:  # the reason may hold this party's own figures: it stays in the log
                    self.status.update("failed", "(the reason is in this party's log)")
        self.result.seconds = time.monotonic() - start
        return self.result

    def _loop(self) -> None:
        net = self.cfg.network
        idle_limit = self.idle_limit
        limits = transport.limits_for(net)
        self._send(self._hello())
        last = time.monotonic()
        heard = False  # until the coordinator is first reached, give up after join_timeout_s
        while not self.stop.is_set():
            if not self.sock.poll(int(net.heartbeat_s * 1000), zmq.POLLIN):
                heard = heard or self.watch.ever_connected
                if not heard and time.monotonic() - last > net.join_timeout_s:
                    raise Fatal(f"could not reach the coordinator at {net.coordinator_endpoint} within "
                                f"join_timeout_s ({net.join_timeout_s:g} s)")
                if time.monotonic() - last > idle_limit:
                    raise Fatal("no word from the coordinator")
                self._send(self._hello())  # heartbeat / rejoin after a restart
                continue
            last, heard = time.monotonic(), True
            frames = self.sock.recv_multipart()
            self.result.bytes_received += sum(len(f) for f in frames)
            try:
                msg = Message.from_frames(frames, limits)
            except ProtocolError as exc:
                self._unreadable(frames, exc)
                continue
            if msg.session != self.s.id or msg.config != self.cfg.digest:
                self.result.refusals.append("message for another session or configuration ignored")
                if len(self.result.refusals) == 1 or msg.type is MsgType.END:
                    self.log.error("the coordinator runs session %r with configuration digest %s…, this site "
                                   "%r with %s…: every site needs the same session file (compare `secure-collab "
                                   "session show`)", msg.session, msg.config[:12], self.s.id, self.cfg.digest[:12])
                continue
            if msg.type is MsgType.END:
                self.watch.session_ended()  # the coordinator closing its socket next is no news
                self.result.ok, self.result.reason = msg.body["ok"], msg.body["reason"]
                missing = self._missing()
                if self.result.ok and missing and {r for r, _ in missing} == {self.s.repair_round}:
                    # every edit round applied; the decoys' repair round (or its later layers) never came: the
                    # session is complete without it (a party's refusal there must not cost the others the edit)
                    self.result.reason = (f"every edit round was applied; the decoys' repair round was not "
                                          f"released for (round, layer) {missing}, so some decoy answers may stay "
                                          f"changed ({msg.body['reason']})")
                elif self.result.ok and missing:  # END is the coordinator's word, not the solver's signature
                    self.result.ok = False
                    self.result.reason = (f"the coordinator ended the session as complete, but the solver-signed "
                                          f"releases of (round, layer) {missing} never arrived: the model is "
                                          "not fully edited")
                elif self.result.ok and self.result.weakened:  # every release applied, some shared facts weakened
                    self.result.ok = False
                    self.result.reason = ("every release was applied, but the solver-signed releases say shared "
                                          "facts of ours were released short of their holders (a decided co-holder "
                                          "was not in the step): " + self._weakened_text())
                self.status.update("done" if self.result.ok else "aborted",
                                   "" if self.result.ok else clean_text(self.result.reason, STORED_TEXT))
                (self.log.info if self.result.ok else self.log.error)(
                    "the coordinator ended the session: %s%s", "" if self.result.ok else "ABORTED: ",
                    self.result.reason)
                self.ended = True
                return
            handler = self.handlers.get(msg.type)
            if handler is None:
                continue
            try:
                handler(msg)
            except (ProtocolError, ProtectionError) as exc:
                reason = clean_text(str(exc), STORED_TEXT)
                self._send(self._msg(MsgType.ERROR, body={"refused_seq": msg.seq, "reason": reason}))
            if self.queries is not None and not self._missing():
                self._served()
                return
        raise Fatal("party stopped")

    def _held(self) -> dict[tuple[int, int], str]:
        """The steps whose solver-signed release this party holds: applied ΔW, or in a served session notices."""
        return self.result.noticed if self.s.served else self.result.applied

    def _missing(self) -> list[tuple[int, int]]:
        held = self._held()
        return [key for r, ls in self.s.steps() for key in ((r, lay) for lay in ls) if key not in held]

    def _served(self) -> None:
        """Every step is released to the served model (solver-signed notices): run this party's own queries, if any,
        and end. ok rests on the notices, as in a weights session it rests on the releases, not on END."""
        self.result.ok = True
        self.result.reason = "every step is released to the served model (solver-signed notices); this party holds " \
                             "no ΔW"
        if self.served_queries is not None:
            self.status.update("querying", "its own edits, through the served model")
            try:
                self.result.served = self.served_queries(self.ask)
            except (ProtocolError, ProtectionError, zmq.ZMQError) as exc:  # the session itself went well
                self.log.error("its own queries to the served model failed: %s", exc)
                self.result.served = {"evaluated": False, "why": clean_text(f"its queries failed: {exc}", STORED_TEXT)}
        self.status.update("done", "served release: ask the served model with `secure-collab query`")
        self.log.info("%s", self.result.reason)

    def ask(self, query: dict[str, Any]) -> dict[str, Any]:
        """One query to the served model on this party's connection (answers come back through the coordinator)."""
        assert self.queries is not None, "queries are asked in a served session only"

        def build_msg(mtype: MsgType, body: dict[str, Any], frames: tuple[bytes, ...]) -> Message:
            return self._msg(mtype, body=body, frames=frames)

        net = self.cfg.network
        return self.queries.ask(self.sock, build_msg, query, net.solve_timeout_s, transport.limits_for(net))

    def _unreadable(self, frames: list[bytes], exc: ProtocolError) -> None:
        """A message from the coordinator that the wire schema refused. A RELEASE among them is refused as a
        bad release is (a failed ACK, then stop): the party must not go on without a ΔW it was sent."""
        self.result.refusals.append(clean_text(f"unreadable message from coordinator: {exc}", STORED_TEXT))
        seen = peek(frames, transport.limits_for(self.cfg.network))
        if seen is not None and seen[0] in (MsgType.RELEASE, MsgType.NOTICE):
            _, round_, layer = seen
            reason = clean_text(str(exc), STORED_TEXT)
            self._send(self._msg(MsgType.ACK, round_, layer, body={"ok": False, "reason": reason}))
            raise Fatal(f"refused release of round {round_} layer {layer}: {reason}")

    def _hello(self) -> Message:
        """Join / heartbeat; says what this party already holds, so a rejoin re-sends only what it lacks."""
        applied = [[r, lay] for r, lay in sorted(self._held())]
        body = {"role": "party", "public": False, "setup": self.public is not None, "applied": applied}
        return self._msg(MsgType.HELLO, body=body)

    def _on_setup(self, msg: Message) -> None:
        if len(msg.frames) != 3:
            raise Fatal("setup must carry [public params, sealed bundles, solver signature]")
        public, bundles, signature = (bytes(f) for f in msg.frames)
        if self.public is not None:
            if public != self.public:
                raise Fatal("setup: public parameters changed during the session")
            return
        try:
            verify(self.cfg.roster.signing_public(), signature,
                   setup_bytes(self.s.id, self.cfg.digest, public, bundles), "setup")
            assert self.identity.sealing is not None
            self.secrets = self.scheme.join(public, bundles, self.name, self.identity.sealing.private_bytes_raw())
        except (ProtocolError, ProtectionError) as exc:
            raise Fatal(str(exc)) from None
        self.scheme.warm()  # the MAC's compiled kernels, before the first chunk
        if self.noise_plan is not None and self.scheme.frac_bits(public) < self.noise_plan.grid_bits:
            raise Fatal(f"setup: the encoding step 2^-{self.scheme.frac_bits(public)} is coarser than the noise grid "
                        f"2^-{self.noise_plan.grid_bits}: the noise would be rounded, not added as accounted")
        self.public = public
        self._waiting("joined", "(waiting for the first step)", joined=True)
        self.log.info("the solver's signed setup verifies (%s, layers %s)", self.s.mode, list(self.s.layers))

    def _on_request(self, msg: Message) -> None:
        started = time.monotonic()
        layers, attempt = tuple(msg.body["layers"]), msg.body["attempt"]
        if self.public is None:
            raise ProtocolError("request before setup")
        self.log.info("round %d layer%s %s: computing statistics", msg.round, "s" * (len(layers) > 1),
                      ",".join(map(str, layers)))
        if (msg.round, layers) not in self.s.steps():
            raise ProtocolError(f"request for round {msg.round} layers {list(layers)} is not a step")
        if (msg.round, layers, attempt) in self.sent:
            return
        stream = self.stream
        if stream is not None and stream.key == (msg.round, layers, attempt):  # more room in the coordinator's window
            self._send_stream(stream, msg.body.get("upto", len(stream.order)))
            return
        if any((msg.round, lay) in self._held() for lay in layers):
            # a released step (or any layer of it) collected again: a second opening over another party set
            # would give a party's statistics away, so an honest party never contributes twice (beside the solver)
            raise ProtocolError(f"round {msg.round} layers {list(layers)} were already released: not contributing "
                                "to a step twice")
        if self.fact_tags is not None and msg.round != self.s.repair_round and not self.fact_tags.decided(msg.round):
            raise ProtocolError(f"request for round {msg.round} before the solver's signed decision on its tags: "
                                "nothing is sent")
        earlier = self.s.steps()[: self.s.steps().index((msg.round, layers))]
        missing = [(r, lay) for r, ls in earlier for lay in ls if (r, lay) not in self._held()]
        if missing:
            raise ProtocolError(f"request before the releases of {missing} were applied")
        where = f"round {msg.round} layer{'s' * (len(layers) > 1)} {','.join(map(str, layers))}"
        stage_end = time.time() + self.cfg.network.stage_timeout_s
        self.status.update("contributing", f"{where} (attempt {attempt})", deadline=stage_end,
                           means="the coordinator collects this step's statistics until about then")
        for layer in layers:
            key = (msg.round, layer)
            if key not in self.cache:
                # checked as computed, then packed once (upper triangle of G): never unpacked here
                self.cache[key] = pack_statistics(self._checked(layer, self._compute(msg.round, layer, where)),
                                                  self.s.d_k, self.s.d_v)
        self._pad_answer(started)
        order = tuple((lay, st, i) for lay in layers for st in STATISTICS
                      for i in range(len(chunk_bounds(self.cache[(msg.round, lay)][st].size, self.s.chunk_values))))
        self.stream = _Stream((msg.round, layers, attempt), order, where, stage_end)
        self._send_stream(self.stream, msg.body.get("upto", len(order)))

    def _compute(self, round_: int, layer: int, where: str) -> Mapping[str, np.ndarray]:
        """This party's statistics of one layer; a defence setting it cannot meet (a public pool too small for
        decoys:R, ``DefenceError``) stops the party with that one-line reason: the session goes on without it."""
        try:
            return self.compute(round_, layer)
        except DefenceError as exc:
            raise Fatal(f"{where}: {exc}") from None

    def _send_stream(self, stream: _Stream, upto: int) -> None:
        """Protect and send the step's chunks in order up to ``upto`` (the coordinator's window; absent: all), one
        at a time: a party holds its statistics and the chunk in hand, never the whole protected step."""
        round_, layers, attempt = stream.key
        while stream.next < min(upto, len(stream.order)):
            self._send_chunk(round_, attempt, *stream.order[stream.next])
            stream.next += 1
        if stream.next < len(stream.order):
            return
        self.stream = None
        self.sent.add(stream.key)
        self.status.update("waiting for release", stream.where,
                           deadline=stream.stage_end + self.cfg.network.solve_timeout_s,
                           means="the step's collection deadline plus the solve timeout",
                           contributed=len({(r, ls) for r, ls, _ in self.sent}))

    def _pad_answer(self, started: float) -> None:
        """Answer no earlier than ``session.answer_pad_s`` after the request: the time a party takes to answer
        grows with its edit count, and the coordinator sees it (docs/threat-model.md)."""
        pad = self.s.answer_pad_s
        if pad <= 0:
            return
        left = started + pad - time.monotonic()
        if left > 0:
            time.sleep(left)
        elif left < -0.5:
            self.log.warning("its statistics took %.1f s, longer than answer_pad_s=%.1f s: the answer time "
                             "may reveal its edit count", pad - left, pad)

    def _checked(self, layer: int, stats: Mapping[str, Any]) -> Mapping[str, Any]:
        """Refuse to send statistics the solver would refuse (they break the session's declared bounds).

        Checked as computed, before packing: G is the full (d_k, d_k) matrix (its lower triangle, which is not
        sent, may differ from the upper by rounding: the bound check then errs on the strict side, and the
        eigenvalue check's tolerance is far wider). The reason stays here (Fatal): it holds this party's own
        figures, which must not reach the coordinator."""
        s = self.s
        g, b = np.asarray(stats["G"], dtype=np.float64), np.asarray(stats["B"], dtype=np.float64)
        if g.shape != (s.d_k, s.d_k):
            raise ValueError(f"G has shape {g.shape}, want ({s.d_k}, {s.d_k})")
        n = float(stats["N"])
        # max and −min are reductions (np.abs would make a temporary as long as G: 1.6 GB at d_k 14,336); a NaN
        # propagates through both, so each array's figure is NaN where it holds one
        figures = [max(float(np.max(a)), -float(np.min(a))) for a in (g, b)] + [abs(n)]
        peak = max(figures)
        if not all(np.isfinite(figures)):
            raise Fatal(f"layer {layer}: a statistic holds a non-finite entry; this party's statistics are broken")
        if peak > s.value_bound:
            raise Fatal(f"layer {layer}: a statistic entry of {peak:.6g} exceeds session.value_bound="
                        f"{s.value_bound:.6g}; raise value_bound in the session configuration")
        if n > s.counted_edits:  # decoys:R counts (1 + R) edits per request
            raise Fatal(f"{int(n)} edits (decoys included) exceed session.max_edits_per_party={s.max_edits_per_party}"
                        f" × {s.counted_edits // s.max_edits_per_party}")
        noise = self.noise_plan.sigma if self.noise_plan is not None else 0.0  # as sent: clipped, then noised
        problems = plausibility_problems(g, b.reshape(s.d_v, s.d_k), n, 1,
                                         Bounds(s.key_norm_bound, s.residual_norm_bound, s.counted_edits,
                                                noise=noise),
                                         fewest=0)  # nothing to edit this round: zeros are honest
        if problems:
            raise Fatal(f"layer {layer}: this party's statistics break the session's bounds "
                        f"({'; '.join(map(str, problems))});"
                        " raise key_norm_bound / residual_norm_bound in the session configuration")
        return stats

    def _send_chunk(self, round_: int, attempt: int, layer: int, stat: str, i: int) -> None:
        assert self.public is not None and self.secrets is not None, "requests are refused before setup"
        signer = self.identity.signing
        assert signer is not None
        flat = self.cache[(round_, layer)][stat]
        bounds = chunk_bounds(flat.size, self.s.chunk_values)
        off, count = bounds[i]
        ctx = StatContext(self.s.id, round_, layer, stat, self.name, i, attempt)
        payload = self.scheme.protect(flat[off:off + count], ctx, self.public, self.secrets, signer)
        body = chunk_body(attempt, i, bounds, payload.header)
        self.result.bytes_sent += self._send(self._msg(MsgType.CONTRIB, round_, layer, stat, body, payload.frames))

    def _on_release_part(self, msg: Message) -> None:
        """A slice of a release's ciphertext that did not fit one message, in order: gathered (one release at a time,
        at most the largest ciphertext the session allows) until the signed RELEASE names the whole's sha256."""
        key, b = (msg.round, msg.layer), part_of(msg)
        if key in self._held():
            return
        if msg.layer not in self.s.layers or not 0 <= msg.round < self.s.protocol_rounds or len(msg.frames) != 1:
            raise ProtocolError("a release part carries one frame of a configured round and layer")
        inc = self.parts
        if b["part"] == 0:
            inc = self.parts = _Parts(key, b["sha256"], b["parts"])
        elif inc is None or (inc.key, inc.sha256, inc.parts, inc.received) != (key, b["sha256"], b["parts"], b["part"]):
            self.parts = None
            raise ProtocolError(f"release part {b['part']} of round {msg.round} layer {msg.layer} is out of order")
        limit = max_ciphertext_bytes(self.s.d_v, self.s.d_k, self.s.tags, self.s.max_edits_per_party)
        if len(inc.data) + len(msg.frames[0]) > limit:
            self.parts = None
            raise ProtocolError(f"release parts exceed {limit} bytes")
        inc.data += msg.frames[0]
        inc.received += 1

    def _on_release(self, msg: Message) -> None:
        key, b = (msg.round, msg.layer), release_of(msg)
        if key in self._held():
            return  # re-sent after a coordinator restart, or re-solved: already applied
        try:
            if msg.layer not in self.s.layers:
                raise ProtocolError("release must carry [ΔW, signature] for a configured layer")
            inc, assembled = self.parts, None
            if "parts" in b and inc is not None and inc.key == key and inc.received == inc.parts:
                assembled = sha256_hex(inc.data)
            self.parts = None
            ciphertext = check_release(msg, self.cfg.roster.signing_public(), self.s.id, self.cfg.digest,
                                       self.cfg.roster.parties, served=self.s.served, assembled=assembled)
            if assembled is not None and inc is not None:
                ciphertext = bytes(inc.data)  # its sha256 is the signed one
            if self.s.served:  # the solver keeps ΔW: the signed notice says the step is released to its model
                self._on_notice(msg)
                return
            if self.secrets is None:
                raise ProtocolError("release before setup")
            label = release_label(self.s.id, self.cfg.digest, msg.round, msg.layer, b["attempt"])
            try:
                raw = decrypt_release(self.secrets.release_key, label, ciphertext)
            except ProtectionError as exc:
                raise ProtocolError(str(exc)) from None
            delta, missing = split_release(raw, b["dtype"], b["shape"])
            if self.fact_tags is not None and self.name in b["parties"]:
                weakened = self.fact_tags.weakened(msg.round, missing)
            elif self.fact_tags is None and missing:
                raise ProtocolError("release: a holders note in a session without tags")
            else:
                weakened = []
            if delta.shape != (self.s.d_v, self.s.d_k):
                raise ProtocolError(f"release: ΔW shape {delta.shape} != ({self.s.d_v}, {self.s.d_k})")
        except ProtocolError as exc:
            reason = clean_text(str(exc), STORED_TEXT)
            self._send(self._msg(MsgType.ACK, msg.round, msg.layer, body={"ok": False, "reason": reason}))
            raise Fatal(f"refused release of round {msg.round} layer {msg.layer}: {exc}") from None
        self.status.update("applying", f"round {msg.round} layer {msg.layer}")
        self.apply(msg.layer, delta)
        self.result.applied[key] = b["sha256"]
        self.log.info("round %d layer %d: applied the solver-signed ΔW (sha256 %s…) of %s", msg.round, msg.layer,
                      b["sha256"][:16], ", ".join(b["parties"]))
        if self.name not in b["parties"]:
            self.result.left_out.append(key)
        elif weakened:
            for index, k, m in weakened:
                was = self.result.weakened.get((msg.round, index))
                if was is None or k < was[0]:
                    self.result.weakened[(msg.round, index)] = (k, m)
            self.log.warning("round %d layer %d: %s", msg.round, msg.layer, self._weakened_text())
        self._send(self._msg(MsgType.ACK, msg.round, msg.layer, body={"ok": True, "reason": ""}))
        for round_, layers in self.s.steps():
            if all((round_, lay) in self.result.applied for lay in layers):
                for lay in layers:
                    self.cache.pop((round_, lay), None)
        n = len(self.result.applied)
        self._waiting("waiting for the end" if n == self.status.doc["releases"] else "waiting for the next step",
                      f"(applied round {msg.round} layer {msg.layer})", applied=n)

    def _on_notice(self, msg: Message) -> None:
        """A served step's solver-signed notice (checked by the caller): recorded and acknowledged; nothing applied."""
        b = release_of(msg)
        self.result.noticed[(msg.round, msg.layer)] = b["sha256"]
        self.log.info("round %d layer %d: released to the served model (solver-signed notice, sha256 %s… of the ΔW "
                      "ciphertext it keeps) over %s", msg.round, msg.layer, b["sha256"][:16], ", ".join(b["parties"]))
        if self.name not in b["parties"]:
            self.result.left_out.append((msg.round, msg.layer))
        self._send(self._msg(MsgType.ACK, msg.round, msg.layer, body={"ok": True, "reason": ""}))
        for round_, layers in self.s.steps():
            if all((round_, lay) in self.result.noticed for lay in layers):
                for lay in layers:
                    self.cache.pop((round_, lay), None)
        self._waiting("waiting for the next step", f"(round {msg.round} layer {msg.layer} served)",
                      applied=len(self.result.noticed))

    def _waiting(self, stage: str, detail: str, **counts: Any) -> None:
        """A stage in which the party waits for the coordinator: its deadline is the party's own idle limit."""
        self.status.update(stage, detail, deadline=time.time() + self.idle_limit,
                           means="this party gives up if the coordinator stays silent until then", **counts)

    def _weakened_text(self) -> str:
        return "; ".join(f"round {r} request {i} counts {k}/{m} of one copy ({k} of its {m} holders)"
                         for (r, i), (k, m) in sorted(self.result.weakened.items()))

    def _on_error(self, msg: Message) -> None:
        self.result.refusals.append(msg.body["reason"])
        self.log.warning("the coordinator refused a message of ours: %s", str(msg.body["reason"])[:200])

    # ---- the keyed-tag exchange (parties/tags.py) ------------------------------------------------------
    def _tag_desk(self, msg: Message) -> PartyTags:
        if self.fact_tags is None or self.public is None:
            raise ProtocolError(f"{msg.type.value}: no tag exchange in this session, or before setup")
        check_tag_body(msg, self.s.tag_slots, set(self.cfg.roster.parties))
        return self.fact_tags

    def _on_tag_open(self, msg: Message) -> None:
        desk = self._tag_desk(msg)
        self.status.update("tagging", f"round {msg.round}",
                           deadline=time.time() + self.cfg.network.stage_timeout_s,
                           means="the coordinator collects this round's tags until about then")
        try:
            frames = desk.blinded(msg.round, self.public or b"", self.scheme)
        except ValueError as exc:
            raise Fatal(str(exc)) from None
        self._send(self._msg(MsgType.BLINDED, msg.round, body={"party": "", "slots": self.s.tag_slots},
                             frames=frames))

    def _on_evaluated(self, msg: Message) -> None:
        desk = self._tag_desk(msg)
        frames = desk.on_evaluated(msg, self.public or b"", self.scheme)
        self.result.own_tags[msg.round] = list(desk.rounds[msg.round].values)
        self._send(self._msg(MsgType.TAGS, msg.round, body={"party": "", "slots": self.s.tag_slots}, frames=frames))

    def _on_decision(self, msg: Message) -> None:
        desk = self._tag_desk(msg)
        try:
            verdicts = desk.on_decision(msg)
        except ProtocolError as exc:  # a forged or misdirected decision: refused, nothing withdrawn
            self.result.refusals.append(str(exc))
            raise
        if verdicts is not None:
            desk.tagger.decided(msg.round, verdicts)
            self.result.decisions[msg.round] = verdicts

    def _msg(self, mtype: MsgType, round_: int = -1, layer: int = -1, stat: str = "",
             body: Mapping[str, Any] | None = None, frames: tuple[Frame, ...] = ()) -> Message:
        return build(mtype, session=self.s.id, sender=self.name, seq=self.seq.next(), config=self.cfg.digest,
                     round_=round_, layer=layer, stat=stat, body=body, frames=frames)

    def _send(self, msg: Message) -> int:
        try:
            return transport.send(self.sock, msg)
        except zmq.Again:  # the queue to the coordinator stayed full for send_timeout_s
            raise Fatal("coordinator unreachable: send timed out") from None


def run_party(config: Config, name: str, scheme: ProtectionScheme, compute_statistics: ComputeStatistics,
              apply_delta: ApplyDelta, *, stop: threading.Event | None = None,
              ctx: zmq.Context | None = None, tagger: Tagger | None = None,
              served_queries: ServedQueries | None = None) -> PartyResult:
    """Take part in one session until the coordinator ends it (or a release is refused); in a served session until
    every step is released to the served model and ``served_queries``, if given, has asked what it asks."""
    return Party(config, name, scheme, compute_statistics, apply_delta, ctx=ctx, stop=stop, tagger=tagger,
                 served_queries=served_queries).run()
