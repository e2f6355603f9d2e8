"""Targets z* cached per request: keyed by the model's weights, the request, the context templates and the
hyper-parameters z* depends on, so a sweep, an experiment grid, an attack, a party or a later round reuses them.

The one target cache: the one-shot edit, the multi-round edit and experiments, the parties and the attacks all
call ``cached_targets``, and all read and write the same files.

z*_j depends only on the model it is optimised on, request j's subject, prompt and target_new, the context
templates, the last edited layer and the optimisation's hyper-parameters (``TARGET_FIELDS``); not on λ, the
covariance, the other requests or the number of parties. The key binds all of these. The model part of the key
is ``weights_digest``: the loaded weights' ``source_digest`` and dtype, plus a hash of every down-projection weight
as it is now, so a model edited in place (the only weights the engine writes) gets new keys by itself. That is
what makes it the rounds' cache too: round r's targets are keyed by the model as rounds 0..r-1 left it, and
round 0's are the same entries a one-shot edit of the unedited model reads.

Layout: ``<cache>/targets/<key[:2]>/<key>.safetensors`` (0600 files in 0700 directories: z* follows from the
request it edits), tensors ``z`` and ``z_init`` (d_v,) in the model's dtype, metadata ``key``, ``loss``,
``nll``, ``steps``. A file whose stored key differs from its name is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from secure_collab.cache import cache_dir, digest_json
from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.targets import TargetResult, compute_targets
from secure_collab.editing.templates import templates_digest
from secure_collab.models.loading import LoadedModel
from secure_collab.models.specs import down_weight, n_layers

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
# the MemitHParams fields compute_targets reads (besides layers[-1] and request_batch, which only batches)
TARGET_FIELDS = ("v_lr", "v_num_grad_steps", "v_loss_early_stop", "v_weight_decay", "kl_factor",
                 "clamp_norm_factor", "kl_prompt")


def weights_digest(lm: LoadedModel) -> str:
    """sha256 over the source digest, the dtype and every down-projection weight as it is now (~0.3 s on SmolLM2)."""
    h = hashlib.sha256(lm.source_digest.encode())
    h.update(str(next(lm.model.parameters()).dtype).encode())
    for layer in range(n_layers(lm.model, lm.spec)):
        w = down_weight(lm.model, lm.spec, layer).detach().contiguous().cpu()
        h.update(w.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def target_hparams(hp: MemitHParams) -> dict:
    """The part of the hyper-parameters z* depends on."""
    d = {f: getattr(hp, f) for f in TARGET_FIELDS}
    d["layer"] = hp.layers[-1]
    return d


def request_key(request: Request) -> dict:
    return {"subject": request.subject, "prompt": request.prompt, "target_new": request.target_new}


def target_key(model_digest: str, request: Request, hp: MemitHParams, templates: Sequence[str]) -> str:
    return digest_json({"format": CACHE_FORMAT, "model": model_digest, "request": request_key(request),
                        "templates": templates_digest(list(templates)), "hparams": target_hparams(hp)})


def _path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.safetensors"


def _load(root: Path, key: str, device: torch.device) -> TargetResult | None:
    from safetensors import SafetensorError, safe_open

    path = _path(root, key)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                log.warning("ignoring target cache %s: stored key differs", path)
                return None
            z, z_init = f.get_tensor("z"), f.get_tensor("z_init")
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # a truncated or foreign file: recompute
        log.warning("ignoring target cache %s: %s", path, e)
        return None
    return TargetResult(z[None].to(device), z_init[None].to(device), [float(meta["loss"])], [float(meta["nll"])],
                        [int(meta["steps"])])


def _store(root: Path, key: str, t: TargetResult, info: dict) -> None:
    from safetensors.torch import save_file

    from secure_collab.files import private_dir, temp_beside

    path = _path(root, key)
    private_dir(root)  # z* follows from the request it edits: the caller's private data, 0700 / 0600
    private_dir(path.parent)
    tmp = temp_beside(path)
    meta = {"key": key, "loss": repr(t.loss[0]), "nll": repr(t.nll[0]), "steps": str(t.steps[0]),
            "info": json.dumps(info, sort_keys=True)}
    save_file({"z": t.z[0].detach().contiguous().cpu(), "z_init": t.z_init[0].detach().contiguous().cpu()},
              str(tmp), metadata=meta)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def cached_targets(lm: LoadedModel, requests: Sequence[Request], hp: MemitHParams, templates: Sequence[str],
                   cache: str | os.PathLike[str] | None = None, progress: bool = False,
                   model_digest: str | None = None) -> TargetResult:
    """z* for ``requests`` on ``lm`` as it is now: from the cache where present, else optimised and stored.

    Missing targets are optimised ``hp.request_batch`` requests at a time (0: all at once) and each batch is
    stored as soon as it is done, so an interrupted run keeps what it finished. ``model_digest`` defaults to
    ``weights_digest(lm)``; pass it when calling many times on a model that does not change in between.
    """
    from secure_collab.progress import progress as progress_bar

    if not requests:
        raise ValueError("no requests")
    root = cache_dir(cache) / "targets"
    digest = model_digest or weights_digest(lm)
    keys = [target_key(digest, r, hp, templates) for r in requests]
    found: dict[str, TargetResult] = {}
    for key in dict.fromkeys(keys):
        if (t := _load(root, key, lm.device)) is not None:
            found[key] = t
    missing = [i for i, k in enumerate(keys) if k not in found]
    missing = [i for i in missing if keys.index(keys[i]) == i]  # a repeated request is optimised once
    per = hp.request_batch or max(1, len(missing))
    with progress_bar("target optimisation", len(missing), "requests", enabled=progress and bool(missing)) as advance:
        for s in range(0, len(missing), per):
            rows = missing[s:s + per]
            got = compute_targets(lm, [requests[i] for i in rows], hp, list(templates))
            for j, i in enumerate(rows):
                one = got.take([j])
                _store(root, keys[i], one, {"model": lm.name, "request": request_key(requests[i]),
                                            "hparams": target_hparams(hp), "templates": list(templates)})
                found[keys[i]] = one
            advance(len(rows))
    return TargetResult.concat([found[k] for k in keys])

