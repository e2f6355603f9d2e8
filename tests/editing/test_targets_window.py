"""The windowed replay of the target optimisation equals the full replay (float64, both tiny architectures).

The reference tests (test_reference.py) hold the default path, the window, against the independent reference
MEMIT one request at a time; these add the batched case, where requests stop early and leave the batch (the
window's cache prefix and masks are then sliced by row), and check that the window is really taken.
"""

from __future__ import annotations

import torch

from secure_collab.editing import targets as tg
from secure_collab.editing.hparams import DEFAULTS

TEMPLATES = ["{}", "Hello there. {}", "Once upon a time, long ago. {}"]
TOL = 1e-12


def test_window_replays_fewer_positions(tiny, capitals):
    hp = DEFAULTS[tiny.name]
    p = tg._prepare(tiny, capitals, hp, TEMPLATES)
    window = tg._UpperStack(tiny, hp.layers[-1], p, window=True)
    full = tg._UpperStack(tiny, hp.layers[-1], p, window=False)
    assert window.cache is not None and full.cache is None
    assert window.h0.shape[1] < full.h0.shape[1] == p.input_ids.shape[1]
    assert torch.equal(window.col0, p.lookup)  # each row's window starts where δ is added


def test_window_equals_full_replay_with_early_stops(tiny, capitals):
    base = DEFAULTS[tiny.name].with_(request_batch=0, v_num_grad_steps=8)
    probe = tg.compute_targets(tiny, capitals, base, TEMPLATES, window=False)
    # an early-stop loss that some requests reach before the last step and others do not
    hp = base.with_(v_loss_early_stop=float(torch.tensor(probe.loss).median()))
    full = tg.compute_targets(tiny, capitals, hp, TEMPLATES, window=False)
    window = tg.compute_targets(tiny, capitals, hp, TEMPLATES, window=True)
    assert len(set(full.steps)) > 1, "the case needs requests that leave the batch early"
    assert window.steps == full.steps
    rel = (window.z - full.z).norm(dim=1) / full.z.norm(dim=1)
    assert float(rel.max()) <= TOL
    assert max(abs(a - b) for a, b in zip(window.loss, full.loss, strict=True)) <= TOL
