"""`secure-collab bench` in one function: every section in one run, each result kept so an interruption resumes.

Sections (docs in each module): ``sessions`` (a), ``anchors`` (b), ``memory`` (c), ``solve`` (d), ``covariance``
(e), ``targets`` (f, with the keys and the core's matmul rate), ``backends`` (g) and ``realsize`` (h: real-size
sessions of synthetic statistics, hours and most of a 24 GiB machine at the real sizes, so it runs only when named
with ``--only``; its rows are kept one by one in ``<out>/realsize/rows``). ``run_bench`` writes
``<out>/sections/<name>.json`` as each section finishes (keyed by the section's settings: a finished section with
the same settings is read back, not run again), then the summary with the figures the issue names, the targets met
or missed, and the plots (``report``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SECTIONS = ("sessions", "anchors", "memory", "solve", "covariance", "targets", "backends", "realsize")
DEFAULT_SECTIONS = SECTIONS[:-1]  # realsize only when asked for by name


@dataclass(frozen=True)
class BenchConfig:
    """What one bench run measures. ``quick()`` and ``full()`` are the two presets of the CLI."""

    quick: bool
    model: str = "smollm2-135m"
    session_parties: tuple[int, ...] = (3, 10)
    session_reps: int = 3
    session_edits: int = 2  # edits per party
    session_requests: str = "bundled"
    anchor_parties: tuple[int, ...] = (3, 10)
    memory_parties: tuple[int, ...] = (2, 10, 20)
    memory_dims: tuple[int, ...] = (1536, 6400)
    memory_large_parties: tuple[int, ...] = (2, 10, 20)  # party counts at the dims above the smallest
    solve_dims: tuple[int, ...] = (1536, 6400)
    solve_reps: int = 3
    covariance_tokens: int = 10_000
    covariance_reps: int = 2
    target_requests: str = "../shared/data/counterfact.json"
    target_offset: int = 100  # records 100.. were not looked at while the speed-up was made (0..3 were)
    target_edits: int = 8
    target_reps: int = 2
    target_flop_edits: int = 2
    key_edits: int = 16
    key_reps: int = 3
    efficacy: bool = True  # edit with the targets of before and after and compare efficacy
    backend_edits: int = 8  # MEMIT against MALMEN statistics per edit, on target_requests from target_offset
    backend_reps: int = 2
    backend_hypernet: str = "bundled"  # a trained hypernetwork directory, or the one bundled for the model
    warmup: bool = True  # an untimed session per party count first (fills the target and page caches)
    # (h) real-size sessions of synthetic statistics (bench.realsize): d_k of Llama-3-8B and GPT-J, their d_v
    realsize_dk: tuple[int, ...] = (14336, 16384)
    realsize_dv: int = 4096
    realsize_parties: tuple[int, ...] = (3, 10)
    realsize_modes: str = "shares,plain,ckks"
    realsize_rank: int = 16  # N: edits per party, the rank of its G
    realsize_precision_bits: int = 48  # ckks: the session default (session_file.PRECISION_BITS)
    realsize_in_turn: bool = True  # parties asked one at a time (network.request_in_turn), as the demo does
    realsize_memory_limit_gb: float = 18.0  # the machine's used memory (GiB) at which a row is stopped
    realsize_timeout_s: float = 3600.0  # a row still running after this is stopped
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def preset(cls, quick: bool, **changes: Any) -> BenchConfig:
        """The full run (defaults above), or ``quick``: minutes, with 3 parties × 1 edit per session and two
        repetitions, anchors on 3 parties, memory at d = 256 and 1536, solve twice, 2,000 covariance tokens,
        targets of 2 edits once (FLOPs of 1), keys of 4 edits, no efficacy edit."""
        if not quick:
            return cls(quick=False, **changes)
        return cls(quick=True, **{**dict(
            session_parties=(3,), session_reps=2, session_edits=1, anchor_parties=(3,), memory_dims=(256, 1536),
            solve_reps=2, covariance_tokens=2_000, covariance_reps=2, target_edits=2, target_reps=1,
            target_flop_edits=1, key_edits=4, key_reps=2, efficacy=False, backend_edits=2, backend_reps=1),
            **changes})

    def with_settings(self, items: list[str]) -> BenchConfig:
        """A copy with ``NAME=VALUE`` overrides (tuples comma-separated); ValueError names a bad one."""
        changes: dict[str, Any] = {}
        names = {f.name: f for f in fields(self) if f.name not in ("quick", "model", "sections", "extra")}
        for item in items:
            name, sep, text = item.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise ValueError(f"--set {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(names))}")
            current = getattr(self, name)
            try:
                if isinstance(current, bool):
                    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(text)
                    changes[name] = text.lower() in ("true", "1", "yes")
                elif isinstance(current, tuple):
                    changes[name] = tuple(int(x) for x in text.split(","))
                else:
                    changes[name] = type(current)(text)
            except ValueError:
                raise ValueError(f"--set {item!r}: {text!r} is not a {type(current).__name__} "
                                 f"like {current!r}") from None
            if isinstance(changes[name], int) and not isinstance(changes[name], bool) and changes[name] < 0:
                raise ValueError(f"--set {item!r}: must not be negative")
        return replace(self, **changes)

    def settings(self, section: str) -> dict[str, Any]:
        """The settings a section's result depends on (a cached result is reused only if they match)."""
        d = asdict(self)
        prefixes: dict[str, tuple[str, ...]] = {
            "sessions": ("session_",), "anchors": ("anchor_",), "memory": ("memory_",), "solve": ("solve_",),
            "covariance": ("covariance_",), "targets": ("target_", "key_", "efficacy"), "backends": ("backend_",),
            "realsize": ("realsize_",)}
        prefix = prefixes[section]
        keep = {k: v for k, v in d.items() if k.startswith(prefix)} | {"model": self.model}
        if section == "backends":  # the same requests as the targets section
            keep |= {k: d[k] for k in ("target_requests", "target_offset")}
        if section == "anchors":  # the anchors run on the sessions' requests, split the same way
            keep |= {k: d[k] for k in ("session_edits", "session_requests")}
        return json.loads(json.dumps(keep))


