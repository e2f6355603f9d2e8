"""Where a MALMEN meta-training step on SmolLM2-135M spends its time (one thread; 8 edits; ranks 64 and 16).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/malmen_step_breakdown.py
"""

from __future__ import annotations

import time

import torch

from secure_collab.data.formats import load_requests
from secure_collab.editing.malmen.edit import layer_shapes
from secure_collab.editing.malmen.hparams import default_malmen_hparams
from secure_collab.editing.malmen.net import Hypernet
from secure_collab.editing.malmen.rows import edit_rows
from secure_collab.editing.malmen.train import backward_through_solve, meta_loss, solve_shifts
from secure_collab.models import load_model


def main() -> None:
    torch.set_num_threads(1)
    lm = load_model("smollm2-135m", device="cpu")
    train = load_requests("../shared/data/counterfact_mend/counterfact-train.json", limit=200)
    for rank in (64, 16):
        hp = default_malmen_hparams("smollm2-135m").with_(rank=rank)
        net = Hypernet(hp, layer_shapes(lm, hp.layers))
        rows = edit_rows(lm, train[:16], hp.layers)
        net.net(hp.layers[0]).normaliser.fit(torch.cat([torch.cat((rows.u[la], rows.g[la]), 1) for la in hp.layers]))
        for rep in range(2):
            batch = train[20 + 8 * rep : 28 + 8 * rep]
            t0 = time.perf_counter()
            rows = edit_rows(lm, batch, hp.layers)
            t1 = time.perf_counter()
            shifts, chols = solve_shifts(net, rows)
            t2 = time.perf_counter()
            leaves = {la: s.detach().requires_grad_(True) for la, s in shifts.items()}
            with torch.enable_grad():
                loss, _, _ = meta_loss(lm, batch, leaves, 1.0)
                grads = torch.autograd.grad(loss, [leaves[la] for la in hp.layers])
            t3 = time.perf_counter()
            with torch.enable_grad():
                backward_through_solve(net, rows, shifts, chols, dict(zip(hp.layers, grads, strict=True)))
            t4 = time.perf_counter()
            print(f"rank {rank} rep {rep}: {rows.n_rows} rows for 8 edits; edit_rows {t1 - t0:.2f} s, solve "
                  f"{t2 - t1:.2f} s, meta-loss forward+backward {t3 - t2:.2f} s, stage 2 {t4 - t3:.2f} s, "
                  f"total {t4 - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
