"""The coordinator's append-only SQLite ledger: sessions, roster, stage events, messages, hand-offs, releases,
the solver's collision decisions by id, and, in a served release, every query by (party, counter, kind, cost,
outcome) as the solver reported it: never what it asked or what it was answered (both travel encrypted).

Rows are only ever inserted (triggers refuse UPDATE and DELETE), each in its own transaction, with the
database in WAL mode so a reader (``secure-collab ledger show``, a test) never blocks the coordinator and
a SIGKILLed coordinator loses at most the row it was writing. ``resume_state`` rebuilds what a restarted
coordinator needs: the solver's signed public parameters, the signed releases, the last attempt per step.
The database (and so its -wal and -shm files) is created 0600, its directory 0700, whatever the umask; free
text is stored through ``clean_text`` (no control characters, ``STORED_TEXT`` characters at most). A release's
payload (one ΔW ciphertext: d_v · d_k · 8 bytes, 470 MB at Llama-3-8B) is not a row: it is one 0600 file,
``<ledger>.releases/<session>/r{R}-l{L}.frames``, read when the release is re-sent.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_collab.files import child_dir, fsync_dir, private_dir, touch_private, write_private
from secure_collab.protocol.messages import STORED_TEXT, clean_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, config_digest TEXT NOT NULL, mode TEXT NOT NULL, created REAL NOT NULL,
    setup_public BLOB NOT NULL, setup_bundles BLOB NOT NULL, setup_signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS roster (
    session_id TEXT NOT NULL, name TEXT NOT NULL, curve_public TEXT NOT NULL, PRIMARY KEY (session_id, name));
CREATE TABLE IF NOT EXISTS stages (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, round INTEGER NOT NULL, layers TEXT NOT NULL,
    attempt INTEGER NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, time REAL NOT NULL, direction TEXT NOT NULL,
    peer TEXT NOT NULL, type TEXT NOT NULL, round INTEGER, layer INTEGER, stat TEXT, chunk INTEGER,
    attempt INTEGER, digest TEXT NOT NULL, bytes INTEGER NOT NULL, outcome TEXT NOT NULL,
    reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS handoffs (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, round INTEGER NOT NULL, layer INTEGER NOT NULL,
    stat TEXT NOT NULL, chunk INTEGER NOT NULL, attempt INTEGER NOT NULL, parties TEXT NOT NULL,
    digest TEXT NOT NULL, bytes INTEGER NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    session_id TEXT NOT NULL, round INTEGER NOT NULL, layer INTEGER NOT NULL, attempt INTEGER NOT NULL,
    sha256 TEXT NOT NULL, parties TEXT NOT NULL, header BLOB NOT NULL, frames BLOB NOT NULL,
    time REAL NOT NULL, PRIMARY KEY (session_id, round, layer));
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, round INTEGER NOT NULL, decision_id TEXT NOT NULL,
    kind TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, party TEXT NOT NULL, counter INTEGER NOT NULL,
    kind TEXT NOT NULL, cost INTEGER NOT NULL, outcome TEXT NOT NULL, refusal TEXT NOT NULL, used INTEGER NOT NULL,
    time REAL NOT NULL);
"""
TABLES = ("sessions", "roster", "stages", "messages", "handoffs", "releases", "decisions", "queries")
APPEND_ONLY = "".join(
    f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op} BEFORE {op} ON {t} "
    f"BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;"
    for t in TABLES
    for op in ("UPDATE", "DELETE")
)


@dataclass(frozen=True)
class StoredRelease:
    """A release (or a served NOTICE) as the solver sent it: its header here, its payload frames (the ΔW ciphertext
    and the signature) in one file on disk, read when it is re-sent, so no ΔW stays in the coordinator's memory."""

    round: int
    layer: int
    attempt: int
    sha256: str
    parties: tuple[str, ...]
    header: bytes
    path: Path | None  # the payload frames' file; None for a row written before releases moved to disk
    inline: tuple[bytes, ...] = ()  # such a row's payload frames
    ciphertext: Path | None = None  # a release that came in parts: its whole ciphertext (the RELEASE's frame is empty)

    def frames(self) -> list[bytes]:
        """The RELEASE message exactly as the solver sent it (header + payload frames)."""
        payload = list(self.inline) if self.path is None else _unpack_frames(self.path.read_bytes())
        return [self.header, *payload]

    def shared_frames(self) -> list[bytes | memoryview]:
        """The same, for sending: the payload frames are read-only views of one map of the file, shared by every
        re-send (zmq holds the view, not a copy), so a party that never reads pins no new copy per welcome."""
        if self.path is None:
            return [self.header, *self.inline]
        return [self.header, *_unpack_frames(mapped(self.path))]


