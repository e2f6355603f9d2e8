"""Optimise and cache the targets z* of some request files ahead of a sweep or an experiment grid (resumable).

    python benchmarks/warm_targets.py --model smollm2-135m ../shared/data/counterfact.json:0:140 \
        ../shared/data/zsre_mend_train_1k.json:0:100

Each argument is FILE[:START[:STOP]] (record indices, Python slice). Targets depend only on the unedited model,
the request, the context templates and the target hyper-parameters, so later runs with any λ, covariance,
method or party split find them in the cache (``secure_collab.editing.target_cache``).
"""

from __future__ import annotations

import argparse
import time

import torch

from secure_collab.cli.edit import load_request_set
from secure_collab.editing.hparams import auto_request_batch, default_hparams
from secure_collab.editing.target_cache import cached_targets, weights_digest
from secure_collab.editing.templates import context_templates
from secure_collab.models import load_model
from secure_collab.models.specs import n_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", metavar="FILE[:START[:STOP]]")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=10, help="requests per progress line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    hp = default_hparams(args.model, n_layers(lm.model, lm.spec)).with_(request_batch=auto_request_batch(
        lm.device.type))
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed)
    digest = weights_digest(lm)
    for spec in args.sets:
        path, *bounds = spec.split(":")
        start = int(bounds[0]) if bounds else 0
        stop = int(bounds[1]) if len(bounds) > 1 else None
        requests = load_request_set(path, None, stop)[start:]
        for s in range(0, len(requests), args.chunk):
            t = time.perf_counter()
            part = cached_targets(lm, requests[s:s + args.chunk], hp, templates, model_digest=digest)
            print(f"{path} [{start + s}:{start + s + len(part.loss)}] {time.perf_counter() - t:.0f} s, "
                  f"steps {part.steps}", flush=True)


if __name__ == "__main__":
    main()
