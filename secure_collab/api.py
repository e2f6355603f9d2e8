"""The Python API for scripts: edit and evaluate a model (``Editor``), write a session file and take part in a
session (``init_session``, ``join_session``, with ``serve_coordinator`` / ``serve_solver`` for the servers), and ask
a served release's model (``ask_served``).

The CLI commands are shells over the same parts; docs/api.md walks through every function with examples that
run as tests. In the manner of EasyEdit's editor object::

    >>> from secure_collab.api import Editor
    >>> editor = Editor.from_pretrained("tiny-llama")
    >>> result = editor.edit(prompts=["The capital of {} is"], subject=["France"], target_new=["Rome"],
    ...                      ground_truth=["Paris"])
    >>> sorted(result.deltas) == list(editor.hparams.layers)   # one ΔW per edited layer, (d_v, d_k)
    True
    >>> editor.restore()                                       # back to the base weights
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secure_collab.data.requests import Request
from secure_collab.files import private_dir

METRICS = ("efficacy", "generalization", "specificity", "score")


@dataclass
class EditResult:
    """What ``Editor.edit`` did: metrics before and after on the edited requests, and the applied ΔW."""

    pre: dict[str, float | None]
    post: dict[str, float | None]
    deltas: dict[int, Any]  # layer -> ΔW (d_v, d_k) float64 torch tensor, already applied
    method: str
    parties: int
    edits: int
    delta_rel_diff_vs_global: float | None = None  # when compare=True: max over layers of ‖ΔW − ΔW_global‖/‖ΔW_global‖
    target_loss: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "parties": self.parties, "edits": self.edits, "pre": self.pre,
                **self.post, "delta_rel_diff_vs_global": self.delta_rel_diff_vs_global}


def make_requests(prompts: Sequence[str], subject: Sequence[str], target_new: Sequence[str],
                  ground_truth: Sequence[str | None] | None = None) -> list[Request]:
    """EasyEdit-style parallel lists to ``Request`` objects (each prompt has one "{}" for its subject)."""
    truth = list(ground_truth) if ground_truth is not None else [None] * len(prompts)
    if not len(prompts) == len(subject) == len(target_new) == len(truth):
        raise ValueError("prompts, subject, target_new and ground_truth must have the same length")
    return [Request(subject=s, prompt=p, target_new=t, target_true=g, case_id=str(i))
            for i, (p, s, t, g) in enumerate(zip(prompts, subject, target_new, truth, strict=True))]


class Editor:
    """A model with its MEMIT hyper-parameters, covariances and context templates, ready to edit in place; or, with
    ``hypernet`` (a trained MALMEN hypernetwork, ``backend == "malmen"``), with that network and its layers."""

    def __init__(self, lm: Any, hparams: Any, *, corpus: str | None = None, cache_dir: str | Path | None = None,
                 progress: bool = False, hypernet: Any = None) -> None:
        from secure_collab.editing.memit import snapshot

        self.lm, self.hparams, self.corpus, self.progress = lm, hparams, corpus, progress
        self.hypernet = hypernet
        self.backend = "memit" if hypernet is None else "malmen"
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._base = snapshot(lm, hparams.layers)
        self._covs: dict[int, Any] | None = None
        self._templates: list[str] | None = None
        self.applied: dict[int, Any] = {}  # layer -> Σ ΔW applied since the base weights

    @classmethod
    def from_pretrained(cls, model: str = "smollm2-135m", *, layers: Sequence[int] | None = None,
                        lam: float | None = None, variant: str | None = None, device: str = "auto",
                        dtype: str = "auto", cache_dir: str | Path | None = None, corpus: str | None = None,
                        allow_download: bool = False, progress: bool = False, backend: str = "memit",
                        hypernet: str | Path | None = None, hypernet_digest: str | None = None,
                        **hparams: Any) -> Editor:
        """Load ``model`` (a built-in name, a directory, or a hub id with ``allow_download``) with its tuned
        MEMIT defaults; ``layers``, ``lam`` (λ), ``variant`` and any ``MemitHParams`` field override them.

        ``backend="malmen"``: edit with the trained hypernetwork in ``hypernet`` (a directory from `secure-collab
        malmen train`, checked against its digest and ``hypernet_digest``); its layers are the edited ones, and
        MEMIT's overrides do not apply."""
        from secure_collab.editing.hparams import auto_request_batch, default_hparams
        from secure_collab.models import load_model
        from secure_collab.models.specs import n_layers

        if backend not in ("memit", "malmen"):
            raise ValueError(f"backend must be 'memit' or 'malmen', got {backend!r}")
        if backend == "malmen" and hypernet is None:
            from secure_collab.editing.malmen.net import bundled_hypernet

            hypernet = bundled_hypernet(model)
        if backend == "malmen" and (hypernet is None or lam is not None or variant is not None or hparams):
            raise ValueError("backend='malmen' needs hypernet= (none is bundled for this model) and takes none of "
                             "MEMIT's lam, variant or hparams")
        lm = load_model(model, device=device, cache=Path(cache_dir) if cache_dir else None, dtype=dtype,
                        allow_download=allow_download)
        if backend == "malmen":
            from secure_collab.editing.malmen.net import load_hypernet

            net = load_hypernet(Path(str(hypernet)), hypernet_digest, next(lm.model.parameters()).dtype, lm.device,
                                lm.source_digest)
            if layers is not None and tuple(layers) != net.hp.layers:
                raise ValueError(f"layers {list(layers)}: the hypernetwork edits layers {list(net.hp.layers)}")
            return cls(lm, net.hp, cache_dir=cache_dir, progress=progress, hypernet=net)
        changes = {"request_batch": auto_request_batch(lm.device.type), **hparams}
        if layers is not None:
            changes["layers"] = tuple(layers)
        if lam is not None:
            changes["mom2_update_weight"] = float(lam)
        if variant is not None:
            changes["variant"] = variant
        hp = default_hparams(model, n_layers(lm.model, lm.spec)).with_(**changes)
        return cls(lm, hp, corpus=corpus, cache_dir=cache_dir, progress=progress)

    @property
    def model(self) -> Any:
        """The Hugging Face model, edited in place."""
        return self.lm.model

    @property
    def tokenizer(self) -> Any:
        return self.lm.tokenizer

    def covariances(self) -> dict[int, Any]:
        """C_l per edited layer (cached on disk by model, layer and corpus digests)."""
        from secure_collab.covariance import layer_covariances

        if self._covs is None:
            covs = layer_covariances(self.lm, self.hparams.layers, corpus=self.corpus, tokens=self.hparams.mom2_tokens,
                                     max_seq_len=self.hparams.mom2_max_len, cache=self.cache_dir,
                                     progress=self.progress)
            self._covs = {k: v.to(self.lm.device) for k, v in covs.items()}
        return self._covs

    def templates(self) -> list[str]:
        """The context templates keys are averaged over (generated once from the base model, cached)."""
        from secure_collab.editing.templates import context_templates

        if self._templates is None:
            self._templates = context_templates(self.lm, self.hparams.n_templates, self.hparams.template_length,
                                                self.hparams.template_seed, self.cache_dir)
        return self._templates

    def evaluate(self, requests: Sequence[Request]) -> dict[str, float | None]:
        """MEMIT's metrics of the model as it is now on ``requests``: efficacy, generalization, specificity,
        score (None where no request carries what a metric needs)."""
        from secure_collab.evaluation import evaluate

        summary = evaluate(self.lm, list(requests)).summary()
        return {k: summary[k] for k in METRICS}

    def edit(self, requests: Sequence[Request] | None = None, *, prompts: Sequence[str] | None = None,
             subject: Sequence[str] | None = None, target_new: Sequence[str] | None = None,
             ground_truth: Sequence[str | None] | None = None, parties: int = 1, method: str = "collab",
             compare: bool = False) -> EditResult:
        """Edit the model in place with ``requests`` (or EasyEdit-style lists) split among ``parties``, combined
        by ``method`` (global | collab | ta | sa | ties); ``compare`` also measures ΔW against Global-Edit."""
        from secure_collab.editing.memit import rel_diff, restore, run_edit, snapshot, split_parties

        reqs = list(requests) if requests is not None else make_requests(prompts or [], subject or [],
                                                                           target_new or [], ground_truth)
        if not reqs or not 1 <= parties <= len(reqs):
            raise ValueError(f"need at least one request and 1 <= parties <= {len(reqs)}")
        if self.hypernet is not None:
            return self._edit_malmen(reqs, parties, method, compare)
        covs, templates = self.covariances(), self.templates()
        pre = self.evaluate(reqs)
        groups = split_parties(reqs, parties)
        diff = None
        if compare and method != "global":
            before = snapshot(self.lm, self.hparams.layers)
            reference = run_edit(self.lm, groups, self.hparams, covs, "global", templates)
            restore(self.lm, before)
        outcome = run_edit(self.lm, groups, self.hparams, covs, method, templates)
        if compare:
            diff = 0.0 if method == "global" else rel_diff(outcome.deltas, reference.deltas)
        for layer, delta in outcome.deltas.items():
            self.applied[layer] = self.applied.get(layer, 0) + delta.detach().cpu()
        return EditResult(pre=pre, post=self.evaluate(reqs), deltas=dict(outcome.deltas), method=method,
                          parties=parties, edits=len(reqs), delta_rel_diff_vs_global=diff,
                          target_loss=[x for t in outcome.targets for x in t.loss])

    def _edit_malmen(self, reqs: list[Request], parties: int, method: str, compare: bool) -> EditResult:
        from secure_collab.editing.malmen.edit import run_malmen_edit
        from secure_collab.editing.memit import rel_diff, restore, snapshot, split_parties

        pre = self.evaluate(reqs)
        groups = split_parties(reqs, parties)
        diff = None
        if compare and method != "global":
            before = snapshot(self.lm, self.hparams.layers)
            reference = run_malmen_edit(self.lm, groups, self.hypernet, "global")
            restore(self.lm, before)
        outcome = run_malmen_edit(self.lm, groups, self.hypernet, method)
        if compare:
            diff = 0.0 if method == "global" else rel_diff(outcome.deltas, reference.deltas)
        for layer, delta in outcome.deltas.items():
            self.applied[layer] = self.applied.get(layer, 0) + delta.detach().cpu()
        return EditResult(pre=pre, post=self.evaluate(reqs), deltas=dict(outcome.deltas), method=method,
                          parties=parties, edits=len(reqs), delta_rel_diff_vs_global=diff)

    def restore(self) -> None:
        """Undo every edit: the edited layers get their base weights back."""
        from secure_collab.editing.memit import restore

        restore(self.lm, self._base)
        self.applied = {}

    def save_patch(self, path: str | Path) -> Path:
        """Write every ΔW applied since the base weights in the patch format (``secure-collab apply`` reads it)."""
        from secure_collab.patch import write_patch

        return write_patch(Path(path), self.lm, {(0, k): v for k, v in self.applied.items()},
                           {"method": "api", "variant": getattr(self.hparams, "variant", "oneshot"),
                            "backend": self.backend})

    def save(self, directory: str | Path) -> Path:
        """The edited model (``from_pretrained`` loads it) and patch.safetensors in ``directory``."""
        out = private_dir(Path(directory))  # the edited model carries the edits: a 0700 directory
        self.lm.model.save_pretrained(out)
        self.lm.tokenizer.save_pretrained(out)
        self.save_patch(out / "patch.safetensors")
        return out


