"""Seconds per edit for the target optimisation: all requests in one batch vs one request at a time.

    python benchmarks/targets_speed.py --model smollm2-135m --limit 8 --threads 1 \
        --json benchmarks/results/targets_speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from secure_collab.cli.edit import load_request_set
from secure_collab.editing.hparams import default_hparams
from secure_collab.editing.targets import compute_targets
from secure_collab.editing.templates import context_templates
from secure_collab.models import load_model
from secure_collab.models.specs import n_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", default="../shared/data/counterfact.json")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    requests = load_request_set(args.requests, None, args.limit)
    lm = load_model(args.model)
    hp = default_hparams(args.model, n_layers(lm.model, lm.spec))
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed)
    t = time.perf_counter()
    batched = compute_targets(lm, requests, hp, templates, progress=True)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    singles = [compute_targets(lm, [r], hp, templates) for r in requests]
    t_single = time.perf_counter() - t
    diff = max(float((batched.z[j] - s.z[0]).norm() / s.z[0].norm()) for j, s in enumerate(singles))
    result = {"model": args.model, "edits": len(requests), "threads": args.threads,
              "batched_seconds_per_edit": t_batched / len(requests),
              "single_seconds_per_edit": t_single / len(requests),
              "steps_batched": batched.steps, "final_loss": batched.loss,
              "max_rel_diff_batched_vs_single": diff}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
