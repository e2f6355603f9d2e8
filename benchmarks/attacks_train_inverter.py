"""Train (or resume) the SmolLM2 key inverter on public Wikipedia sentences; cached by what it was trained on.

    nohup flock /tmp/sc-heavy.lock nice -n 5 env OMP_NUM_THREADS=1 \
        .venv/bin/python benchmarks/attacks_train_inverter.py > /tmp/attacks-inverter.log 2>&1 &

`secure-collab attack --attack inverter` finds the same cache entry (same model, layer, templates, config).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sentences", type=int, default=None, help="training sentences (default: the config's)")
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    from dataclasses import replace

    from attacks.inverter import InverterConfig, train_inverter
    from attacks.views import public_setup
    from secure_collab.data.corpus import open_corpus

    t0 = time.monotonic()
    setup = public_setup(args.model)
    cfg = InverterConfig()
    if args.sentences:
        cfg = replace(cfg, n_sentences=args.sentences)
    if args.epochs:
        cfg = replace(cfg, epochs=args.epochs)
    inv = train_inverter(setup.lm, setup.hp.layers[0], setup.templates, list(open_corpus().texts()), cfg,
                         say=lambda m: print(m, flush=True))
    print({k: v for k, v in inv.meta.items() if not k.startswith("val_")}, f"{time.monotonic() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