def init_session(out: str | Path, model: str, *, roster: str = "roster.toml", cache_dir: str | Path | None = None,
                 allow_download: bool = False, force: bool = False, **choices: Any) -> Any:
    """Write a complete session file for ``model`` next to ``roster`` (relative to ``out``); returns its Config.
    ``choices`` are ``SessionChoices`` fields (mode, variant, layers, lam, min_parties, endpoint, ...); MALMEN:
    ``backend="malmen", hypernet=DIR, variant="oneshot"`` (its digest is pinned, DIR written to [paths] hypernet)."""
    import os

    from secure_collab.keys import load_roster
    from secure_collab.models import load_model
    from secure_collab.session_file import SessionChoices, session_document, write_session

    out = Path(out)
    pinned = load_roster(out.parent / roster)
    paths = {"keys": "keys", "roster": roster, "ledger": "coordinator/ledger.sqlite", "solver_state": "solver"}
    if choices.get("hypernet") is not None:  # relative to the session file, as every path in it
        choices["hypernet"] = Path(choices["hypernet"])
        paths["hypernet"] = Path(os.path.relpath(choices["hypernet"].resolve(), out.resolve().parent)).as_posix()
    spec = SessionChoices(parties=tuple(sorted(pinned.parties)), roster_sha256=pinned.digest(), paths=paths,
                          **choices)
    lm = load_model(model, device="cpu", cache=Path(cache_dir) if cache_dir else None, dtype=spec.dtype,
                    allow_download=allow_download)
    return write_session(out, session_document(lm, model, spec, cache=Path(cache_dir) if cache_dir else None),
                         force=force, title=model)


