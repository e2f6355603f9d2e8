"""A deterministic wire fuzzer for the coordinator: random and mutated multipart messages, sent over real
CurveZMQ sockets from a roster key, from a key not in the roster, and as raw TCP bytes.

Mutations start from valid messages of every type and change one thing each: an integer set to an extreme
(0, ±1, 2**31, 2**53, 2**63 ± 1, 2**64 − 1, −2**63), a value of the wrong type, a huge string or list, a
truncated header, dropped or extra frames, a wrong digest, bogus msgpack, keys added or removed, another
session, configuration or sender, a replayed sequence number. ``random.Random(seed)`` makes a run
repeatable (this is test input, not a secret).
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq

from secure_collab.config import Config
from secure_collab.protection import Payload, StatContext, get_scheme
from secure_collab.protocol.messages import Message, sha256_hex

LINGER_MS = 10_000  # a fuzz connection closed after its batch still sends what it queued, for up to this long
EXTREMES = [0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**53, 2**53 - 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**31),
            -(2**63)]
WRONG = [None, True, 1.5, float("nan"), float("inf"), "", "x", b"\x00\xff", [], [1, [2, [3]]], {}, {"a": {"b": 1}},
         -7]


@dataclass
class Stats:
    messages: int = 0
    frames: int = 0
    nbytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Mutator:
    """Builds fuzzed frame lists from valid messages of a session (as party ``name``)."""

    def __init__(self, cfg: Config, name: str, seed: int, max_len: int,
                 pool: dict[tuple[int, str, int, int], Payload] | None = None, attempt: int = 0) -> None:
        self.cfg, self.s, self.name, self.rng, self.max_len = cfg, cfg.session, name, random.Random(seed), max_len
        # (layer, stat, chunk, attempt) -> a real, signed payload of this party (``payload_pool``): a mutation
        # that happens to stay valid adds what the party would have added anyway, so the session's result can
        # still be checked exactly. The pool lacks one chunk, so the fuzz alone never completes the party.
        self.pool = pool or {}
        self.attempt = attempt
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ---- valid seeds -------------------------------------------------------------------------------------
    def valid(self) -> tuple[dict[str, Any], list[bytes]]:
        """A valid message (header dict, payload frames) of a random type, numbered in order."""
        s, rng = self.s, self.rng
        layer = rng.choice(sorted({key[0] for key in self.pool}) or list(s.layers))
        stat = rng.choice(["G", "B", "N"])
        n = s.n_values(stat)
        chunk = rng.randrange(s.n_chunks(stat))
        count = min(s.chunk_values, n - chunk * s.chunk_values)
        attempt = rng.choice([self.attempt, self.attempt, self.attempt + 1])
        kind = rng.choice(["contrib", "contrib", "hello", "ack", "error", "release", "setup", "request", "end",
                           "aggregate"])
        frames: list[bytes] = []
        body: dict[str, Any]
        if kind in ("contrib", "aggregate"):
            real = self.pool.get((layer, stat, chunk, attempt))
            if real is not None:
                payload, frames = dict(real.header), [bytes(f) for f in real.frames]
            else:  # a well-formed header over junk frames: refused by the accumulator, or earlier
                payload = {"v": 2, "mode": s.mode, "kind": "party", "session": s.id, "round": 0, "layer": layer,
                           "statistic": stat, "chunk_index": chunk, "attempt": attempt, "party": self.name,
                           "n_values": count, "tag_values": 4, "chunk": count, "public": "0" * 64}
                frames = [rng.randbytes(8 * count), rng.randbytes(80), rng.randbytes(64)]
            body = {"attempt": attempt, "chunk": chunk, "n_chunks": s.n_chunks(stat),
                    "offset": chunk * s.chunk_values, "count": count, "payload": payload}
            if kind == "aggregate":
                body.update(parties=["a", "b"], n_values=n)
        elif kind == "hello":
            body = {"role": "party", "public": False, "setup": rng.random() < 0.5,
                    "applied": [[0, lay] for lay in s.layers if rng.random() < 0.5]}
        elif kind == "ack":
            body = {"ok": rng.random() < 0.5, "reason": rng.choice(["", "refused: bad"])}
        elif kind == "error":
            body = {"refused_seq": rng.randrange(100), "reason": "could not use it"}
        elif kind == "release":
            frames = [np.zeros(s.d_v * s.d_k).tobytes(), b"s" * 64]
            body = {"attempt": 0, "shape": [s.d_v, s.d_k], "dtype": "<f8", "sha256": sha256_hex(frames[0]),
                    "parties": ["a", "b"]}
        elif kind == "setup":
            body = {"mode": s.mode, "layers": list(s.layers), "rounds": s.rounds, "variant": s.variant}
        elif kind == "request":
            body = {"layers": [layer], "attempt": 0}
        else:
            body = {"ok": True, "reason": "done"}
        header = {"v": 1, "type": kind, "session": s.id, "round": 0, "layer": layer if kind != "hello" else -1,
                  "stat": stat if kind in ("contrib", "aggregate") else "", "sender": self.name,
                  "seq": self.next_seq(), "config": self.cfg.digest,
                  "digests": [sha256_hex(f) for f in frames], "body": body}
        return header, frames

    # ---- mutations -----------------------------------------------------------------------------------------
    def frames(self) -> tuple[str, list[bytes]]:
        """(mutation name, frames). About one message in eight is sent unchanged (valid)."""
        header, payload = self.valid()
        kind = self.rng.choice(MUTATIONS)
        if kind == "valid":
            return kind, [msgpack.packb(header, use_bin_type=True), *payload]
        return kind, getattr(self, f"_m_{kind}")(header, payload)

    def _pack(self, header: Any, payload: list[bytes]) -> list[bytes]:
        return [msgpack.packb(header, use_bin_type=True), *payload]

    def _paths(self, value: Any, path: tuple = ()) -> Iterator[tuple]:
        yield path
        if isinstance(value, dict):
            for k, v in value.items():
                yield from self._paths(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value[:4]):
                yield from self._paths(v, (*path, i))

    def _set(self, header: Any, test: Any, new: Any) -> Any:
        paths = [p for p in self._paths(header) if p and test(_get(header, p))]
        if not paths:
            return header
        return _put(header, self.rng.choice(paths), new)

    def _m_int_extreme(self, header: dict, payload: list[bytes]) -> list[bytes]:
        return self._pack(self._set(header, lambda v: type(v) is int, self.rng.choice(EXTREMES)), payload)

    def _m_wrong_type(self, header: dict, payload: list[bytes]) -> list[bytes]:
        return self._pack(self._set(header, lambda v: True, self.rng.choice(WRONG)), payload)

    def _m_huge_string(self, header: dict, payload: list[bytes]) -> list[bytes]:
        big = self.rng.choice(["x", "é", "\x1b[2J", "\u202e", "\n"]) * self.rng.randrange(1, self.max_len // 4)
        return self._pack(self._set(header, lambda v: type(v) is str, big), payload)

    def _m_huge_list(self, header: dict, payload: list[bytes]) -> list[bytes]:
        return self._pack(self._set(header, lambda v: type(v) is list, [0] * self.rng.randrange(1, 20000)), payload)

    def _m_truncate(self, header: dict, payload: list[bytes]) -> list[bytes]:
        raw = msgpack.packb(header, use_bin_type=True)
        frames = [raw[: self.rng.randrange(len(raw))], *payload]
        if payload and self.rng.random() < 0.5:
            frames = [raw, *payload[:-1]]
        return frames

    def _m_extra_frames(self, header: dict, payload: list[bytes]) -> list[bytes]:
        extra = [self.rng.randbytes(self.rng.randrange(0, 64)) for _ in range(self.rng.randrange(1, 40))]
        return [msgpack.packb(header, use_bin_type=True), *payload, *extra]

    def _m_bad_digest(self, header: dict, payload: list[bytes]) -> list[bytes]:
        h = dict(header)
        h["digests"] = [d[:-1] + ("0" if d[-1] != "0" else "1") for d in h["digests"]] or ["0" * 64]
        return self._pack(h, payload)

    def _m_bogus(self, header: dict, payload: list[bytes]) -> list[bytes]:
        choice = self.rng.randrange(5)
        if choice == 0:
            return [self.rng.randbytes(self.rng.randrange(0, 300))]
        if choice == 1:  # an extension type, refused by the decoder
            return [msgpack.packb({"v": msgpack.ExtType(1, b"x")})]
        if choice == 2:  # deep nesting
            deep: Any = 1
            for _ in range(self.rng.randrange(10, 200)):
                deep = [deep]
            return [msgpack.packb({**header, "body": deep})]
        if choice == 3:  # a header that is not a map
            return [msgpack.packb([header])]
        return [b""]  # an empty header frame

    def _m_keys(self, header: dict, payload: list[bytes]) -> list[bytes]:
        h = dict(header)
        target = h if self.rng.random() < 0.5 else dict(h["body"])
        if target and self.rng.random() < 0.5:
            target.pop(self.rng.choice(list(target)))
        else:
            target[self.rng.choice(["extra", "", "x" * 100, "body"])] = self.rng.choice(WRONG)
        if target is not h:
            h["body"] = target
        return self._pack(h, payload)

    def _m_identity(self, header: dict, payload: list[bytes]) -> list[bytes]:
        field_, value = self.rng.choice([("session", "other"), ("config", "ab" * 32), ("sender", "a"),
                                         ("sender", "solver"), ("v", 2), ("type", "nope")])
        return self._pack({**header, field_: value}, payload)

    def _m_replay(self, header: dict, payload: list[bytes]) -> list[bytes]:
        return self._pack({**header, "seq": max(1, self.seq - self.rng.randrange(1, 50))}, payload)

    def _m_payload_bytes(self, header: dict, payload: list[bytes]) -> list[bytes]:
        """Payload frames changed but their digests made to match: passes the transport, tests the sum."""
        frames = [self.rng.choice([b"", f[:-8], f + f, f[: len(f) // 2], np.full(len(f) // 8, np.nan).tobytes()])
                  for f in payload]
        return self._pack({**header, "digests": [sha256_hex(f) for f in frames]}, frames)


MUTATIONS = ["valid", "int_extreme", "int_extreme", "wrong_type", "huge_string", "huge_list", "truncate",
             "extra_frames", "bad_digest", "bogus", "keys", "identity", "replay", "payload_bytes"]


def _get(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


def _put(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    if isinstance(value, list):
        return [_put(v, tuple(rest), new) if i == head else v for i, v in enumerate(value)]
    return {**value, head: _put(value[head], tuple(rest), new)}


# ---- senders ---------------------------------------------------------------------------------------------------
def payload_pool(client: Any, request: Message, truth: dict[tuple[int, str], np.ndarray] | None = None
                 ) -> dict[tuple[int, str, int, int], Payload]:
    """Real, signed payloads of a joined RawClient for every chunk of the requested step (this attempt and
    the next) but the last chunk of B, with the party's real values (``truth``: (layer, stat) -> flat
    statistic) or values within every bound."""
    s, attempt = client.cfg.session, request.body["attempt"]
    pool = {}
    for layer in request.body["layers"]:
        for stat in ("G", "B", "N"):
            for chunk in range(s.n_chunks(stat) - (stat == "B")):
                off = chunk * s.chunk_values
                count = min(s.chunk_values, s.n_values(stat) - off)
                real = (truth or {}).get((layer, stat))
                values = real[off:off + count] if real is not None else np.ones(count)
                for att in (attempt, attempt + 1):
                    ctx = StatContext(s.id, request.round, layer, stat, client.name, chunk, att)
                    pool[(layer, stat, chunk, att)] = client.protect(values, ctx)
    return pool


def fuzz_roster_key(cfg: Config, name: str, seed: int, count: int, deadline: float,
                    reconnect_every: int = 500, pool: dict | None = None, attempt: int = 0) -> Stats:
    """``count`` fuzzed messages from party ``name``'s key (until ``deadline``, time.monotonic()); a fresh
    connection every ``reconnect_every`` messages, so a huge accepted sequence number does not make the rest
    replays. Replies are drained and ignored."""
    from network_doubles import RawClient

    stats = Stats()
    mutator = Mutator(cfg, name, seed, cfg.network.max_message_bytes, pool, attempt)
    ctx = zmq.Context()
    client = None
    stalled = 0.0
    try:
        while stats.messages < count and time.monotonic() < deadline:
            if stats.messages % reconnect_every == 0:
                if client is not None:  # what it still queues reaches the coordinator (the context sends it on):
                    client.close(linger_ms=LINGER_MS)  # dropping it would make the count that arrives depend on load
                client = RawClient(cfg, name, ctx)
                mutator.seq = 0
            kind, frames = mutator.frames()
            try:
                client.sock.send_multipart(frames, flags=zmq.DONTWAIT)
            except zmq.Again:  # the coordinator is behind: let it catch up (or it is gone: stop)
                stalled = stalled or time.monotonic()
                if time.monotonic() - stalled > 10.0:
                    break
                time.sleep(0.01)
                continue
            stalled = 0.0
            stats.messages += 1
            stats.frames += len(frames)
            stats.nbytes += sum(len(f) for f in frames)
            stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
            while client.sock.poll(0):
                client.sock.recv_multipart()
    finally:
        if client is not None:
            client.close(linger_ms=LINGER_MS)
        ctx.term()  # waits until every connection's queue is sent (at most LINGER_MS each)
    return stats


def fuzz_unknown_key(cfg: Config, seed: int, count: int, per_connection: int = 200) -> Stats:
    """Fuzzed messages from a CURVE key that is not in the roster: every handshake is refused (ZAP), so none
    may reach the coordinator's loop. Each batch of ``per_connection`` uses a new socket (a new handshake)."""
    from secure_collab.keys import CurveKeyPair
    from secure_collab.protocol import transport

    stats = Stats()
    mutator = Mutator(cfg, "a", seed, cfg.network.max_message_bytes)  # claims to be party a
    ctx = zmq.Context()
    try:
        while stats.messages < count:
            public, secret = zmq.curve_keypair()
            sock = transport.dealer(ctx, CurveKeyPair(public, secret), cfg.roster.coordinator.curve, cfg.network)
            try:
                for _ in range(per_connection):
                    _, frames = mutator.frames()
                    try:
                        sock.send_multipart(frames, flags=zmq.DONTWAIT)
                    except zmq.Again:
                        break
                    stats.messages += 1
                    stats.frames += len(frames)
                    stats.nbytes += sum(len(f) for f in frames)
                time.sleep(0.05)  # let the handshake be tried (and refused)
            finally:
                sock.close(linger=0)
    finally:
        ctx.term()
    return stats


