"""One cache directory for converted models, covariances and other derived files, keyed by digests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else $SECURE_COLLAB_CACHE, else ~/.cache/secure-collab (created)."""
    root = Path(override or os.environ.get("SECURE_COLLAB_CACHE") or Path.home() / ".cache" / "secure-collab")
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest_json(obj: Any) -> str:
    """sha256 of a canonical JSON encoding (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
