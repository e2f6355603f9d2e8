"""A party's own view of its session, kept in ``<[paths] party_status>/status-<party>.json`` for
`secure-collab status` on the party's host.

It holds only what this party itself saw: the session, its stage (joining, joined, tagging, contributing,
waiting for a release, waiting for the next step, done, aborted, failed, stopped), its own counts (steps it
contributed to, releases it applied, of how many) and the deadline of its current wait. Nothing about another
party (who answered, when) and nothing secret (no statistics, no figures of its own edits): when each party
answers is the timing signal attacks/wire.py measures, so per-party timing stays on the coordinator's host.

The file is rewritten whole (atomically, 0600) at each stage change. Writing it is best effort: a party whose
status file cannot be written says so once in its log and goes on with the session.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from secure_collab.config import Config
from secure_collab.files import write_private
from secure_collab.names import is_name

KIND = "secure-collab party status"
VERSION = 1
PREFIX, SUFFIX = "status-", ".json"
FIELDS = ("kind", "version", "session", "party", "stage", "detail", "joined", "contributed", "steps", "applied",
          "releases", "deadline", "deadline_means", "updated", "pid")


def status_path(config: Config, name: str) -> Path:
    """``<[paths] party_status>/status-<name>.json``; ``name`` must be a strict name (secure_collab/names.py)."""
    if not is_name(name):
        raise ValueError(f"not a party name: {name!r}")
    return config.paths.party_status / f"{PREFIX}{name}{SUFFIX}"


def status_files(config: Config) -> dict[str, Path]:
    """The party status files of this session's status directory, by party name (roster parties only)."""
    found: dict[str, Path] = {}
    directory = config.paths.party_status
    if not directory.is_dir():
        return found
    for p in sorted(directory.glob(f"{PREFIX}*{SUFFIX}")):
        name = p.name[len(PREFIX):-len(SUFFIX)]
        if is_name(name) and name in config.roster.parties and p.is_file():
            found[name] = p
    return found


def read_status(path: Path, config: Config) -> dict[str, Any]:
    """A party status file as written by ``StatusFile``; ValueError when it is not one of this session's."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a party status file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("version") != VERSION:
        raise ValueError(f"{path} is not a party status file (version {VERSION})")
    if doc.get("session") != config.session.id:
        raise ValueError(f"{path} is party {doc.get('party')!r}'s status in session {doc.get('session')!r}, "
                         f"not in {config.session.id!r}")
    return {k: doc.get(k) for k in FIELDS}


class StatusFile:
    """What the party runtime updates at each stage change (parties/client.py)."""

    def __init__(self, config: Config, name: str, log: logging.Logger) -> None:
        steps = config.session.steps()
        self.path = status_path(config, name)
        self.log = log
        self.failed = False
        self.doc: dict[str, Any] = {
            "kind": KIND, "version": VERSION, "session": config.session.id, "party": name, "stage": "joining",
            "detail": "", "joined": False, "contributed": 0, "steps": len(steps), "applied": 0,
            "releases": sum(len(layers) for _, layers in steps), "deadline": None, "deadline_means": "",
            "updated": None, "pid": os.getpid()}

    def update(self, stage: str, detail: str = "", *, deadline: float | None = None, means: str = "",
               **counts: Any) -> None:
        """Set the stage (and any of joined / contributed / applied) and rewrite the file."""
        unknown = set(counts) - {"joined", "contributed", "applied"}
        if unknown:
            raise ValueError(f"not a status count: {sorted(unknown)}")
        self.doc.update(counts, stage=stage, detail=detail, deadline=deadline, deadline_means=means if deadline
                        else "", updated=time.time())
        if self.failed:
            return
        try:
            write_private(self.path, json.dumps(self.doc, indent=1) + "\n")
        except OSError as exc:
            self.failed = True
            self.log.warning("cannot write its status file %s (%s): `secure-collab status` will not show this "
                             "party's stage; the session goes on", self.path, exc.strerror or exc)


def render(doc: dict[str, Any], now: float | None = None) -> list[str]:
    """The lines `secure-collab status` prints on a party's host: stage, its own counts and time left."""
    now = time.time() if now is None else now
    lines = [f"session {doc['session']} (party {doc['party']}): {doc['stage']}"
             + (f" {doc['detail']}" if doc["detail"] else ""),
             f"  joined       {'yes' if doc['joined'] else 'no'}",
             f"  contributed  {doc['contributed']} of {doc['steps']} steps",
             f"  applied      {doc['applied']} of {doc['releases']} releases"]
    deadline = doc.get("deadline")
    if isinstance(deadline, (int, float)):
        lines.append(f"  time left    {max(0.0, deadline - now):.0f} s (until "
                     f"{time.strftime('%H:%M:%S', time.localtime(deadline))}: {doc['deadline_means']})")
    if doc["stage"] not in ("done", "aborted", "failed", "stopped") and not _alive(doc.get("pid")):
        lines.append(f"  (party process {doc.get('pid')} is not running on this host: restart the same "
                     "`secure-collab party` command to rejoin)")
    lines.append("  this party's own view; other parties' stage and timing are shown on the coordinator's "
                 "host only")
    return lines


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