@dataclass(frozen=True)
class ResumeState:
    setup_public: bytes
    setup_bundles: bytes
    setup_signature: bytes
    releases: dict[tuple[int, int], StoredRelease]
    attempts: dict[tuple[int, str], int]  # (round, layers json) -> highest attempt opened
    ended: str | None  # "done" / "aborted" when the session already finished
    cut_off: tuple[str, ...] = ()  # parties cut off for flooding: they stay out after a restart


class Ledger:
    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = Path(path)
        # 0600 before SQLite opens it: SQLite gives the -wal and -shm files the database file's mode
        private_dir(self.path.parent, tighten=False)
        touch_private(self.path)
        self._clock = clock
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA + APPEND_ONLY)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_session(self, session_id: str, digest: str, mode: str, public: bytes, bundles: bytes,
                     signature: bytes, roster: dict[str, bytes]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO sessions VALUES (?,?,?,?,?,?,?)",
                             (session_id, digest, mode, self._clock(), public, bundles, signature))
            self._db.executemany("INSERT INTO roster VALUES (?,?,?)",
                                 [(session_id, n, k.decode()) for n, k in roster.items()])

    def stage_event(self, session_id: str, round_: int, layers: tuple[int, ...], attempt: int,
                    event: str, detail: str = "") -> None:
        row = (session_id, round_, json.dumps(list(layers)), attempt, event, clean_text(detail, 1 << 16),
               self._clock())
        self._db.execute("INSERT INTO stages VALUES (NULL,?,?,?,?,?,?,?)", row)

    def message(self, session_id: str, direction: str, peer: str, mtype: str, digest: str, nbytes: int,
                outcome: str, reason: str = "", *, round_: int | None = None, layer: int | None = None,
                stat: str | None = None, chunk: int | None = None, attempt: int | None = None) -> None:
        self._db.execute(
            "INSERT INTO messages VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (session_id, self._clock(), direction, peer, mtype, round_, layer, stat, chunk, attempt,
             digest, nbytes, outcome, clean_text(reason, STORED_TEXT)))

    def handoff(self, session_id: str, round_: int, layer: int, stat: str, chunk: int, attempt: int,
                parties: tuple[str, ...], digest: str, nbytes: int) -> None:
        self._db.execute("INSERT INTO handoffs VALUES (NULL,?,?,?,?,?,?,?,?,?,?)",
                         (session_id, round_, layer, stat, chunk, attempt, json.dumps(list(parties)),
                          digest, nbytes, self._clock()))

    def release_path(self, session_id: str, round_: int, layer: int, kind: str = "frames") -> Path:
        """``<ledger>.releases/<session>/r{R}-l{L}.{frames|ciphertext}``: the session id a checked name
        (``files.child_dir``), round and layer non-negative integers; nothing else reaches the file system."""
        if any(type(x) is not int or x < 0 for x in (round_, layer)) or kind not in ("frames", "ciphertext"):
            raise ValueError(f"a release file is named by non-negative integers, not {round_!r}, {layer!r}")
        directory = child_dir(self.path.with_name(self.path.name + ".releases"), session_id)
        return directory / f"r{round_}-l{layer}.{kind}"

    def part_sink(self, session_id: str, round_: int, layer: int, sha256: str, parts: int, attempt: int) -> PartSink:
        """Where a release's ciphertext parts go as they arrive (a 0600 temporary file beside its release file)."""
        return PartSink(self.release_path(session_id, round_, layer, "ciphertext"), sha256, parts, attempt)

    def release(self, session_id: str, round_: int, layer: int, attempt: int, sha256: str, parties: tuple[str, ...],
                frames: list[Any], ciphertext: PartSink | None = None) -> StoredRelease:
        """Keep a release: its payload frames written whole to a 0600 file (0700 directory) first, atomically and
        durably (and, when it came in parts, its assembled ciphertext moved into place), then its row (the header;
        the frames column stays empty)."""
        header, *payload = (bytes(f) for f in frames)
        path = self.release_path(session_id, round_, layer)
        kept = ciphertext.keep() if ciphertext is not None else None
        private_dir(path.parent)
        # written piece by piece (no second copy of the ΔW in memory), 0600, atomically and durably
        write_private(path, (piece for frame in payload for piece in (len(frame).to_bytes(8, "big"), frame)))
        self._db.execute("INSERT INTO releases VALUES (?,?,?,?,?,?,?,?,?)",
                         (session_id, round_, layer, attempt, sha256, json.dumps(list(parties)), header, b"",
                          self._clock()))
        return StoredRelease(round_, layer, attempt, sha256, tuple(parties), header, path, (), kept)

    def decision(self, session_id: str, round_: int, decision_id: str, kind: str) -> None:
        """A collision decision of the solver, by its public id (a hash, never a tag or a text)."""
        self._db.execute("INSERT INTO decisions (session_id, round, decision_id, kind, time) VALUES (?,?,?,?,?)",
                         (session_id, round_, decision_id, kind, self._clock()))

    def query(self, session_id: str, party: str, counter: int, kind: str, cost: int, accepted: bool, refusal: str,
              used: int) -> None:
        """One query of a served release as the solver took it (its ANSWER's body): no content, ever."""
        self._db.execute("INSERT INTO queries (session_id, party, counter, kind, cost, outcome, refusal, used, time) "
                         "VALUES (?,?,?,?,?,?,?,?,?)", (session_id, party, counter, kind, cost,
                                                        "accepted" if accepted else "refused", refusal, used,
                                                        self._clock()))

    def resume_state(self, session_id: str) -> ResumeState | None:
        row = self._db.execute("SELECT setup_public, setup_bundles, setup_signature FROM sessions "
                               "WHERE session_id=?", (session_id,)).fetchone()
        if row is None:
            return None
        releases = {}
        for r, lay, att, sha, parties, header, frames in self._db.execute(
                "SELECT round, layer, attempt, sha256, parties, header, frames FROM releases "
                "WHERE session_id=?", (session_id,)):
            on_disk = not frames  # rows written before releases moved to disk hold their frames inline
            whole = self.release_path(session_id, r, lay, "ciphertext")
            releases[(r, lay)] = StoredRelease(r, lay, att, sha, tuple(json.loads(parties)), header,
                                               self.release_path(session_id, r, lay) if on_disk else None,
                                               () if on_disk else tuple(_unpack_frames(frames)),
                                               whole if on_disk and whole.is_file() else None)
        attempts = {(r, layers): att for r, layers, att in self._db.execute(
            "SELECT round, layers, MAX(attempt) FROM stages WHERE session_id=? GROUP BY round, layers",
            (session_id,))}
        ended = self._db.execute(
            "SELECT event FROM stages WHERE session_id=? AND event IN ('done','aborted')", (session_id,)
        ).fetchone()
        cut_off = tuple(sorted(peer for (peer,) in self._db.execute(
            "SELECT DISTINCT peer FROM messages WHERE session_id=? AND outcome='cut off'", (session_id,))))
        return ResumeState(row[0], row[1], row[2], releases, attempts, ended[0] if ended else None, cut_off)

    def rows(self, table: str) -> list[dict[str, Any]]:
        return _select(self._db, table)


