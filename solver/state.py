"""The solver's session state on disk, sealed: what lets a restarted solver rejoin without opening twice.

One record per file under ``<solver_state>/<session>/``, each ChaCha20-Poly1305-sealed under a key derived
from the solver's long-term X25519 secret and bound to (session, configuration digest) and to the record's
name, so a file copied without the key file reveals nothing and cannot be swapped for another record.
The directory is 0700 and every file 0600 whatever the umask; a record is written to a temporary file,
flushed to disk and renamed (the directory flushed too), so a crash leaves the old record or the new one,
never half of one. One solver process at a time holds the directory (an exclusive ``flock`` on its lock
file), and an ``opened`` record is *created exclusively* (a hard link that fails when the name exists): the
test-and-set that keeps a step opened once even where the lock is not honoured (some network filesystems).

Records: ``setup`` (public parameters, bundles, signature, the session secrets and the OPRF tag key),
``opened-r{R}-l{L}`` (written *before* an aggregate is opened: that step is never opened again),
``release-r{R}-l{L}`` (the signed, encrypted release), ``failed-r{R}-l{L}`` (opened, then refused: no release,
ever), ``past-r{R}-l{L}`` (Σ of the ΣG of rounds 0..R of layer L, for update rules that read earlier rounds;
written before round R's release of L, replacing ``past-r{R-1}-l{L}``), ``tags-r{R}`` (the round's OPRF
evaluations, tags and decisions) and ``facts`` (the facts kept in earlier rounds, by tag); and, while a step is
collected, ``spool-r{R}-a{A}-l{L}-{g|b|n}{C}``: one authenticated, unopened aggregate chunk (its payload header
and frames), dropped once the step is opened or replaced, and at start.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from secure_collab.errors import UserError
from secure_collab.files import FILE_MODE, create_private, private_dir, write_private
from secure_collab.protection.sealing import NONCE_BYTES, fresh_bytes, open_state, seal_state, state_key

# matched whole, ASCII digits: "opened-r0-l1\n" is no record; a spooled chunk adds its attempt and "-<g|b|n><chunk>"
_RECORD = re.compile(r"[a-z]+(-r[0-9]+)?(-a[0-9]+)?(-l[0-9]+)?(-[gbn][0-9]+)?")


class StateLocked(UserError, RuntimeError):
    """Another solver process holds this state directory (a user mistake: the CLI says so in one line)."""


class SolverState:
    def __init__(self, directory: Path, long_term_secret: bytes, session: str, config_digest: str) -> None:
        self.dir = private_dir(directory)  # missing parents are made 0700 too
        self._lock = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        try:
            os.fchmod(self._lock, FILE_MODE)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise StateLocked(f"another solver process is running on {self.dir} (one solver per session); "
                              "stop it first") from None
        except BaseException:
            os.close(self._lock)
            raise
        self._key = state_key(long_term_secret, json.dumps([session, config_digest]).encode())

    def close(self) -> None:
        """Let another solver process take the directory (a restart); closing twice is harmless."""
        if self._lock >= 0:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = -1

    def _path(self, record: str) -> Path:
        if not isinstance(record, str) or not _RECORD.fullmatch(record):
            raise ValueError(f"bad state record name {record!r}")
        return self.dir / f"{record}.sealed"

    def _sealed(self, record: str, meta: dict[str, Any], blob: bytes) -> bytes:
        text = json.dumps(meta, sort_keys=True).encode()
        data = struct.pack(">I", len(text)) + text + blob
        return seal_state(self._key, record.encode(), data, fresh_bytes(NONCE_BYTES))

    def save(self, record: str, meta: dict[str, Any], blob: bytes = b"", *, durable: bool = True) -> None:
        """A sealed record, written atomically (0600); ``durable=False`` skips the fsyncs, for spooled chunks, which
        a restarted solver drops unread (``drop_spool``): durability buys nothing there, and the two fsyncs cost
        ~7.5 ms per 2 MB chunk on the 2-core test machine (618 chunks per step at d_k 14,336)."""
        write_private(self._path(record), self._sealed(record, meta, blob), durable=durable)

    def claim_opening(self, round_: int, layer: int, meta: dict[str, Any]) -> bool:
        """Record, durably and before anything is opened, that (round, layer) is being opened; False when it
        was opened already (by this process, an earlier one or one running beside it): then it must not be."""
        step = f"-r{round_}-l{layer}"
        if any(self._path(kind + step).exists() for kind in ("release", "failed")):
            return False  # opened before, even if its opened record went missing
        return create_private(self._path("opened" + step), self._sealed("opened" + step, meta, b""))

    def load(self, record: str) -> tuple[dict[str, Any], bytes] | None:
        path = self._path(record)
        if not path.is_file():
            return None
        data = open_state(self._key, record.encode(), path.read_bytes())
        (size,) = struct.unpack(">I", data[:4])
        return json.loads(data[4:4 + size]), data[4 + size:]

    def drop(self, record: str) -> None:
        """Remove a record that a newer one replaces (missing is fine)."""
        self._path(record).unlink(missing_ok=True)

    def drop_spool(self) -> int:
        """Remove every spooled chunk (a step opened or replaced, or a solver restarted); returns how many."""
        paths = list(self.dir.glob("spool-*.sealed"))
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    def steps(self, kind: str) -> dict[tuple[int, int], dict[str, Any]]:
        """Every ``<kind>-r{R}-l{L}`` record's meta, by (round, layer)."""
        out = {}
        for path in sorted(self.dir.glob(f"{kind}-r*-l*.sealed")):
            record = path.name.removesuffix(".sealed")
            r, lay = record.removeprefix(f"{kind}-r").split("-l")
            loaded = self.load(record)
            if loaded is not None:
                out[(int(r), int(lay))] = loaded[0]
        return out


def released_steps(directory: Path) -> int:
    """How many (round, layer) releases a solver state directory holds, from the record names alone (no key needed:
    the demo shows progress with it)."""
    return len(list(directory.glob("release-r*-l*.sealed")))