def run_bench(cfg: BenchConfig, out: Path, cache: Path | None = None, fresh: bool = False,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or read back) every section of ``cfg`` into ``out``; return the whole result with its summary."""
    from secure_collab.bench import report
    from secure_collab.bench.timing import machine

    say = progress or (lambda _m: None)
    (out / "sections").mkdir(parents=True, exist_ok=True)
    runners: dict[str, Callable[[BenchConfig, Path | None, Callable[[str], None]], dict[str, Any]]] = {
        "sessions": _sessions, "anchors": _anchors, "memory": _memory, "solve": _solve, "covariance": _covariance,
        "targets": _targets, "backends": _backends,
        "realsize": functools.partial(_realsize, out=out / "realsize", fresh=fresh)}
    results: dict[str, Any] = {}
    for name in cfg.sections:
        path = out / "sections" / f"{name}.json"
        settings = cfg.settings(name)
        if not fresh and path.is_file():
            kept = json.loads(path.read_text())
            if kept.get("settings") == settings:
                say(f"{name}: kept from {path}")
                results[name] = kept
                continue
        say(f"{name}: measuring")
        body = runners[name](cfg, cache, say)
        results[name] = {"settings": settings, "machine": machine(), **body}
        path.write_text(json.dumps(results[name], indent=1) + "\n")
    summary = report.summarise(results)
    whole = {"quick": cfg.quick, "config": json.loads(json.dumps(asdict(cfg))), **summary, "sections": results}
    report.plots(results, out)
    (out / "bench.md").write_text(report.markdown(whole))
    return whole


# ---------------------------------------------------------------------------------------------- sections

def _load(cfg: BenchConfig, cache: Path | None) -> tuple[Any, Any, list[str]]:
    import torch

    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers

    torch.set_num_threads(1)
    lm = load_model(cfg.model, cache=cache)
    hp = default_hparams(cfg.model, n_layers(lm.model, lm.spec))
    return lm, hp, context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, cache)


def _sessions(cfg: BenchConfig, cache: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    import tempfile

    from secure_collab.bench.sessions import bench_sessions, run_session
    from secure_collab.models.specs import down_weight

    lm, hp, _ = _load(cfg, cache)
    d_v, d_k = down_weight(lm.model, lm.spec, hp.layers[0]).shape
    del lm
    for p in cfg.session_parties if cfg.warmup else ():  # untimed: fills the target and page caches
        say(f"sessions: warm-up, {p} parties")
        with tempfile.TemporaryDirectory(prefix="bench-warmup-") as tmp:
            run_session("plain", p, cfg.session_edits, cfg.session_requests, cfg.model, Path(tmp), cache)
    rows = bench_sessions(cfg.session_parties, cfg.session_reps, cfg.session_edits, cfg.session_requests,
                          cfg.model, (int(d_k), int(d_v), len(hp.layers)), cache, say)
    return {"layers": list(hp.layers), "d_k": int(d_k), "d_v": int(d_v), "by_parties": rows}


def _requests(spec: str, n: int) -> list:
    """The first ``n`` requests of ``spec`` ('bundled' or a request file; records, not requests, for MQuAKE)."""
    from secure_collab.data.bundled import bundled_requests
    from secure_collab.data.formats import load_requests

    reqs = bundled_requests(n) if spec == "bundled" else load_requests(spec, limit=n)
    if len(reqs) < n:
        raise ValueError(f"{spec} has {len(reqs)} requests, {n} needed")
    return reqs[:n]


def _party_vectors(cfg: BenchConfig, lm: Any, hp: Any, templates: list[str], parties: int,
                   cache: Path | None) -> list[Any]:
    """Each party's real (G upper triangle, B) at the first edited layer, as one float64 vector: the requests
    of the sessions, split the same way."""
    import numpy as np

    from secure_collab.editing.memit import party_layer_stats, split_parties
    from secure_collab.editing.target_cache import cached_targets
    from secure_collab.protection import pack_symmetric

    n = parties * cfg.session_edits
    reqs = _requests(cfg.session_requests, n)
    hp1 = hp.with_(request_batch=1)
    vectors = []
    for group in split_parties(reqs, parties):
        z = cached_targets(lm, group, hp1, templates, cache).z
        st = party_layer_stats(lm, group, z, hp.layers[0], hp1, templates)
        vectors.append(np.concatenate([pack_symmetric(st.g.cpu().numpy()), st.b.cpu().numpy().ravel()]))
    return vectors


def _anchors(cfg: BenchConfig, cache: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    import math

    import numpy as np

    from secure_collab.bench.anchors import measure_all

    lm, hp, templates = _load(cfg, cache)
    out: dict[str, Any] = {}
    for p in cfg.anchor_parties:
        say(f"anchors: statistics of {p} parties")
        vectors = _party_vectors(cfg, lm, hp, templates, p, cache)
        peak = max(float(np.max(np.abs(v))) for v in vectors)
        bound = 2.0 ** math.ceil(math.log2(peak))  # the tightest power-of-two bound a party could declare
        out[str(p)] = {"parties": p, "n_values": int(vectors[0].shape[0]), "layer": hp.layers[0],
                       "max_abs_value": peak, "bound": bound, "methods": measure_all(vectors, bound, say)}
    return {"by_parties": out}


def _memory(cfg: BenchConfig, cache: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    from secure_collab.bench.protection import measure_mode
    from secure_collab.protection import triangle_size

    rows = []
    top = max(cfg.memory_parties)
    for dim in cfg.memory_dims:
        n = triangle_size(dim)
        for mode in ("plain", "shares", "ckks"):
            for p in (cfg.memory_parties if dim == min(cfg.memory_dims) else cfg.memory_large_parties):
                # own: the parameters a session of p parties gets; fixed: parameters for the most parties,
                # p of them sending (only the party count changes)
                for kind, parties, dropouts in (("own", p, 0), ("fixed", top, top - p)):
                    if kind == "fixed" and (p == top or dim != min(cfg.memory_dims)):
                        continue
                    say(f"memory: {mode}, d = {dim}, {p} parties ({kind} parameters)")
                    r = measure_mode(mode, parties, n, functools.partial(_uniform_of, n), dropouts=dropouts,
                                     label="bench-memory")
                    rows.append({"mode": mode, "dim": dim, "sending": p, "parameters_for": parties, "kind": kind,
                                 **{k: r[k] for k in ("coordinator_peak_bytes", "coordinator_held_bytes",
                                                      "bytes_per_value", "max_rel_err", "accumulate_seconds")}})
    return {"rows": rows}


def _uniform_of(n: int, party: int) -> Any:
    from secure_collab.bench.protection import uniform

    return uniform(0, party, n, 1.0)


def _solve(cfg: BenchConfig, cache: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from secure_collab.bench.compute import bench_solve

    torch.set_num_threads(1)
    say(f"solve: d_k {list(cfg.solve_dims)}")
    return {"by_dim": bench_solve(cfg.solve_dims, cfg.solve_reps)}


def _covariance(cfg: BenchConfig, cache: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    from secure_collab.bench.compute import bench_covariance

    lm, hp, _ = _load(cfg, cache)
    say(f"covariance: {cfg.covariance_tokens} tokens, stopped vs full forward")
    return bench_covariance(lm, hp.layers, cfg.covariance_tokens, cfg.covariance_reps)


def _targets(cfg: BenchConfig, cache: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from secure_collab.bench.compute import bench_keys, bench_targets, matmul_rate

    lm, hp, templates = _load(cfg, cache)
    start = cfg.target_offset
    reqs = _requests(cfg.target_requests, start + max(cfg.target_edits, cfg.key_edits))[start:]
    out: dict[str, Any] = {"requests": cfg.target_requests, "offset": start}
    say("targets: the core's matmul rate")
    out["matmul"] = matmul_rate()
    say(f"targets: {cfg.target_edits} edits, before and after, {cfg.target_reps} repetitions, and the FLOPs")
    out["cpu"] = bench_targets(lm, reqs[:cfg.target_edits], hp, templates, cfg.target_reps, cfg.target_flop_edits)
    say(f"keys: {cfg.key_edits} edits, one at a time vs batched")
    out["keys_cpu"] = bench_keys(lm, reqs[:cfg.key_edits], hp, templates, cfg.key_reps)
    if cfg.efficacy:
        say("targets: efficacy of an edit with the targets of before and of after")
        out["efficacy"] = _efficacy(lm, reqs[:cfg.target_edits], hp, templates, cache)
    if torch.cuda.is_available():  # the same on the GPU where there is one
        from secure_collab.models import load_model

        gpu = load_model(cfg.model, device="cuda", cache=cache)
        say("targets and keys on the GPU")
        out["gpu"] = bench_targets(gpu, reqs[:cfg.target_edits], hp, templates, cfg.target_reps)
        out["keys_gpu"] = bench_keys(gpu, reqs[:cfg.key_edits], hp, templates, cfg.key_reps)
    else:
        out["gpu"] = {"skipped": "no CUDA device on this machine"}
    return out


def _backends(cfg: BenchConfig, cache: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    from secure_collab.bench.compute import bench_backends
    from secure_collab.editing.malmen.net import bundled_hypernet, load_hypernet

    lm, hp, templates = _load(cfg, cache)
    path = bundled_hypernet(cfg.model) if cfg.backend_hypernet == "bundled" else Path(cfg.backend_hypernet)
    if path is None:
        return {"skipped": f"no hypernetwork bundled for {cfg.model}: --set backend_hypernet=DIR"}
    net = load_hypernet(path, dtype=next(lm.model.parameters()).dtype, device=lm.device,
                        model_digest=lm.source_digest)
    start = cfg.target_offset
    reqs = _requests(cfg.target_requests, start + cfg.backend_edits)[start:]
    say(f"backends: a party's statistics for {cfg.backend_edits} edits, MEMIT against MALMEN, "
        f"{cfg.backend_reps} repetitions")
    return {"requests": cfg.target_requests, "offset": start, "hypernet": str(path),
            "cpu": bench_backends(lm, reqs, hp, templates, net, cfg.backend_reps)}


def _realsize(cfg: BenchConfig, cache: Path | None, say: Callable[[str], None], *, out: Path,
              fresh: bool) -> dict[str, Any]:
    from secure_collab.bench.realsize import bench_realsize
    from secure_collab.protection import MODES

    modes = tuple(m.strip() for m in cfg.realsize_modes.split(",") if m.strip())
    if not modes or set(modes) - set(MODES):
        raise ValueError(f"realsize_modes={cfg.realsize_modes!r}: a comma-separated subset of {', '.join(MODES)}")
    return bench_realsize(cfg.realsize_dk, cfg.realsize_dv, cfg.realsize_parties, modes, cfg.realsize_rank, out,
                          memory_limit=int(cfg.realsize_memory_limit_gb * 2**30), timeout=cfg.realsize_timeout_s,
                          precision_bits=cfg.realsize_precision_bits, in_turn=cfg.realsize_in_turn, fresh=fresh,
                          progress=say)


def _efficacy(lm: Any, reqs: list, hp: Any, templates: list[str], cache: Path | None) -> dict[str, Any]:
    """Efficacy (and the rest of MEMIT's metrics) of one Global-Edit of ``reqs`` with each variant's targets."""
    from secure_collab.covariance import layer_covariances
    from secure_collab.editing.memit import restore, run_edit, snapshot
    from secure_collab.editing.targets import compute_targets
    from secure_collab.evaluation import evaluate

    covs = layer_covariances(lm, hp.layers, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len, cache=cache,
                             progress=False)
    hp1 = hp.with_(request_batch=1)
    out: dict[str, Any] = {"pre": evaluate(lm, reqs).summary()}
    saved = snapshot(lm, hp.layers)
    for name, window in (("before", False), ("after", True)):
        targets = compute_targets(lm, reqs, hp1, templates, window=window)
        run_edit(lm, [reqs], hp1, covs, "global", templates, targets=[targets])
        out[name] = evaluate(lm, reqs).summary()
        restore(lm, saved)
    return out
