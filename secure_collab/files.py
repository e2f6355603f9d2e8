"""Private files and directories: created 0600 / 0700 whatever the process umask.

Secrets and state (keys, the ledger, the solver's state, a party's requests and outputs) must not be readable
by other local users even when the user's umask is 022 or 000. ``open`` and ``mkdir`` apply the umask to the
mode they are given, so each helper sets the mode explicitly (``fchmod`` / ``chmod``) after creating.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from secure_collab.errors import ConfigError
from secure_collab.names import NAME_RULE, is_name, shown

FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(path: Path | str) -> None:
    """Make a directory's entries (a rename, a new file) durable: without it a power loss can undo them."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        fsync_dir(directory.parent)
    if tighten:
        os.chmod(path, DIR_MODE)
    return path


def child_dir(parent: Path | str, name: str) -> Path:
    """``parent / name`` resolved, for a ``name`` that came from a file or a peer (a session id): refused unless
    ``name`` is a name (``secure_collab.names``) and the resolved path, links followed, lies directly inside the
    resolved ``parent`` (a second line behind the name check: a link planted at ``parent / name`` is refused).
    Creates nothing."""
    if not is_name(name):
        raise ConfigError(f"{shown(name)} cannot name a directory: use {NAME_RULE}")
    base = Path(parent).resolve()
    path = (base / name).resolve()
    if path.parent != base or path.name != name:
        raise ConfigError(f"{base / name} leads out of {base} (to {path}): remove that link")
    return path


def check_writable(path: Path | str | None, what: str, *, directory: bool = False) -> None:
    """Refuse, in one line (``ConfigError``), an output path this process cannot write, before any work is done
    (a party checks its outputs before it joins a session, not after it). ``directory``: ``path`` is a directory
    to create or fill. The test is a real write (a temporary file in the nearest existing directory), since
    permission bits say nothing to root, and a read-only file system or a file in the way fails it too."""
    if path is None or str(path) == "-":
        return
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: exists and is not a directory")
    if not directory and path.is_dir():
        raise ConfigError(f"{what} {path}: is a directory, not a file")
    probe = path if directory and path.is_dir() else path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {path}: {probe} is not a directory")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".write-check-")
        os.close(fd)
        os.unlink(name)
        if path.exists() and not path.is_dir():
            with open(path, "ab"):
                pass
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot write there ({exc.strerror or exc})") from None


def temp_beside(path: Path | str) -> Path:
    """A temporary name beside ``path`` (same directory, so ``os.replace`` onto ``path`` is atomic) that no other
    writer, process or thread, uses at the same time: two threads of one process storing the same cache entry must
    not share a temporary file (one would move it away under the other)."""
    import secrets
    import threading

    p = Path(path)
    return p.with_name(f"{p.name}.tmp{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}")


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


def _private_temp(path: Path, data: bytes | str | Iterable[bytes], durable: bool = True) -> str:
    """A flushed 0600 temporary file beside ``path`` holding ``data`` (or the pieces of an iterable, written as
    they come: no second copy of a large payload in memory), fsynced where ``durable``; the caller renames or
    links it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview, str)):
                f.write(data.encode() if isinstance(data, str) else data)
            else:
                for piece in data:
                    f.write(piece)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_private(path: Path | str, data: bytes | str | Iterable[bytes], *, durable: bool = True) -> Path:
    """Write a whole 0600 file atomically and durably (a reader sees the old file or the new one, never half
    of it, and after a crash the new one is there once this returns). ``durable=False``: atomic and 0600 but
    not fsynced, for scratch that a restart discards anyway (the solver's spool)."""
    path = Path(path)
    tmp = _private_temp(path, data, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def create_private(path: Path | str, data: bytes | str) -> bool:
    """Create ``path`` with ``data`` only if it does not exist yet, atomically and durably: the test-and-set
    of a record that must be written at most once, even by two processes at the same time. False when the
    file already exists (it is left untouched)."""
    path = Path(path)
    tmp = _private_temp(path, data)
    try:
        os.link(tmp, path)  # fails with FileExistsError when path exists; never a half-written path
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True
