"""One logging and progress path: rich bars and log records on a terminal, plain log lines otherwise.

The CLI calls ``configure_logging`` once; library code only logs (``logging.getLogger(__name__)``) and wraps
long loops in ``progress(...)``, which draws a transient bar when stderr is a terminal and otherwise writes
an INFO line every ``every_s`` seconds (and one at the end), so a log file shows where a run stands.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")
OUR_LOGGERS = ("secure_collab", "coordinator", "solver", "party", "parties", "attacks")
log = logging.getLogger(__name__)


@cache
def console() -> Any:
    """The rich Console on stderr that the log handler and the bars share (so bars never garble log lines)."""
    from rich.console import Console

    return Console(stderr=True)


def configure_logging(verbosity: int = 0) -> None:
    """Route our loggers to stderr: ``verbosity`` < 0 warnings only, 0 info, 1 debug, 2 debug for libraries too."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_secure_collab", False)]:
        root.removeHandler(h)
    handler: logging.Handler
    if console().is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console(), show_path=False, markup=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    setattr(handler, "_secure_collab", True)  # noqa: B010 - marks ours, to replace on the next call
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)  # libraries: warnings unless -vv
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (pytest swaps it between tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _bars_wanted() -> bool:
    return bool(console().is_terminal) and logging.getLogger("secure_collab").isEnabledFor(logging.INFO)


@contextmanager
def progress(description: str, total: int | None = None, unit: str = "", *, enabled: bool = True,
             logger: logging.Logger | None = None, every_s: float = 10.0) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n=1)``: a transient bar on a terminal, INFO lines otherwise (nothing if not enabled)."""
    def nothing(n: int = 1) -> None:
        return None

    if not enabled:
        yield nothing
        return
    logger = logger or log
    if _bars_wanted():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                      TimeElapsedColumn(), console=console(), transient=True) as bar:
            task = bar.add_task(description, total=total)

            def step(n: int = 1) -> None:
                bar.advance(task, n)

            yield step
        return
    start = last = time.monotonic()
    done = 0
    of = f"/{total}" if total else ""

    def advance(n: int = 1) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            logger.info("%s: %d%s %s (%.0f s)", description, done, of, unit, now - start)

    yield advance
    logger.info("%s: %d%s %s in %.1f s", description, done, of, unit, time.monotonic() - start)


def track(items: Iterable[T], description: str, total: int | None = None, **kw: Any) -> Iterator[T]:
    """``for x in track(items, "doing"):`` with ``progress``'s bar or log lines."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, **kw) as advance:
        for item in items:
            yield item
            advance(1)
