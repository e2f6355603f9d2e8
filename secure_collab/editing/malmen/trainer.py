"""A meta-training run on disk: cache key, checkpoints (an interrupted run resumes), the final hypernet, the curve.

A run directory holds ``run.json`` (the key and what it is made of), ``checkpoint.safetensors`` (hypernet and
optimiser tensors, step and history as JSON metadata: no pickle), ``history.json``, and when finished ``hypernet/`` (the
trained hypernetwork, ``Hypernet.load``-able, with its digest) and ``curve.png``. The key is the sha256 of the base
model's digest, the training and validation records and both configurations, so a directory is never resumed
with anything else, and a finished run with the same key is returned at once (the cache).
Batches are drawn from ``(seed, step)`` alone, so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from secure_collab.cache import digest_json
from secure_collab.data.requests import Request
from secure_collab.editing.malmen.edit import layer_shapes
from secure_collab.editing.malmen.hparams import MalmenHParams
from secure_collab.editing.malmen.net import Hypernet
from secure_collab.editing.malmen.rows import edit_rows
from secure_collab.editing.malmen.train import TrainConfig, evaluate, generalisation_pairs, locality_pairs, meta_step
from secure_collab.files import temp_beside
from secure_collab.models.loading import LoadedModel

log = logging.getLogger(__name__)


def requests_digest(requests: list[Request]) -> str:
    """sha256 over what training reads of each request (not the file's path)."""
    return digest_json([[r.subject, r.prompt, r.target_new, generalisation_pairs(r), locality_pairs(r)]
                        for r in requests])


def run_key(model_digest: str, train: list[Request], val: list[Request], hp: MalmenHParams,
            cfg: TrainConfig) -> str:
    return digest_json({"model": model_digest, "train": requests_digest(train), "val": requests_digest(val),
                        "hp": hp.to_dict(), "cfg": asdict(cfg)})


def batch_indices(n: int, size: int, seed: int, step: int) -> list[int]:
    """The training edits of ``step``: a function of (seed, step) only."""
    return random.Random(f"malmen:{seed}:{step}").sample(range(n), min(size, n))


@dataclass
class TrainResult:
    hypernet: Hypernet
    directory: Path
    history: list[dict[str, Any]]
    finished: bool
    cached: bool = False
    selected_step: int | None = None  # the validation step whose network ``hypernet/`` holds (lowest meta loss)


def best_validation(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The history entry with the lowest validation meta loss (the first of equals), or None before any."""
    return min((h for h in history if "val" in h), key=lambda h: h["val"]["loss"], default=None)


def fit_normaliser(lm: LoadedModel, hypernet: Hypernet, pool: list[Request], cfg: TrainConfig) -> None:
    """Fit each shape network's normaliser on the rows of ``cfg.norm_edits`` training edits, all its layers."""
    idx = random.Random(f"malmen-norm:{cfg.seed}").sample(range(len(pool)), min(cfg.norm_edits, len(pool)))
    rows = edit_rows(lm, [pool[i] for i in idx], hypernet.hp.layers, hypernet.hp.edit_batch)
    groups: dict[int, list[int]] = {}  # one normaliser per shape network, over all of its layers' rows
    for la in hypernet.hp.layers:
        groups.setdefault(id(hypernet.net(la)), []).append(la)
    for layers in groups.values():
        net = hypernet.net(layers[0])
        net.normaliser.fit(torch.cat([torch.cat((rows.u[la], rows.g[la]), 1) for la in layers]).to(net.lr.dtype))


def _save_checkpoint(path: Path, hypernet: Hypernet, opt: torch.optim.Optimizer, step: int,
                     history: list[dict[str, Any]]) -> None:
    """The run's state as safetensors (the network's and Adam's tensors) with the rest as JSON in its metadata: no
    pickle, so a checkpoint from anywhere is only tensors and text."""
    from safetensors.torch import save_file

    opt_state = opt.state_dict()
    tensors = {f"hypernet.{k}": v.detach().cpu().contiguous() for k, v in hypernet.state_dict().items()}
    for index, entry in opt_state["state"].items():
        for name, value in entry.items():
            tensors[f"opt.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"step": str(step), "history": json.dumps(history), "param_groups": json.dumps(opt_state["param_groups"])}
    tmp = temp_beside(path)
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a run killed while writing keeps the previous checkpoint, history included
    (path.parent / "history.json").write_text(json.dumps(history, indent=1) + "\n")  # for reading, not resuming


def _load_checkpoint(path: Path, hypernet: Hypernet, opt: torch.optim.Optimizer,
                     device: torch.device) -> tuple[int, list[dict[str, Any]]]:
    """Restore what ``_save_checkpoint`` wrote; returns (step, history)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    hypernet.load_state_dict({k.removeprefix("hypernet."): v for k, v in tensors.items() if k.startswith("hypernet.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, index, name = k.split(".", 2)
            state.setdefault(int(index), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), json.loads(meta["history"])


def train_hypernet(lm: LoadedModel, hp: MalmenHParams, cfg: TrainConfig, train: list[Request], val: list[Request],
                   directory: Path, progress: Callable[[int], None] | None = None,
                   stop_after: int | None = None) -> TrainResult:
    """Meta-train (or resume, or return the cached result of) a hypernetwork for ``lm`` in ``directory``.

    The network kept in ``directory/hypernet`` is the one of the validation step with the lowest validation meta
    loss (early stopping on counterfact-val; every validation's best so far is written to ``directory/best``, so an
    interrupted run keeps it), not necessarily the last step's.

    ``stop_after``: stop (with a checkpoint) once that many steps are done, as an interruption would; for tests.
    ``progress(n)`` is called after each step."""
    if not train or not val:
        raise ValueError("training and validation records are both needed")
    directory.mkdir(parents=True, exist_ok=True)
    key = run_key(lm.source_digest, train, val, hp, cfg)
    meta = {"key": key, "model": lm.name, "model_digest": lm.source_digest, "hp": hp.to_dict(), "cfg": asdict(cfg),
            "train_records": len(train), "val_records": len(val)}
    run_file = directory / "run.json"
    if run_file.is_file():
        have = json.loads(run_file.read_text()).get("key")
        if have != key:
            raise ValueError(f"{directory} holds another training run (key {str(have)[:12]}…, this one {key[:12]}…): "
                             "use another --out")
    else:
        run_file.write_text(json.dumps(meta, indent=1) + "\n")
    history_file = directory / "history.json"
    if (directory / "hypernet" / "hypernet.json").is_file():
        hypernet = Hypernet.load(directory / "hypernet")
        done = json.loads(history_file.read_text())
        chosen = best_validation(done)
        return TrainResult(hypernet, directory, done, True, cached=True,
                           selected_step=None if chosen is None else int(chosen["step"]))
    dtype = next(lm.model.parameters()).dtype
    hypernet = Hypernet(hp, layer_shapes(lm, hp.layers)).to(device=lm.device, dtype=dtype)
    opt = torch.optim.Adam(hypernet.parameters(), lr=cfg.meta_lr)
    ckpt = directory / "checkpoint.safetensors"
    step, history = 0, []  # type: tuple[int, list[dict[str, Any]]]
    if ckpt.is_file():
        step, history = _load_checkpoint(ckpt, hypernet, opt, lm.device)
        log.info("malmen train: resuming at step %d of %d", step, cfg.steps)
    else:
        fit_normaliser(lm, hypernet, train, cfg)
    val_batch = val[: cfg.val_edits]
    while step < cfg.steps:
        t0 = time.perf_counter()
        batch = [train[i] for i in batch_indices(len(train), cfg.edits_per_step, cfg.seed, step)]
        opt.zero_grad(set_to_none=True)
        loss, gen, loc = meta_step(lm, hypernet, batch, cfg.loc_coef, pair_batch=cfg.pair_batch)
        norm = float(torch.nn.utils.clip_grad_norm_(hypernet.parameters(), cfg.max_grad_norm))
        opt.step()
        step += 1
        entry: dict[str, Any] = {"step": step, "loss": loss, "gen": gen, "loc": loc, "grad_norm": norm,
                                 "seconds": time.perf_counter() - t0}
        if (cfg.val_every and step % cfg.val_every == 0) or step == cfg.steps:
            entry["val"] = evaluate(lm, hypernet, val_batch, cfg.loc_coef)
            log.info("malmen train: step %d loss %.4f, validation %s", step, loss,
                     ", ".join(f"{k} {v:.4f}" for k, v in entry["val"].items()))
            best = best_validation(history)
            if best is None or entry["val"]["loss"] < best["val"]["loss"]:  # early stopping's candidate, on disk
                hypernet.save(directory / "best", trained_for=lm.source_digest)
        history.append(entry)
        if progress is not None:
            progress(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or (stop_after is not None and step >= stop_after):
            _save_checkpoint(ckpt, hypernet, opt, step, history)
        if stop_after is not None and step >= stop_after and step < cfg.steps:
            return TrainResult(hypernet, directory, history, False)
    chosen = best_validation(history)
    if chosen is not None and chosen["step"] != step:  # the network of the best validation step, not the last
        hypernet = Hypernet.load(directory / "best").to(device=lm.device, dtype=dtype)
        log.info("malmen train: keeping step %d (validation meta loss %.4f; step %d: %.4f)", chosen["step"],
                 chosen["val"]["loss"], step, history[-1]["val"]["loss"])
    hypernet.save(directory / "hypernet", trained_for=lm.source_digest)
    history_file.write_text(json.dumps(history, indent=1) + "\n")
    plot_curve(history, directory / "curve.png")
    return TrainResult(hypernet, directory, history, True,
                       selected_step=None if chosen is None else int(chosen["step"]))


def plot_curve(history: list[dict[str, Any]], path: Path) -> Path:
    """Training loss per step and the validation loss and edit NLL at each validation point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], lw=0.8, alpha=0.6, label="train meta loss")
    val = [h for h in history if "val" in h]
    if val:
        steps = [h["step"] for h in val]
        ax.plot(steps, [h["val"]["loss"] for h in val], "o-", label="validation meta loss")
        ax.plot(steps, [h["val"]["edit_nll_after"] for h in val], "s--", label="validation edit NLL (edited)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("MALMEN meta-training (validation: counterfact-val)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