def fuzz_raw_tcp(endpoint: str, seed: int, connections: int) -> Stats:
    """Connections that send random bytes or a ZMTP greeting followed by junk (no CURVE handshake)."""
    rng = random.Random(seed)
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    greeting = b"\xff" + b"\0" * 8 + b"\x7f\x03\x00" + b"CURVE".ljust(20, b"\0") + b"\x00" + b"\0" * 31
    stats = Stats()
    for _ in range(connections):
        junk = rng.choice([rng.randbytes(rng.randrange(1, 4096)), greeting + rng.randbytes(rng.randrange(0, 512)),
                           greeting[: rng.randrange(1, len(greeting))]])
        try:
            with socket.create_connection((host, int(port)), timeout=2) as conn:
                conn.sendall(junk)
                conn.settimeout(0.05)
                try:
                    conn.recv(4096)
                except OSError:
                    pass
        except OSError:
            continue
        stats.messages += 1
        stats.nbytes += len(junk)
    return stats


# ---- a whole session under fuzz -------------------------------------------------------------------------------
@dataclass
class FuzzReport:
    roster_key: Stats
    unknown_key: Stats
    raw_tcp: Stats
    outcome: Any
    solver: Any
    parties: dict[str, Any]
    fuzz_seconds: float
    seconds: float


