"""A party's queries to a served release (protocol/query.py): encrypted to the solver, answered through the coordinator.

``QueryChannel`` is the party's end of its channel with the solver: the key both derive from their long-term X25519
keys in the pinned roster (``sealing.channel_key``), a counter that never repeats (kept, write-ahead and locked, in
``<[paths] party_status>/queries-<party>.json``, so the party process and any number of `secure-collab query` runs
share it), and ``ask``: send one QUERY on a socket to the coordinator and wait for its ANSWER. The party's network
loop (``parties.client.Party``) asks on its own connection once every step is released; ``QueryClient`` opens one
of its own (the `query` command), after the party process ended: the coordinator sends each ANSWER to the connection
its QUERY came on (``coordinator/connections.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from secure_collab.config import Config
from secure_collab.files import FILE_MODE, private_dir, write_private
from secure_collab.keys import CurveKeyPair, load_identity
from secure_collab.names import is_name
from secure_collab.protection import ProtectionError, sealing, statements
from secure_collab.protocol import query as wire
from secure_collab.protocol import transport
from secure_collab.protocol.messages import MAX_SEQ, Message, MsgType, ProtocolError, Sequencer, answer_of, build

log = logging.getLogger("party.queries")
Build = Callable[..., Message]  # (type, body=, frames=) -> a message of this party's connection


def counter_path(config: Config, name: str) -> Path:
    if not is_name(name):
        raise ValueError(f"not a party name: {name!r}")
    return config.paths.party_status / f"queries-{name}.json"


class QueryChannel:
    def __init__(self, config: Config, name: str, seal_private: bytes) -> None:
        if not config.session.served:
            raise ProtocolError("this session's release is not served: its model answers no queries")
        self.cfg, self.s, self.name = config, config.session, name
        self.key = sealing.channel_key(seal_private, config.roster.parties[name].sealing, config.roster.solver.sealing,
                                       statements.query_scope(self.s.id, config.digest, name))
        self.path = counter_path(config, name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.path.parent, tighten=False)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def next_counter(self) -> int:
        """The next query counter of this party and session, written down before it is used (never reused)."""
        with self._locked():
            doc: dict[str, Any] = {}
            if self.path.is_file():
                with contextlib.suppress(ValueError, OSError):
                    doc = json.loads(self.path.read_text())
            last = doc.get("counter") if doc.get("session") == [self.s.id, self.cfg.digest] else 0
            counter = (last if isinstance(last, int) and 0 <= last < MAX_SEQ else 0) + 1
            write_private(self.path, json.dumps({"session": [self.s.id, self.cfg.digest], "counter": counter}))
        return counter

    def seal(self, query: dict[str, Any], counter: int) -> bytes:
        label = statements.query_label(self.s.id, self.cfg.digest, self.name, counter, "query")
        return sealing.encrypt_channel(self.key, label, wire.encode_query(query),
                                       sealing.fresh_bytes(sealing.NONCE_BYTES))

    def open(self, msg: Message, counter: int) -> dict[str, Any]:
        """The decoded answer of query ``counter`` in an ANSWER, or a refusal answer when it carries no frame (an
        unauthenticated note: the solver could not take the query, or the coordinator says so)."""
        body = answer_of(msg)
        if not msg.frames:
            return {"ok": False, "kind": "", "cost": 0, "used": body["used"], "budget": self.s.query_budget,
                    "reason": f"refused ({body['refusal'] or 'no reason'}): the solver could not authenticate this "
                              "query, or it was replayed or reordered (an unauthenticated note, relayed by the "
                              "coordinator)"}
        label = statements.query_label(self.s.id, self.cfg.digest, self.name, counter, "answer")
        try:
            return wire.decode_answer(sealing.decrypt_channel(self.key, label, bytes(msg.frames[0])))
        except ProtectionError as exc:
            raise ProtocolError(f"answer to query {counter}: {exc}") from None

    def ask(self, sock: zmq.SyncSocket, build_msg: Build, query: dict[str, Any], timeout_s: float,
            limits: Any, on_other: Callable[[Message], None] | None = None) -> dict[str, Any]:
        """Send one query and wait (at most ``timeout_s``) for its answer; a refusal is an answer with ok false.
        Messages that are not this query's answer go to ``on_other`` (or are dropped)."""
        counter = self.next_counter()
        msg = build_msg(MsgType.QUERY, body={"party": "", "counter": counter}, frames=(self.seal(query, counter),))
        transport.send(sock, msg)
        deadline = time.monotonic() + timeout_s
        forged = ""
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(min(left, 1.0) * 1000), zmq.POLLIN):
                continue
            try:
                got = Message.from_frames(sock.recv_multipart(), limits)
            except ProtocolError as exc:
                log.warning("an unreadable message from the coordinator while waiting for an answer: %s", exc)
                continue
            if got.type is MsgType.ANSWER and got.body.get("counter") == counter and got.body.get("party") == self.name:
                try:
                    return self.open(got, counter)
                except ProtocolError as exc:  # forged or altered on the way: wait on for the genuine one
                    forged = str(exc)
                    log.warning("an answer to query %d does not authenticate (forged or altered by the relay): "
                                "ignored", counter)
                    continue
            if got.type is MsgType.ERROR and got.body.get("refused_seq") == msg.seq:
                return self._refused(f"the coordinator refused the query: {got.body['reason']}")
            if got.type is MsgType.END:
                return self._refused(f"the coordinator ended the session: {got.body['reason']}")
            if on_other is not None:
                on_other(got)
        return self._refused(f"no answer within {timeout_s:g} s" + (f" ({forged})" if forged else ""))

    def _refused(self, reason: str) -> dict[str, Any]:
        return {"ok": False, "kind": "", "cost": 0, "used": None, "budget": self.s.query_budget, "reason": reason}


class QueryClient:
    """A party's own connection for queries (the `secure-collab query` command): ``with QueryClient(cfg, "a") as q:
    q.ask({...})``."""

    def __init__(self, config: Config, name: str, *, ctx: zmq.Context | None = None,
                 keys: CurveKeyPair | None = None) -> None:
        if name not in config.roster.parties:
            raise ValueError(f"party {name!r} is not in the roster")
        ident = load_identity(config.paths.keys / f"party-{name}.key_secret")
        if ident.sealing is None or ident.public != config.roster.parties[name]:
            raise ValueError(f"party-{name}.key_secret does not hold party {name!r}'s identity in the pinned roster")
        self.cfg, self.name = config, name
        self.channel = QueryChannel(config, name, ident.sealing.private_bytes_raw())
        self.keys = keys or ident.curve
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.seq = Sequencer()

    def __enter__(self) -> QueryClient:
        self.sock = transport.dealer(self.ctx, self.keys, self.cfg.roster.coordinator.curve, self.cfg.network)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close(linger=0)
        if self._own_ctx:
            self.ctx.term()

    def _msg(self, mtype: MsgType, body: dict[str, Any] | None = None, frames: tuple[bytes, ...] = ()) -> Message:
        return build(mtype, session=self.cfg.session.id, sender=self.name, seq=self.seq.next(),
                     config=self.cfg.digest, body=body, frames=frames)

    def ask(self, query: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        net = self.cfg.network
        return self.channel.ask(self.sock, self._msg, query, net.solve_timeout_s if timeout_s is None else timeout_s,
                                transport.limits_for(net))