def _config(config: Any) -> Any:
    from secure_collab.config import load_config

    return load_config(Path(config)) if isinstance(config, str | Path) else config


def join_session(config: Any, name: str, requests: Sequence[Request] | str | Path, *, save: str | Path | None = None,
                 patch: str | Path | None = None, device: str = "auto", cache_dir: str | Path | None = None,
                 allow_download: bool = False, stop: threading.Event | None = None,
                 served_eval: bool = False) -> dict[str, Any]:
    """Take part in a session as party ``name`` (what `secure-collab party` does): load the base model, check it
    against the session, send protected statistics, verify and apply each signed ΔW; returns the party's report
    (ok, reason, applied releases' sha256, metrics before and after on its own requests). In a served release no ΔW
    arrives (``save`` and ``patch`` are refused); ``served_eval`` measures the party's efficacy through queries."""
    from parties.runner import PartyEngine, party_editor, run_party_session
    from secure_collab.data.formats import load_requests
    from secure_collab.protection import get_scheme as load_scheme

    cfg = _config(config)
    reqs = load_requests(requests) if isinstance(requests, str | Path) else list(requests)
    editor = party_editor(cfg, reqs, device=device, cache=Path(cache_dir) if cache_dir else None,
                          allow_download=allow_download, progress=False)

    if cfg.session.served and (save or patch):
        raise ValueError("a served release gives no party ΔW: there is no edited model or patch to save")

    def finish(result: Any) -> dict:
        if cfg.session.served:
            return editor.finish_served(result.served)
        return editor.finish(save=Path(save) if save else None, patch=Path(patch) if patch else None,
                             release_sha256=result.applied)

    engine = PartyEngine(editor.compute_statistics, editor.apply_delta, finish,
                         served_queries=editor.served_queries if cfg.session.served and served_eval else None)
    return run_party_session(cfg, name, load_scheme(cfg.session.mode), engine, stop=stop)