def fuzz_session(cfg: Config, *, count: int, unknown: int, tcp: int, seed: int, time_limit: float,
                 coordinator: Any = None, on_fuzz: Any = None) -> FuzzReport:
    """A session of honest parties a and b, and c, which joins, fuzzes the coordinator with ``count``
    messages from its roster key while the first step waits for it (and ``unknown`` messages come from a key
    not in the roster, ``tcp`` raw TCP connections), then takes part honestly (a real Party on a new
    connection). ``coordinator`` replaces the in-thread coordinator (a callable returning its outcome);
    ``on_fuzz(phase)`` is called with "start" and "end" around the fuzzing."""
    from network_doubles import RawClient, SyntheticEngine, Threads, closed_form_solve

    from coordinator.server import run_coordinator
    from parties import run_party
    from secure_collab.protocol.statistics import pack_statistics
    from solver.server import run_solver

    scheme, th, started = get_scheme(cfg.session.mode), Threads(), time.monotonic()
    engines = {n: SyntheticEngine(n, cfg) for n in ("a", "b", "c")}
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve))
    th.start("coordinator", coordinator or (lambda: run_coordinator(cfg, scheme)))
    for n in ("a", "b"):
        th.start(n, lambda n=n: run_party(cfg, n, scheme, engines[n].compute_statistics, engines[n].apply_delta))
    timing: dict[str, float] = {}

    def fuzzer() -> tuple[Stats, Stats, Stats, Any]:
        ctx = zmq.Context()
        client = RawClient(cfg, "c", ctx)
        try:
            request = client.join()
            truth = {}
            for layer in request.body["layers"]:
                packed = pack_statistics(SyntheticEngine("c", cfg).compute_statistics(0, layer), cfg.session.d_k,
                                         cfg.session.d_v)
                truth.update({(layer, stat): packed[stat] for stat in packed})
            pool = payload_pool(client, request, truth)
        finally:
            client.close()
            ctx.term()
        if on_fuzz:
            on_fuzz("start")
        t0 = time.monotonic()
        side = Threads()
        side.start("unknown", lambda: fuzz_unknown_key(cfg, seed + 1, unknown))
        side.start("tcp", lambda: fuzz_raw_tcp(cfg.network.coordinator_endpoint, seed + 2, tcp))
        roster = fuzz_roster_key(cfg, "c", seed, count, started + time_limit, pool=pool,
                                 attempt=request.body["attempt"])
        side.join(time_limit)
        timing["fuzz"] = time.monotonic() - t0
        if on_fuzz:
            on_fuzz("end")
        c = engines["c"]  # now c takes part: its chunks that the fuzz got accepted were its real ones
        return roster, side.results["unknown"], side.results["tcp"], run_party(
            cfg, "c", scheme, c.compute_statistics, c.apply_delta)

    th.start("c", fuzzer)
    th.join(time_limit + 120)
    roster, unknown_stats, tcp_stats, party_c = th.results["c"]
    return FuzzReport(roster, unknown_stats, tcp_stats, th.results["coordinator"], th.results["solver"],
                      {"a": th.results["a"], "b": th.results["b"], "c": party_c}, timing["fuzz"],
                      time.monotonic() - started)
