"""Private files and directories: created 0600 / 0700 whatever the process umask.

Secrets and state (keys, the ledger, the solver's state, a party's requests and outputs) must not be readable
by other local users even when the user's umask is 022 or 000. ``open`` and ``mkdir`` apply the umask to the
mode they are given, so each helper sets the mode explicitly (``fchmod`` / ``chmod``) after creating.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path | str, *, tighten: bool = True) -> Path:
    """Create ``path`` (and any missing parents) as 0700 directories. An existing ``path`` is tightened to
    0700 too when ``tighten`` (a directory that is ours alone); existing parents are left as they are."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:  # created meanwhile by another process: ours to tighten all the same
            pass
        os.chmod(directory, DIR_MODE)
    if tighten:
        os.chmod(path, DIR_MODE)
    return path


def touch_private(path: Path | str) -> Path:
    """Create an empty 0600 file if none exists; an existing file is tightened to 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return Path(path)


def open_private(path: Path | str, mode: str = "wb") -> IO[Any]:
    """``open(path, mode)`` for writing ("w", "wb", "a", "ab"), the file created or tightened to 0600."""
    if mode not in ("w", "wb", "a", "ab"):
        raise ValueError(f"open_private writes only, not mode {mode!r}")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path | str, data: bytes | str) -> Path:
    """Write a whole 0600 file atomically (a reader sees the old file or the new one, never half of it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
