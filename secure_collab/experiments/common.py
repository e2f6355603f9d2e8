"""What the round experiments share: metrics over a subset of evaluated requests, run directories, JSON out."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secure_collab.cache import cache_dir, digest_json
from secure_collab.evaluation import RequestEval, harmonic_mean


def metrics(details: Sequence[RequestEval]) -> dict[str, float | None]:
    """MEMIT's efficacy / generalization / specificity / score over the given requests (as ``evaluate``), and
    the mean NLL margin of the new object over the true one on the edit prompt."""
    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    out = {
        "efficacy": mean([float(d.rewrite_success) for d in details if d.rewrite_success is not None]),
        "generalization": mean([d.paraphrase_success for d in details if d.paraphrase_success is not None]),
        "specificity": mean([d.neighborhood_success for d in details if d.neighborhood_success is not None]),
    }
    present = [v for v in out.values() if v is not None]
    out["score"] = harmonic_mean(present) if present else None
    # a continuous companion of efficacy: mean NLL(true) − NLL(new) on the edit prompt (> 0: the edit wins)
    out["margin"] = mean([d.nll_true - d.nll_new for d in details if d.nll_true is not None])
    return out


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
