"""`secure-collab malmen train`: meta-train MALMEN's hypernetwork on public records (resumable, cached)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "MALMEN's hypernetwork: meta-train it on public records (train)"

TRAIN_DEFAULT = "../shared/data/counterfact_mend/counterfact-train.json"
VAL_DEFAULT = "../shared/data/counterfact_mend/counterfact-val.json"


def add_backend_arguments(p: argparse.ArgumentParser, default: str = "memit", digest: bool = True,
                          pinned: bool = False) -> None:
    """--backend memit|malmen and --hypernet DIR (with --hypernet-digest where the command loads the network itself;
    ``pinned``: the session file pins its digest): the one set of options every command that edits takes."""
    p.add_argument("--backend", choices=("memit", "malmen"), default=default,
                   help="editing backend: MEMIT (per-edit target optimisation) or MALMEN (a trained hypernetwork, "
                        "--hypernet; docs/malmen.md)")
    p.add_argument("--hypernet", default=None, metavar="DIR",
                   help="malmen: a trained hypernetwork (`secure-collab malmen train`'s run or hypernet directory)"
                        + (", pinned by digest in the session file" if pinned else "")
                        + " (default: the one bundled for the model, smollm2-135m only)")
    if digest:
        p.add_argument("--hypernet-digest", default=None,
                       help="malmen: refuse a hypernetwork whose digest is not this one (default: the one it records)")


def resolve_hypernet(args: argparse.Namespace) -> None:
    """``--backend malmen`` without ``--hypernet``: the hypernetwork bundled for ``--model`` where there is one
    (otherwise the command's own check asks for ``--hypernet``)."""
    from secure_collab.editing.malmen.net import bundled_hypernet

    if getattr(args, "backend", "memit") == "malmen" and not args.hypernet:
        bundled = bundled_hypernet(getattr(args, "model", ""))
        if bundled is not None:
            args.hypernet = str(bundled)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option
    from secure_collab.cli._roles import THREADS_HELP
    from secure_collab.cli.stats import parse_layers
    from secure_collab.editing.malmen.train import TrainConfig

    d = TrainConfig()
    sub = parser.add_subparsers(dest="malmen_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("train", help="meta-train the hypernetwork; an interrupted run resumes from its checkpoint",
                       description="Meta-train MALMEN's hypernetwork for a model on public records (never on "
                                   "evaluation records). The run directory is keyed by the digests of the model, "
                                   "the records and the configuration: the same command resumes an interrupted "
                                   "run and returns a finished one at once.")
    p.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m, tiny-gpt2, tiny-llama, a directory or a hub id")
    p.add_argument("--out", default=None,
                   help="run directory (default: <cache>/malmen/<model>-<run key>)")
    p.add_argument("--train", action="append", default=None, metavar="FILE",
                   help=f"training records, CounterFact (MEND) or zsRE; repeat to combine (default: {TRAIN_DEFAULT})")
    p.add_argument("--train-limit", type=int, default=None, help="first N records of each training file (default: all)")
    p.add_argument("--val", default=VAL_DEFAULT, metavar="FILE", help="validation records for the curve")
    p.add_argument("--layers", type=parse_layers, default=None,
                   help="edited layers, e.g. 24-29 (default: the model's, else its last six)")
    p.add_argument("--rank", type=int, default=None, help="rank of each hypernetwork block (default: the model's)")
    p.add_argument("--blocks", type=int, default=None, help="hypernetwork blocks (default: the model's)")
    p.add_argument("--steps", type=int, default=d.steps, help="meta-training steps")
    p.add_argument("--edits-per-step", type=int, default=d.edits_per_step, help="edits solved together per step")
    p.add_argument("--meta-lr", type=float, default=d.meta_lr, help="Adam learning rate")
    p.add_argument("--loc-coef", type=float, default=d.loc_coef, help="weight of the locality KL")
    p.add_argument("--val-every", type=int, default=d.val_every, help="validate every N steps (0: at the end)")
    p.add_argument("--val-edits", type=int, default=d.val_edits, help="validation edits")
    p.add_argument("--norm-edits", type=int, default=d.norm_edits, help="edits that fit the frozen normaliser")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=d.seed, help="batch order seed")
    p.add_argument("--cache-dir", default=None, help="cache root (default $SECURE_COLLAB_CACHE or ~/.cache)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    from secure_collab.cache import cache_dir
    from secure_collab.cli._output import say, write_json
    from secure_collab.cli._roles import set_threads
    from secure_collab.data.formats import detect_format, load_requests
    from secure_collab.editing.malmen.hparams import default_malmen_hparams
    from secure_collab.editing.malmen.train import TrainConfig
    from secure_collab.editing.malmen.trainer import run_key, train_hypernet
    from secure_collab.errors import UserError
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers
    from secure_collab.progress import progress

    set_threads(args.threads)
    cache = Path(args.cache_dir) if args.cache_dir else None
    lm = load_model(args.model, device=args.device, cache=cache, allow_download=args.allow_download)
    hp = default_malmen_hparams(args.model, n_layers(lm.model, lm.spec))
    changes = {k: v for k, v in (("layers", tuple(args.layers) if args.layers else None), ("rank", args.rank),
                                 ("n_blocks", args.blocks)) if v is not None}
    hp = hp.with_(**changes)
    cfg = TrainConfig(steps=args.steps, edits_per_step=args.edits_per_step, meta_lr=args.meta_lr,
                      loc_coef=args.loc_coef, val_every=args.val_every, val_edits=args.val_edits,
                      norm_edits=args.norm_edits, checkpoint_every=args.checkpoint_every, seed=args.seed)
    train_files = args.train or [TRAIN_DEFAULT]
    by_file = [load_requests(f, limit=args.train_limit, skip_invalid=True) for f in train_files]
    train = [r for reqs in by_file for r in reqs]
    val = load_requests(args.val, skip_invalid=True)
    # case ids are only comparable within one data set (zsRE numbers its records 0, 1, ...): compare the
    # validation records with the training files of the same format
    val_fmt = detect_format(args.val)
    seen = {r.case_id for f, reqs in zip(train_files, by_file, strict=True) if detect_format(f) == val_fmt
            for r in reqs if r.case_id is not None} & {r.case_id for r in val if r.case_id is not None}
    if seen and args.val == VAL_DEFAULT:
        raise UserError(f"{len(seen)} validation case ids are also training records: validation must be held out")
    key = run_key(lm.source_digest, train, val, hp, cfg)
    out = Path(args.out) if args.out else cache_dir(cache) / "malmen" / f"{lm.name.replace('/', '_')}-{key[:16]}"
    say(args, f"MALMEN meta-training: {len(train)} training records, {len(val)} validation, layers "
              f"{list(hp.layers)}, rank {hp.rank} x {hp.n_blocks} blocks, {cfg.steps} steps -> {out}")
    with progress("malmen train", total=cfg.steps, unit="steps", enabled=not args.quiet) as advance:
        result = train_hypernet(lm, hp, cfg, train, val, out, progress=advance)
    last = result.history[-1] if result.history else {}
    secs = [h["seconds"] for h in result.history if "seconds" in h]
    say(args, f"{'cached' if result.cached else 'trained'}: digest {result.hypernet.digest()}  "
              f"{sum(secs) / max(1, len(secs)):.2f} s/step  kept step {result.selected_step} (lowest validation "
              f"meta loss)  curve {out / 'curve.png'}")
    write_json(args, {"model": args.model, "model_digest": lm.source_digest, "directory": str(out), "key": key,
                      "digest": result.hypernet.digest(), "cached": result.cached, "steps": len(result.history),
                      "seconds_per_step": sum(secs) / max(1, len(secs)), "last": last, "hp": hp.to_dict(),
                      "selected_step": result.selected_step})
    return 0
