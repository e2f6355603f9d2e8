"""`secure-collab edit --backend malmen`: the single-machine simulation of a collaborative MALMEN edit.

Same requests, parties, methods (global | collab | ta | sa | ties), metrics, comparison with Global-Edit and
``--save`` as MEMIT's edit; the hypernetwork is a trained one (``--hypernet``, from `secure-collab malmen train`),
checked against its digest. Options that only MEMIT has (λ, covariance, targets, templates, rounds, update rules,
lockstep merges) are refused rather than silently ignored.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

MEMIT_ONLY = (("lam", "--lambda"), ("steps", "--steps"), ("variant", "--variant"), ("tokens", "--tokens"),
              ("corpus", "--corpus"), ("template_seed", "--template-seed"), ("past_weight", "--past-weight"),
              ("nullspace_threshold", "--nullspace-threshold"), ("alphaedit_l2", "--alphaedit-l2"))


def run_malmen_edit_cli(args: argparse.Namespace, requests: list, console: Any, t_start: float) -> int:
    from secure_collab.cli._edit_common import edit_result, finish, reference_then_edit
    from secure_collab.editing.malmen.edit import METHODS, run_malmen_edit
    from secure_collab.editing.malmen.net import load_hypernet
    from secure_collab.editing.memit import snapshot, split_parties
    from secure_collab.errors import ConfigError
    from secure_collab.evaluation import evaluate
    from secure_collab.models import load_model

    given = [flag for attr, flag in MEMIT_ONLY if getattr(args, attr, None) is not None]
    if args.rounds != 1 or args.update_rule != "memit-static":
        given.append("--rounds/--update-rule")
    if given:
        raise ConfigError(f"{', '.join(given)}: MEMIT options, not used by --backend malmen")
    if args.method not in METHODS:
        raise ConfigError(f"--method {args.method} is not available with --backend malmen; one of {', '.join(METHODS)}")
    if not args.hypernet:
        raise ConfigError("--backend malmen needs --hypernet DIR: a hypernetwork from `secure-collab malmen train`")
    if args.parties < 1 or args.parties > len(requests):
        raise ConfigError(f"--parties must be between 1 and the number of requests ({len(requests)})")
    with console.status(f"loading {args.model}"):
        lm = load_model(args.model, device=args.device, cache=args.cache_dir, dtype=args.dtype,
                        allow_download=args.allow_download)
    try:
        net = load_hypernet(Path(args.hypernet), args.hypernet_digest, next(lm.model.parameters()).dtype, lm.device,
                            lm.source_digest)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    layers = net.hp.layers
    if args.layers is not None and tuple(args.layers) != layers:
        raise ConfigError(f"--layers {args.layers}: the hypernetwork edits layers {list(layers)}")
    console.print(f"model {args.model} on {lm.device}, MALMEN layers {list(layers)}, hypernetwork "
                  f"{net.digest()[:16]}…, {len(requests)} requests, {args.parties} parties, method {args.method}")
    with console.status("evaluating before the edit"):
        pre = evaluate(lm, requests)
    parties = split_parties(requests, args.parties)
    saved = snapshot(lm, layers)
    outcome, reference, t_edit = reference_then_edit(args, lm, saved, console.log,
                                                     lambda method: run_malmen_edit(lm, parties, net, method))
    with console.status("evaluating after the edit"):
        post = evaluate(lm, requests)
    result = edit_result(args, lm, requests, pre, post, outcome.deltas,
                         None if reference is None else reference.deltas, t_start, t_edit,
                         backend="malmen", variant="oneshot", rows=sum(outcome.rows), hparams=net.hp.to_dict(),
                         hypernet_digest=net.digest())
    return finish(args, console, lm, outcome.deltas, result)
