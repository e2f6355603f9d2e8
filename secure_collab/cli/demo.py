"""`secure-collab demo`: a whole networked edit session on this machine, with its Global-Edit reference.

Makes keys and a session configuration in a work directory, starts the solver, the coordinator and each party
as separate processes talking CurveZMQ over loopback, and meanwhile computes the single-machine Global-Edit of
the same requests in this process. At the end it prints a table per party, compares the ΔW the parties applied
with Global-Edit's, and says where the ledger is.

With ``--release served`` no party receives ΔW: the solver's process applies it and answers the parties' encrypted
queries; each party measures its own efficacy through them, and the demo compares one served answer per party with
the same query on the Global-Edit model (the served release needs the oneshot variant, its default then).

Processes that share a machine share its cores: each process gets ``--threads`` math threads (default 1), and
the coordinator asks parties for their statistics in turn (``--in-turn``, default on), so on a 2-core machine
one party computes while this process computes the reference on the other core.

With ``--backend malmen --hypernet DIR`` the session file names MALMEN and pins the hypernetwork's digest; the parties
send (UᵀU, DᵀU), the solver solves with e^{λ_l} I, and the reference is ``run_malmen_edit(..., "global")``
(oneshot, weights release, no defence: what a MALMEN session supports, docs/malmen.md).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from secure_collab.editing.defences import DefenceError, parse_defence  # torch-free: the setting's text only
from secure_collab.files import open_private, private_dir, touch_private

HELP = "run a whole session (solver, coordinator, parties as processes over CurveZMQ) and compare with Global-Edit"
METRICS = ("efficacy", "generalization", "specificity", "score")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option
    from secure_collab.cli.malmen import add_backend_arguments
    from secure_collab.config import COORDINATOR_MEMORY_BYTES
    from secure_collab.session_file import PRECISION_BITS

    p.add_argument("--mode", choices=("ckks", "shares", "plain"), default="shares",
                   help="protection of the statistics (plain: none)")
    p.add_argument("--parties", type=int, default=3, help="number of parties (named a, b, c, ...)")
    p.add_argument("--edits-per-party", type=int, default=4, help="edit requests per party")
    p.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m, tiny-gpt2, tiny-llama, a directory or a hub id")
    p.add_argument("--variant", choices=("sequential", "oneshot"), default=None,
                   help="MEMIT variant (default: sequential, or oneshot with --release served)")
    p.add_argument("--requests", default="bundled",
                   help="'bundled' (countryinfo set, default) or a request file; split among the parties")
    p.add_argument("--min-parties", type=int, default=2, help="the solver opens no sum of fewer parties")
    p.add_argument("--value-bound", type=float, default=1e5,
                   help="declared max |entry| of one party's statistic (parties refuse to send beyond it)")
    p.add_argument("--precision-bits", type=int, default=PRECISION_BITS,
                   help="ckks: bits of precision below the value bound")
    p.add_argument("--dtype", default="auto",
                   help="model dtype in every process: auto (float64 for tiny models, else float32), float64 "
                        "(removes float32 rounding from the comparison with Global-Edit, at twice the compute)")
    p.add_argument("--threads", type=int, default=1, help="math threads per process (0: torch's default)")
    p.add_argument("--in-turn", action=argparse.BooleanOptionalAction, default=True,
                   help="parties compute their statistics one at a time (shared cores)")
    p.add_argument("--defence", default="none",
                   help="release defences, joined with '+': none, camouflage:S (parties), decoys:R (parties), "
                        "rank:K (solver), noise:Z "
                        "(parties; with --key-norm-bound, --residual-norm-bound); the reference then has the same "
                        "rank, but not the parties' secret decoys or noise (docs/privacy.md, docs/dp.md)")
    p.add_argument("--key-norm-bound", type=float, default=1e3,
                   help="declared max ‖k‖; with noise:Z the clipping norm κ (SmolLM2: 16; default %(default)g)")
    p.add_argument("--residual-norm-bound", type=float, default=1e3,
                   help="declared max ‖r‖; with noise:Z the clipping norm ρ (SmolLM2: 32; default %(default)g)")
    p.add_argument("--release", choices=("weights", "served"), default="weights",
                   help="weights: every party applies ΔW; served: only the solver's process holds the edited model "
                        "and answers each party's encrypted queries within --query-budget (docs/network.md)")
    p.add_argument("--query-budget", type=int, default=100,
                   help="served: forward passes each party may ask for (its own evaluation takes two per edit)")
    add_backend_arguments(p, digest=False, pinned=True)
    p.add_argument("--no-reference", action="store_true", help="skip the Global-Edit comparison")
    p.add_argument("--workdir", default=None, help="where keys, config, logs and ledger go (default: a temp dir)")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $SECURE_COLLAB_CACHE or ~/.cache)")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    p.add_argument("--chunk-values", type=int, default=262144, help="values per statistics message")
    p.add_argument("--coordinator-memory", type=int, default=COORDINATOR_MEMORY_BYTES, metavar="BYTES",
                   help="running sums the coordinator holds at once; the parties stream within that window")
    add_json_option(p)


def _requests(args: argparse.Namespace) -> list:
    from secure_collab.data.bundled import bundled_requests
    from secure_collab.data.formats import load_requests
    from secure_collab.errors import ConfigError

    n = args.parties * args.edits_per_party
    reqs = bundled_requests(n) if args.requests == "bundled" else load_requests(args.requests, limit=n)
    if len(reqs) < n:
        raise ConfigError(f"{args.requests} has {len(reqs)} requests, {n} needed")
    return reqs[:n]


def _spawn(role: str, argv: list[str], logs: Path, threads: int) -> subprocess.Popen:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    with open_private(logs / f"{role}.log", "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "secure_collab", *argv], stdout=log,
                                stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)


def run(args: argparse.Namespace) -> int:
    import torch

    from secure_collab.cli.malmen import resolve_hypernet

    resolve_hypernet(args)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from secure_collab.cli._output import write_json
    from secure_collab.covariance import layer_covariances
    from secure_collab.data.formats import write_jsonl
    from secure_collab.editing.hparams import auto_request_batch, default_hparams
    from secure_collab.editing.memit import run_edit, split_parties
    from secure_collab.editing.session import session_hparams
    from secure_collab.editing.templates import context_templates
    from secure_collab.errors import ConfigError
    from secure_collab.keys import init_keys
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers
    from secure_collab.protocol.transport import free_loopback_endpoint
    from secure_collab.session_file import SessionChoices, session_document, write_session

    console = Console(stderr=True, quiet=args.quiet)
    served = args.release == "served"
    malmen = args.backend == "malmen"
    if malmen != bool(args.hypernet):
        raise ConfigError("--hypernet DIR goes with --backend malmen (and only with it)")
    if malmen and (args.variant == "sequential" or served or args.defence != "none"):
        raise ConfigError("--backend malmen runs oneshot, with --release weights and no --defence (docs/malmen.md)")
    if args.variant is None:
        args.variant = "oneshot" if served or malmen else "sequential"
    if served and args.variant != "oneshot":
        raise ConfigError("--release served needs --variant oneshot: the parties keep the base model, so every "
                          "statistic must come from it")
    if args.parties < args.min_parties or args.parties > 26:
        raise ConfigError(f"--parties must be between --min-parties ({args.min_parties}) and 26")
    try:  # before anything loads
        defence = parse_defence(args.defence)
    except DefenceError as exc:
        raise ConfigError(str(exc)) from None
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    # the work directory holds every party's requests, keys and outputs: 0700 / 0600 whatever the umask
    work = private_dir(Path(args.workdir or tempfile.mkdtemp(prefix="secure-collab-demo-")).resolve())
    logs = private_dir(work / "logs")
    cache = Path(args.cache_dir).resolve() if args.cache_dir else None
    names = [chr(ord("a") + i) for i in range(args.parties)]
    requests = _requests(args)
    shares = dict(zip(names, split_parties(requests, args.parties), strict=True))

    # the public, shared pieces first (cached, so the solver and the parties find them): C and the templates
    with console.status(f"loading {args.model}"):
        lm = load_model(args.model, cache=cache, dtype=args.dtype, allow_download=args.allow_download)
    depth = n_layers(lm.model, lm.spec)
    hp = session_hparams(args.model, depth, default_hparams(args.model, depth).layers, args.variant, 0, {},
                         auto_request_batch(lm.device.type))
    net = None
    if malmen:  # MALMEN: no C, no templates; the hypernetwork's layers
        from secure_collab.editing.malmen.net import load_hypernet

        try:
            net = load_hypernet(Path(args.hypernet), dtype=next(lm.model.parameters()).dtype, device=lm.device)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        layers, covs, templates = tuple(net.hp.layers), {}, []
    else:
        layers = hp.layers
        covs = layer_covariances(lm, hp.layers, tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len, cache=cache,
                                 progress=not args.quiet)
        templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, cache)

    roster = init_keys(work / "keys", names)
    endpoint = free_loopback_endpoint()
    cfg_path = work / "session.toml"
    choices = SessionChoices(
        parties=tuple(names), roster_sha256=roster.digest(), mode=args.mode, variant=args.variant,
        layers=layers, min_parties=args.min_parties,
        value_bound=args.value_bound, key_norm_bound=args.key_norm_bound,
        residual_norm_bound=args.residual_norm_bound,
        precision_bits=args.precision_bits if args.mode == "ckks" else None,
        session_id=f"demo-{secrets.token_hex(4)}", dtype=args.dtype, bind=endpoint, endpoint=endpoint,
        join_timeout_s=900.0, stage_timeout_s=max(600.0, 120.0 * args.edits_per_party),
        request_in_turn=bool(args.in_turn), chunk_values=args.chunk_values,
        coordinator_memory_bytes=args.coordinator_memory, defence=args.defence, release=args.release,
        query_budget=args.query_budget, serve_timeout_s=max(600.0, args.timeout), backend=args.backend,
        hypernet=Path(args.hypernet).resolve() if malmen else None,
        paths={"keys": "keys", "roster": "keys/roster.toml", "ledger": "coordinator/ledger.sqlite",
               "solver_state": "solver-state", **({"hypernet": str(Path(args.hypernet).resolve())} if malmen else {})})
    cfg = write_session(cfg_path, session_document(lm, args.model, choices, templates), force=True,
                        title="demo")

    common = ["--threads", str(args.threads)] + (["--cache-dir", str(cache)] if cache else [])
    t_spawn, t_end = time.perf_counter(), None  # the session: from the first process started to the last ended
    common += ["--allow-download"] if args.allow_download else []
    procs: dict[str, subprocess.Popen] = {
        "solver": _spawn("solver", ["solver", "--config", str(cfg_path), *common], logs, args.threads),
        "coordinator": _spawn("coordinator", ["coordinator", "--config", str(cfg_path)], logs, args.threads),
    }
    for name in names:
        req_path = write_jsonl(shares[name], touch_private(work / f"requests-{name}.jsonl"))  # "w" keeps 0600
        outputs = (["--served-eval"] if served else ["--patch", str(work / f"patch-{name}.safetensors")])
        procs[f"party-{name}"] = _spawn(f"party-{name}", [
            "party", "--config", str(cfg_path), "--name", name, "--requests", str(req_path),
            "--json", str(work / f"report-{name}.json"), *outputs, *common], logs, args.threads)
    console.print(f"session {cfg.session.id}: {args.mode}, {args.variant}, {args.parties} parties × "
                  f"{args.edits_per_party} edits, {args.backend}, layers {list(layers)}, defence {defence.spec()}, "
                  f"release {args.release}; work dir {work}")
    asked: dict[str, Any] = {}  # served: one query per party, asked once its party process ended

    reference: dict[str, Any] = {}

    def compute_reference() -> None:
        try:
            # the solver's rank truncation is reproducible; the parties' camouflage, decoy edits and noise are not
            # (secret), so with any of them the comparison shows how far it moves ΔW from Global-Edit's
            if net is not None:
                from secure_collab.editing.malmen.edit import run_malmen_edit

                reference["outcome"] = run_malmen_edit(lm, list(shares.values()), net, "global")
                return
            reference["outcome"] = run_edit(lm, list(shares.values()), hp, covs, "global", templates,
                                            defence=replace(defence, camouflage=0.0, noise=0.0, decoys=0))
        except BaseException as exc:  # reported below
            reference["error"] = exc

    ref_thread = None
    if not args.no_reference:
        ref_thread = threading.Thread(target=compute_reference, name="global-edit", daemon=True)
        ref_thread.start()

    from solver.state import released_steps

    releases_dir = cfg.solver_dir
    n_steps = len(layers) * cfg.session.protocol_rounds
    deadline = time.monotonic() + args.timeout
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        t_rel = progress.add_task("ΔW released", total=n_steps)
        t_done = progress.add_task("processes finished", total=len(procs))
        t_ref = progress.add_task("Global-Edit reference", total=1) if ref_thread else None
        while True:
            progress.update(t_rel, completed=released_steps(releases_dir))
            progress.update(t_done, completed=sum(p.poll() is not None for p in procs.values()))
            if t_ref is not None and ref_thread is not None:
                progress.update(t_ref, completed=int(not ref_thread.is_alive()))
            parties_ended = all(p.poll() is not None for role, p in procs.items() if role.startswith("party-"))
            if (served and parties_ended and not asked and procs["coordinator"].poll() is None
                    and all(p.returncode == 0 for role, p in procs.items() if role.startswith("party-"))):
                asked.update(_ask_served(cfg, names, shares))  # then each party says it is done: serving ends
            ended = all(p.poll() is not None for p in procs.values())
            t_end = t_end or (time.perf_counter() if ended else None)
            if ended and not (ref_thread and ref_thread.is_alive()):
                break
            if time.monotonic() > deadline:
                for p in procs.values():
                    p.kill()
                console.print("[red]demo: timed out; processes killed")
                break
            others = [p for role, p in procs.items() if role != "coordinator"]
            if procs["coordinator"].poll() is None and all(p.poll() is not None for p in others) and any(
                    p.returncode != 0 for p in others):  # nobody left to join: the coordinator would only wait
                procs["coordinator"].terminate()
                console.print(f"[red]demo: every other role ended and one failed; coordinator stopped (logs: {logs})")
            time.sleep(0.1)
    codes = {role: p.wait() for role, p in procs.items()}
    result = _collect(args, work, names, cfg, codes, reference, t0)
    if served:
        result.update(_served_check(lm, asked, reference, args.no_reference))
        result["ok"] = result["ok"] and (args.no_reference or result["served_vs_global_logprob_diff"] is not None)
    result["session_seconds"] = (t_end or time.perf_counter()) - t_spawn
    _show(console, result)
    write_json(args, result, private=True)  # per-party reports and edit counts
    return 0 if result["ok"] else 1


def _ask_served(cfg, names: list[str], shares: dict[str, list]) -> dict[str, Any]:
    """Served release: each party asks the served model for its first edit's [new, true] log-probabilities (as
    `secure-collab query` does), then says it is done."""
    from parties.queries import QueryClient

    asked: dict[str, Any] = {}
    for name in names:
        r = shares[name][0]
        query = {"kind": "logprobs", "prompt": r.text,
                 "candidates": [r.target_new] + ([r.target_true] if r.target_true else [])}
        with QueryClient(cfg, name) as client:
            asked[name] = {"query": query, "answer": client.ask(query, 120.0)}
            client.ask({"kind": "done"}, 120.0)
    return asked


def _served_check(lm, asked: dict[str, Any], reference: dict, skipped: bool) -> dict[str, Any]:
    """The largest difference between a served answer and the same query on the Global-Edit model (the reference
    edits ``lm`` in place), in log-probability; None when there is no reference or an answer is missing."""
    from secure_collab.evaluation.served import candidate_logprobs

    diff = None
    answers = [a for a in asked.values() if a["answer"]["ok"]]
    if not skipped and "outcome" in reference and answers and len(answers) == len(asked):
        diff = max(abs(got - want) for a in answers for got, (want, _) in zip(
            a["answer"]["logprobs"], candidate_logprobs(lm.model, lm.tokenizer, a["query"]["prompt"],
                                                        a["query"]["candidates"]), strict=True))
    return {"release": "served", "served_vs_global_logprob_diff": diff, "parties_applied_identical_updates": None,
            "served_queries": {n: {"ok": a["answer"]["ok"], "used": a["answer"].get("used")}
                               for n, a in asked.items()}}


def _collect(args, work: Path, names: list[str], cfg, codes: dict[str, int], reference: dict,
             t0: float) -> dict[str, Any]:
    import torch

    from secure_collab.editing.memit import rel_diff_per_layer
    from secure_collab.evaluation import score_of
    from secure_collab.patch import read_patch

    reports: dict[str, dict[str, Any]] = {}
    for name in names:
        path = work / f"report-{name}.json"
        reports[name] = json.loads(path.read_text()) if path.is_file() else {"ok": False, "reason": "no report"}
    ok = all(c == 0 for c in codes.values()) and all(r.get("ok") for r in reports.values())
    patches = {n: read_patch(work / f"patch-{n}.safetensors").deltas for n in names
               if (work / f"patch-{n}.safetensors").is_file()}
    applied = {}
    if patches:
        first = next(iter(patches.values()))
        applied = {layer: v for (r, layer), v in first.items() if r == 0}
    agree = len(patches) == len(names) and all(
        set(p) == set(first) and all(torch.equal(p[k], first[k]) for k in p) for p in patches.values())
    diff, per_layer = None, None
    if "outcome" in reference and applied:
        per_layer = rel_diff_per_layer(applied, {k: v.cpu() for k, v in reference["outcome"].deltas.items()})
        diff = max(per_layer.values())
    elif "error" in reference:
        ok = False

    def pooled(which: str, metric: str) -> float | None:
        num = den = 0.0
        for r in reports.values():
            value = (r.get(which) or {}).get(metric)
            count = (r.get("counts") or {}).get(metric, r.get("edits", 0))
            if value is not None and count:
                num, den = num + value * count, den + count
        return None if den == 0 else num / den

    post = {m: pooled("post", m) for m in METRICS[:3]}
    pre = {m: pooled("pre", m) for m in METRICS[:3]}
    post["score"], pre["score"] = score_of(list(post.values())), score_of(list(pre.values()))
    return {
        "ok": ok, "backend": cfg.session.backend, "mode": args.mode, "variant": args.variant,
        "defence": parse_defence(cfg.session.defence).spec(),
        "release": cfg.session.release,
        "parties": args.parties,
        "edits": args.parties * args.edits_per_party, **post, "pre": pre,
        "delta_rel_diff_vs_global": diff,
        "delta_rel_diff_per_layer": None if per_layer is None else {str(k): v for k, v in per_layer.items()},
        "parties_applied_identical_updates": agree,
        "bytes_to_coordinator": {n: r.get("bytes_sent") for n, r in reports.items()},
        "bytes_from_coordinator": {n: r.get("bytes_received") for n, r in reports.items()},
        "seconds": time.perf_counter() - t0, "model": args.model, "threads": args.threads,
        "in_turn": bool(args.in_turn), "session": cfg.session.id, "exit_codes": codes,
        "per_party": reports, "ledger": str(cfg.paths.ledger), "workdir": str(work),
        "reference_error": repr(reference["error"]) if "error" in reference else None,
    }


def _show(console, r: dict[str, Any]) -> None:
    from rich.table import Table

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.2f}"

    table = Table(title=f"session {r['session']}: {r['mode']} / {r['variant']}, {r['parties']} parties")
    for col in ("party", "edits", "efficacy", "general.", "specificity", "MB sent", "seconds"):
        table.add_column(col, justify="left" if col == "party" else "right")
    for name, rep in r["per_party"].items():
        pre, post = rep.get("pre") or {}, rep.get("post") or {}
        table.add_row(name, str(rep.get("edits", "-")),
                      *[f"{f(pre.get(m))}→{f(post.get(m))}" for m in METRICS[:3]],
                      f"{(rep.get('bytes_sent') or 0) / 1e6:.1f}", f"{rep.get('seconds') or 0:.0f}")
    table.add_row("all", str(r["edits"]), *[f"{f(r['pre'][m])}→{f(r[m])}" for m in METRICS[:3]], "", "")
    console.print(table)
    d = r["delta_rel_diff_vs_global"]
    spec = parse_defence(r["defence"])
    if not spec.none:
        console.print(f"defence {spec.spec()}" + (": Global-Edit truncated to the same rank" if spec.rank else "")
                      + ("; the parties' camouflage (secret decoys) is not in Global-Edit, so ΔW differs from it"
                         if spec.camouflage else "")
                      + ("; the parties' clipping and secret noise are not in Global-Edit, so ΔW differs from it"
                         if spec.noise else "")
                      + ("; the parties' secret decoy edits are not in Global-Edit, so ΔW differs from it"
                         if spec.decoys else ""))
    if r.get("release") == "served":
        s = r.get("served_vs_global_logprob_diff")
        console.print(f"served release: no party holds ΔW; served answers vs the Global-Edit model: max |Δ log P| "
                      f"{'-' if s is None else f'{s:.2e}'}; efficacy measured through queries; {r['seconds']:.0f} s; "
                      f"{'ok' if r['ok'] else 'FAILED: see ' + r['workdir'] + '/logs'}")
    else:
        console.print(f"ΔW applied vs Global-Edit: {'-' if d is None else f'{d:.2e}'}; parties applied identical "
                      f"updates: {r['parties_applied_identical_updates']}; {r['seconds']:.0f} s; "
                      f"{'ok' if r['ok'] else 'FAILED: see ' + r['workdir'] + '/logs'}")
    console.print(f"ledger: {r['ledger']}  (secure-collab ledger show --ledger {r['ledger']})")
