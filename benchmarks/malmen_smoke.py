"""MALMEN on SmolLM2-135M: seconds per meta-training step and per edit's statistics (a smoke run, not training).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/malmen_smoke.py --steps 6 --out /tmp/malmen-smoke

Trains ``--steps`` steps of 8 edits on the first 400 counterfact-train records with the model's default
hyper-parameters (one torch thread), prints each step's record, then times ``party_statistics`` on 8 validation
edits. Resumable like any training run (same ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from secure_collab.data.formats import load_requests
from secure_collab.editing.malmen.edit import party_statistics
from secure_collab.editing.malmen.hparams import default_malmen_hparams
from secure_collab.editing.malmen.train import TrainConfig
from secure_collab.editing.malmen.trainer import train_hypernet
from secure_collab.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default="../shared/data/counterfact_mend")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    lm = load_model("smollm2-135m", device="cpu")
    print("load", round(time.perf_counter() - t, 2), flush=True)
    hp = default_malmen_hparams("smollm2-135m")
    train = load_requests(f"{args.data}/counterfact-train.json", limit=400)
    val = load_requests(f"{args.data}/counterfact-val.json", limit=8)
    cfg = TrainConfig(steps=args.steps, edits_per_step=8, meta_lr=1e-4, norm_edits=32, val_every=0, val_edits=8,
                      checkpoint_every=1)
    t = time.perf_counter()
    res = train_hypernet(lm, hp, cfg, train, val, Path(args.out))
    print("train total", round(time.perf_counter() - t, 2), flush=True)
    for h in res.history:
        print(json.dumps(h), flush=True)
    t = time.perf_counter()
    party_statistics(lm, res.hypernet, val[:8])
    s = time.perf_counter() - t
    print(f"party statistics: {s:.2f} s for 8 edits = {s / 8:.3f} s/edit", flush=True)


if __name__ == "__main__":
    main()