def ask_served(config: Any, name: str, query: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
    """Ask a served release's model one query as party ``name`` (what `secure-collab query` does), encrypted to the
    solver on the party's channel: ``{"kind": "logprobs", "prompt": P, "candidates": [...]}``, ``{"kind":
    "generate", "prompt": P, "max_tokens": N}`` or ``{"kind": "done"}`` (protocol/query.py). Returns the answer:
    ``ok``, ``reason``, ``cost``, ``used`` and ``budget`` (forward passes), and ``logprobs`` with ``tokens``, or
    ``text``."""
    from parties.queries import QueryClient

    with QueryClient(_config(config), name) as client:
        return client.ask(query, timeout_s)


def serve_coordinator(config: Any, *, stop: threading.Event | None = None) -> Any:
    """Run the coordinator of a session to its end (what `secure-collab coordinator` does); returns its Outcome."""
    from coordinator.server import run_coordinator
    from secure_collab.preflight import check_coordinator_state
    from secure_collab.protection import public_scheme

    cfg = _config(config)
    check_coordinator_state(cfg)
    return run_coordinator(cfg, public_scheme(cfg.session.mode), stop=stop)  # the public side is all it needs


def serve_solver(config: Any, *, cache_dir: str | Path | None = None, allow_download: bool = False,
                 stop: threading.Event | None = None) -> Any:
    """Run the trusted solver of a session to its end (what `secure-collab solver` does); returns its result."""
    from secure_collab.preflight import check_solver_state
    from secure_collab.protection import get_scheme as load_scheme
    from solver.server import run_solver
    from solver.solve import SessionSolve

    cfg = _config(config)
    check_solver_state(cfg)
    solve = SessionSolve(cfg.session, cache=Path(cache_dir) if cache_dir else None, allow_download=allow_download,
                         hypernet=cfg.paths.hypernet)
    return run_solver(cfg, load_scheme(cfg.session.mode), solve, stop=stop)
