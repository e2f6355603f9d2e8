"""What the round experiments share: metrics over a subset of evaluated requests, run directories, JSON out."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secure_collab.cache import cache_dir, digest_json
from secure_collab.evaluation import RequestEval, summarize


def metrics(details: Sequence[RequestEval]) -> dict[str, float | None]:
    """MEMIT's efficacy / generalization / specificity / Score over the given requests and the three margins
    (``evaluation.summarize``: the one aggregation; ``target_margin`` is the continuous companion of efficacy)."""
    r = summarize(details)
    return {"efficacy": r.efficacy, "generalization": r.generalization, "specificity": r.specificity,
            "score": r.score, **r.margins}


def run_dir(kind: str, key: Any, cache: str | os.PathLike[str] | None = None) -> Path:
    """A resumable work directory for one experiment configuration, under the cache (keyed by digest)."""
    path = cache_dir(cache) / "experiments" / f"{kind}-{digest_json(key)[:20]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(obj: Any, dest: str | os.PathLike[str] | None) -> None:
    """``dest``: a path, '-' for stdout, or None (nothing)."""
    if dest is None:
        return
    text = json.dumps(obj, indent=2, sort_keys=False)
    if str(dest) == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text(text + "\n")


def atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
