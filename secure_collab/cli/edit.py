"""`secure-collab edit`: a single-machine simulation of a collaborative edit (no network), with metrics.

Splits the requests among P parties, computes each party's MEMIT statistics on its own, combines them by the
method (global | collab | ta | sa | ties | *-lockstep), applies the update, evaluates before and after, and
compares the update with the Global-Edit of the same requests (one machine, all requests). Targets z* come from
the engine's target cache: optimised once per request, reused by later runs and by the reference.
"""

from __future__ import annotations

import argparse
import time

HELP = "simulate a collaborative MEMIT or MALMEN edit on one machine; report efficacy, generalization, specificity"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option
    from secure_collab.cli._roles import THREADS_HELP
    from secure_collab.cli.malmen import add_backend_arguments
    from secure_collab.cli.stats import parse_layers
    from secure_collab.editing.memit import METHODS

    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny-gpt2, tiny-llama, a dir or hub id")
    add_backend_arguments(p)
    p.add_argument("--requests", default="bundled",
                   help="request file (CounterFact, MEND CounterFact, zsRE, MQuAKE or JSONL), or 'bundled' "
                        "for the countryinfo set (default)")
    p.add_argument("--format", default=None, help="request format (default: detected)")
    p.add_argument("--limit", type=int, default=None, help="use the first N requests (default: all; 20 bundled)")
    p.add_argument("--parties", type=int, default=4, help="number of parties the requests are split among")
    p.add_argument("--method", choices=METHODS, default="collab", help="how the parties' edits are combined")
    p.add_argument("--rounds", type=int, default=1,
                   help="edit rounds: the requests are split into R rounds (by their 'round' field, else in "
                        "contiguous blocks), each round among the parties; targets are optimised each round on "
                        "the model as it then is")
    p.add_argument("--update-rule", choices=("memit-static", "memit-dynamic", "alphaedit"), default="memit-static",
                   help="how the solver turns the summed statistics into ΔW (secure_collab.editing.rules)")
    p.add_argument("--past-weight", type=float, default=None, help="memit-dynamic's λ_past (default: the model's)")
    p.add_argument("--nullspace-threshold", type=float, default=None,
                   help="alphaedit: eigenvalues of C below this span the null space (default: the model's)")
    p.add_argument("--alphaedit-l2", type=float, default=None, help="alphaedit's ridge term (default: the model's)")
    p.add_argument("--variant", choices=("sequential", "oneshot"), default=None,
                   help="default: the model's tuned default (sequential)")
    p.add_argument("--layers", type=parse_layers, default=None,
                   help="edited layers, e.g. 3-7 (default: the model's tuned layers)")
    p.add_argument("--lambda", dest="lam", type=float, default=None,
                   help="λ, weight of the covariance (default: the model's tuned value)")
    p.add_argument("--steps", type=int, default=None, help="target optimisation steps (default: the model's)")
    p.add_argument("--template-seed", type=int, default=None, help="context template seed (default: 0)")
    p.add_argument("--request-batch", type=int, default=None,
                   help="requests per batch in keys and target optimisation; 0: all. Default: 1 on a CPU "
                        "(as fast there, and every request's arithmetic is independent of the others, so "
                        "collab equals Global-Edit bit for bit), 0 on a GPU")
    p.add_argument("--corpus", default=None, help="covariance corpus: .txt / .jsonl (default: Wikipedia extracts)")
    p.add_argument("--tokens", type=int, default=None, help="covariance token budget (default: the model's)")
    p.add_argument("--dtype", default="auto", help="auto (float64 for tiny models, else float32), float32, float64")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--no-compare", action="store_true", help="skip the Global-Edit reference run")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $SECURE_COLLAB_CACHE or ~/.cache)")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="write the edited model (from_pretrained loads it) and patch.safetensors (the ΔW) here "
                        "(default: not saved)")
    add_json_option(p)


