"""The solver's session state on disk, sealed: what lets a restarted solver rejoin without opening twice.

One record per file under ``<solver_state>/<session>/``, each ChaCha20-Poly1305-sealed under a key derived
from the solver's long-term X25519 secret and bound to (session, configuration digest) and to the record's
name, so a file copied without the key file reveals nothing and cannot be swapped for another record.
The directory is 0700 and every file 0600 whatever the umask; a record is written to a temporary file,
flushed to disk and renamed, so a crash leaves the old record or the new one, never half of one.

Records: ``setup`` (public parameters, bundles, signature and the session secrets), ``opened-r{R}-l{L}``
(written *before* an aggregate is opened: that step is never opened again), ``release-r{R}-l{L}`` (the
signed, encrypted release) and ``failed-r{R}-l{L}`` (opened, then refused: no release, ever).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from secure_collab.files import private_dir  # missing parents are made 0700 too
from secure_collab.protection import _primitives as hazmat
from secure_collab.protection.sealing import open_state, seal_state, state_key

_RECORD = re.compile(r"^[a-z]+(-r\d+-l\d+)?$")


def write_private_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 via a flushed temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SolverState:
    def __init__(self, directory: Path, long_term_secret: bytes, session: str, config_digest: str) -> None:
        self.dir = private_dir(directory)
        self._key = state_key(long_term_secret, json.dumps([session, config_digest]).encode())

    def _path(self, record: str) -> Path:
        if not _RECORD.match(record):
            raise ValueError(f"bad state record name {record!r}")
        return self.dir / f"{record}.sealed"

    def save(self, record: str, meta: dict[str, Any], blob: bytes = b"") -> None:
        text = json.dumps(meta, sort_keys=True).encode()
        data = struct.pack(">I", len(text)) + text + blob
        write_private_atomic(self._path(record), seal_state(self._key, record.encode(), data,
                                                            hazmat.random_bytes(hazmat.NONCE_BYTES)))

    def load(self, record: str) -> tuple[dict[str, Any], bytes] | None:
        path = self._path(record)
        if not path.is_file():
            return None
        data = open_state(self._key, record.encode(), path.read_bytes())
        (size,) = struct.unpack(">I", data[:4])
        return json.loads(data[4:4 + size]), data[4 + size:]

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