def _select(db: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` in insertion order, as {column: value}: the one SELECT every reader goes through."""
    if table not in TABLES:
        raise ValueError(f"no table {table!r}")
    cur = db.execute(f"SELECT * FROM {table} ORDER BY rowid")  # noqa: S608 - fixed allow-list
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


class NotALedger(ValueError):
    """The file exists but is not a secure-collab ledger (or is damaged)."""


def read_ledger(path: Path, tables: tuple[str, ...] = TABLES, *,
                session: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """{table: rows} of the ledger at ``path``, opened read-only (a running coordinator is never blocked: WAL).

    A table the ledger does not hold yet (written before it existed, e.g. ``decisions``) reads as no rows;
    ``session`` keeps only that session's rows. FileNotFoundError when there is no file, NotALedger when the
    file is not a ledger."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ledger {path} not found")
    db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    try:
        present = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        out = {t: _select(db, t) if t in present else [] for t in tables}
    except sqlite3.DatabaseError as exc:
        raise NotALedger(f"{path} is not a secure-collab ledger: {exc}") from None
    finally:
        db.close()
    if session is not None:
        out = {t: [r for r in rows if r["session_id"] == session] for t, rows in out.items()}
    for row in out.get("releases", []):  # a release's payload lives in its files: read as if it were in the row
        if not row["frames"]:
            row["frames"] = _release_frames(path, row)
    return out


def _release_frames(path: Path, row: dict[str, Any]) -> bytes:
    """The packed payload frames of a release row whose payload is on disk (the ciphertext put back in place when the
    release came in parts); empty when its files are gone."""
    directory = child_dir(path.with_name(path.name + ".releases"), row["session_id"])
    stem = f"r{int(row['round'])}-l{int(row['layer'])}"
    frames_file, whole = directory / f"{stem}.frames", directory / f"{stem}.ciphertext"
    if not frames_file.is_file():
        return b""
    frames = _unpack_frames(frames_file.read_bytes())
    if whole.is_file() and frames and not frames[0]:
        frames[0] = whole.read_bytes()
    return _pack_frames(frames)


class PartSink:
    """A release's ciphertext arriving in RELEASE_PARTs: appended to a 0600 temporary file and hashed as it comes, so
    the coordinator never holds it; ``keep`` moves it into place once the signed RELEASE named its sha256."""

    def __init__(self, path: Path, sha256: str, parts: int, attempt: int) -> None:
        private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
        self.file, self.tmp, self.path = os.fdopen(fd, "wb"), Path(tmp), path
        self.hash = hashlib.sha256()
        self.sha256, self.parts, self.attempt, self.received, self.nbytes = sha256, parts, attempt, 0, 0

    def add(self, data: Any) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.received += 1
        self.nbytes += len(data)

    def digest(self) -> str | None:
        """The assembled ciphertext's sha256 once every part is in; None before."""
        return self.hash.hexdigest() if self.received == self.parts else None

    def keep(self) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


_MAPS: dict[tuple[str, int, int, int], memoryview] = {}


def mapped(path: Path) -> memoryview:
    """A stored file (a release's, written once and never changed) as a read-only view of one shared map: every
    caller gets the same memory, paged in from the file by the kernel, never a private copy. Keyed by the file's
    identity, so a file written again under the same name is mapped afresh."""
    st = os.stat(path)
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    view = _MAPS.get(key)
    if view is None:
        if st.st_size == 0:
            view = memoryview(b"")
        else:
            with open(path, "rb") as f:
                view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        for old in [k for k in _MAPS if k[0] == key[0]]:  # the file's earlier version: its views stay valid
            del _MAPS[old]
        _MAPS[key] = view
    return view


def drop_pages(whole: mmap.mmap) -> None:
    """Drop a stored file's map's pages from this process's resident memory (``MADV_DONTNEED``): the map stays valid,
    a later read pages them in again from the file (read-only and never rewritten, so with the same bytes)."""
    whole.madvise(mmap.MADV_DONTNEED)


def read_parts(path: Path, size: int) -> Iterator[memoryview]:
    """A stored ciphertext in slices of ``size`` bytes: views of its one shared map (``mapped``), not copies. The pages
    each slice's reader touched (hashing it for its message's header) are dropped before the next slice is read, so
    going through a release keeps at most one slice resident."""
    whole = mapped(path)
    for start in range(0, len(whole), size):
        yield whole[start:start + size]
        if isinstance(whole.obj, mmap.mmap):
            drop_pages(whole.obj)


def _pack_frames(frames: list[bytes]) -> bytes:
    """Length-prefixed concatenation (8-byte big-endian lengths): no pickle, no guessing."""
    return b"".join(len(f).to_bytes(8, "big") + f for f in frames)


def _unpack_frames(blob: Any) -> list[Any]:
    """Frames of a packed blob: bytes from bytes, views from a view (no copy)."""
    out, pos = [], 0
    while pos < len(blob):
        n = int.from_bytes(blob[pos:pos + 8], "big")
        out.append(blob[pos + 8:pos + 8 + n])
        pos += 8 + n
    if pos != len(blob):
        raise ValueError("corrupt frame blob in ledger")
    return out


def recorded_session(path: Path, session_id: str) -> tuple[str, str | None] | None:
    """(config digest, "done"/"aborted"/None) of ``session_id`` in the ledger at ``path``, read-only; None when
    the ledger or the session is absent. For the start-up check that refuses state of another configuration."""
    if not Path(path).is_file():
        return None
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT config_digest FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        ended = db.execute("SELECT event FROM stages WHERE session_id=? AND event IN ('done','aborted')",
                           (session_id,)).fetchone()
    except sqlite3.DatabaseError:
        return None  # not a ledger of ours (or an empty file): the coordinator's own open reports it
    finally:
        db.close()
    if row is None:
        return None
    return row[0], ended[0] if ended else None