def load_request_set(spec: str, fmt: str | None, limit: int | None):
    from secure_collab.data.bundled import bundled_requests
    from secure_collab.data.formats import load_requests

    if spec == "bundled":
        return bundled_requests(limit or 20)
    return load_requests(spec, fmt=fmt, limit=limit)


def run(args: argparse.Namespace) -> int:
    from secure_collab.cli.malmen import resolve_hypernet

    resolve_hypernet(args)
    from rich.console import Console

    from secure_collab.cli._edit_common import build_hparams, edit_result, finish, reference_then_edit
    from secure_collab.cli._roles import set_threads
    from secure_collab.covariance import layer_covariances
    from secure_collab.editing.memit import run_edit, snapshot, split_parties
    from secure_collab.editing.target_cache import cached_targets
    from secure_collab.editing.templates import context_templates, templates_digest
    from secure_collab.errors import ConfigError
    from secure_collab.evaluation import evaluate
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers

    console = Console(stderr=True, quiet=args.quiet)
    set_threads(args.threads)
    t_start = time.perf_counter()
    requests = load_request_set(args.requests, args.format, args.limit)
    if args.backend == "malmen":
        from secure_collab.cli.edit_malmen import run_malmen_edit_cli

        return run_malmen_edit_cli(args, requests, console, t_start)
    if args.hypernet or args.hypernet_digest:
        raise ConfigError("--hypernet and --hypernet-digest are for --backend malmen")
    if args.rounds != 1 or args.update_rule != "memit-static":
        from secure_collab.cli.edit_rounds import run_rounds_edit

        return run_rounds_edit(args, requests, console, t_start)
    if args.parties < 1 or args.parties > len(requests):
        raise ConfigError(f"--parties must be between 1 and the number of requests ({len(requests)})")
    with console.status(f"loading {args.model}"):
        lm = load_model(args.model, device=args.device, cache=args.cache_dir, dtype=args.dtype,
                        allow_download=args.allow_download)
    hp = build_hparams(args, args.model, n_layers(lm.model, lm.spec), lm.device.type)
    console.print(f"model {args.model} on {lm.device}, layers {list(hp.layers)}, λ={hp.mom2_update_weight:g}, "
                  f"{len(requests)} requests, {args.parties} parties, method {args.method}, {hp.variant}")
    t = time.perf_counter()
    covs = layer_covariances(lm, hp.layers, corpus=args.corpus, tokens=hp.mom2_tokens,
                             max_seq_len=hp.mom2_max_len, cache=args.cache_dir, progress=not args.quiet)
    covs = {k: v.to(lm.device) for k, v in covs.items()}
    t_cov = time.perf_counter() - t
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, args.cache_dir)
    with console.status("evaluating before the edit"):
        pre = evaluate(lm, requests)
    parties = split_parties(requests, args.parties)
    saved = snapshot(lm, hp.layers)

    def say(msg: str) -> None:
        console.log(msg)

    t = time.perf_counter()
    say(f"targets z* for {len(requests)} requests (optimised once per request, cached)")
    targets = cached_targets(lm, requests, hp, templates, args.cache_dir, progress=not args.quiet)
    t_targets = time.perf_counter() - t
    sizes = [len(p) for p in parties if p]
    outcome, reference, t_edit = reference_then_edit(
        args, lm, saved, say, lambda method: run_edit(lm, parties, hp, covs, method, templates, say,
                                                      [targets] if method == "global" else targets.split(sizes)))
    with console.status("evaluating after the edit"):
        post = evaluate(lm, requests)
    result = edit_result(args, lm, requests, pre, post, outcome.deltas,
                         None if reference is None else reference.deltas, t_start, t_edit,
                         variant=hp.variant, covariance_seconds=t_cov, target_seconds=t_targets,
                         hparams=hp.to_dict(), templates_digest=templates_digest(templates),
                         target_loss=[x for t_ in outcome.targets for x in t_.loss],
                         residual_norm=[x for t_ in outcome.targets for x in t_.residual_norm])
    return finish(args, console, lm, outcome.deltas, result)
