"""Targets z* cached per request and per model state, so a multi-round run re-optimises each round's targets on
the model as it then is, and an interrupted run resumes without optimising them again.

``cached_targets`` is the one function the multi-round code calls (same signature as the per-request cache of
the experiments work, ``target_cache.cached_targets``, which can replace it). The key binds the weights as they
are now (``weights_digest``: the source digest, the dtype and every down-projection weight, the only weights the
engine writes), the request's subject, prompt and target_new, the context templates and the hyper-parameters
z* depends on. Files: ``<cache>/round-targets/<key[:2]>/<key>.safetensors`` (``z``, ``z_init``; metadata
``key``, ``loss``, ``nll``, ``steps``); a file whose stored key differs from its name is ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from secure_collab.cache import cache_dir, digest_json
from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.target_cache import target_hparams, weights_digest
from secure_collab.editing.targets import TargetResult, compute_targets
from secure_collab.editing.templates import templates_digest
from secure_collab.models.loading import LoadedModel

log = logging.getLogger(__name__)

FORMAT = 1
def _key(model_digest: str, r: Request, hp: MemitHParams, templates_sha: str) -> str:
    fields = target_hparams(hp)
    return digest_json({"format": FORMAT, "model": model_digest, "templates": templates_sha, "hparams": fields,
                        "request": [r.subject, r.prompt, r.target_new]})


def _load(path: Path, key: str, device: torch.device) -> TargetResult | None:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            z, z_init = f.get_tensor("z"), f.get_tensor("z_init")
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # truncated or foreign: recompute
        log.warning("ignoring cached target %s: %s", path, exc)
        return None
    return TargetResult(z[None].to(device), z_init[None].to(device), [float(meta["loss"])], [float(meta["nll"])],
                        [int(meta["steps"])])


def _store(path: Path, key: str, t: TargetResult, j: int) -> None:
    from safetensors.torch import save_file

    from secure_collab.files import private_dir

    private_dir(path.parent)  # z* follows from the request it edits: the caller's private data, 0700 / 0600
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    save_file({"z": t.z[j].detach().contiguous().cpu(), "z_init": t.z_init[j].detach().contiguous().cpu()},
              str(tmp), metadata={"key": key, "loss": repr(t.loss[j]), "nll": repr(t.nll[j]), "steps": str(t.steps[j])})
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def concat(parts: Sequence[TargetResult]) -> TargetResult:
    return TargetResult(torch.cat([p.z for p in parts]), torch.cat([p.z_init for p in parts]),
                        [x for p in parts for x in p.loss], [x for p in parts for x in p.nll],
                        [x for p in parts for x in p.steps])


def cached_targets(lm: LoadedModel, requests: Sequence[Request], hp: MemitHParams, templates: Sequence[str],
                   cache: str | os.PathLike[str] | None = None, progress: bool = False,
                   model_digest: str | None = None) -> TargetResult:
    """z* for ``requests`` on ``lm`` as it is now, from the cache where present, else optimised
    (``hp.request_batch`` at a time) and stored batch by batch."""
    if not requests:
        raise ValueError("no requests")
    root = cache_dir(cache) / "round-targets"
    digest = model_digest or weights_digest(lm)
    tsha = templates_digest(list(templates))
    keys = [_key(digest, r, hp, tsha) for r in requests]
    found: dict[str, TargetResult] = {}
    for key in dict.fromkeys(keys):
        if (t := _load(root / key[:2] / f"{key}.safetensors", key, lm.device)) is not None:
            found[key] = t
    missing = [i for i, k in enumerate(keys) if k not in found and keys.index(k) == i]
    per = hp.request_batch or max(1, len(missing))
    for s in range(0, len(missing), per):
        rows = missing[s:s + per]
        got = compute_targets(lm, [requests[i] for i in rows], hp, list(templates), progress=progress)
        for j, i in enumerate(rows):
            _store(root / keys[i][:2] / f"{keys[i]}.safetensors", keys[i], got, j)
            found[keys[i]] = TargetResult(got.z[j:j + 1], got.z_init[j:j + 1], [got.loss[j]], [got.nll[j]],
                                          [got.steps[j]])
    return concat([found[k] for k in keys])
