"""What the role commands share: options, the protection scheme, threads, Ctrl-C, start-up key checks."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

THREADS_HELP = "math threads for this process (0: torch's default; set 1 when roles share a machine's cores)"


def add_role_options(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    from secure_collab.cli._output import add_json_option

    parser.add_argument("--config", default="session.toml", help="session configuration (TOML)")
    if model:
        parser.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
        parser.add_argument("--cache-dir", default=None,
                            help="cache of converted models, covariances and templates (default: "
                                 "$SECURE_COLLAB_CACHE or ~/.cache/secure-collab)")
        parser.add_argument("--allow-download", action="store_true",
                            help="let the session's model be downloaded from the hub if it is a hub id")
    add_json_option(parser)


def load_scheme(mode: str) -> Any:
    """The ProtectionScheme for ``mode`` (named explicitly: plain is never a default)."""
    try:
        from secure_collab.protection import get_scheme
    except ImportError as exc:
        raise RuntimeError(f"the protection layer is not available: {exc}") from None
    return get_scheme(mode)


def set_threads(n: int | None) -> None:
    """Cap this process's math threads: roles sharing a machine's cores slow each other down otherwise."""
    if not n:
        return
    import os

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)


def require_secret(path: Path, what: str, expected: Any = None) -> None:
    """Fail at start, in one line, when this site's secret key file is missing, readable by others, or not the
    identity ``expected`` (the roster's public halves for this role)."""
    from secure_collab.errors import ConfigError
    from secure_collab.keys import load_identity

    if not path.is_file():
        raise ConfigError(f"{what}'s secret key {path} is missing ([paths] keys); make it on this site with "
                          "`secure-collab keys new`")
    identity = load_identity(path)  # permissions and format
    if expected is not None and identity.public != expected:
        raise ConfigError(f"{path} is not the key the roster holds for {what} (fingerprint "
                          f"{identity.public.fingerprint()[:16]}…, roster {expected.fingerprint()[:16]}…)")


def rejoin_hint(role: str) -> str:
    """What a stopping party or solver tells its operator: the session goes on, the same command rejoins it."""
    import shlex
    import sys

    return (f"{role}: stopping… the session goes on without it until the stage's deadline; to rejoin, run the "
            f"same command again: secure-collab {shlex.join(sys.argv[1:])}")


@contextlib.contextmanager
def stop_on_signals(say: str = "") -> Iterator[threading.Event]:
    """An Event set by Ctrl-C / SIGTERM while the role runs, so it ends cleanly (the coordinator then tells
    every peer why); ``say`` is written to stderr at once, so the operator knows the key was heard. Outside
    the main thread (tests) signals are left alone."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: stop waiting for a clean end
            raise KeyboardInterrupt
        stop.set()
        if say:  # os.write, not logging or print: a signal handler must not take their locks
            os.write(2, f"{say}\n".encode())

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
