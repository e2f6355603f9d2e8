"""Shared fixtures: tiny seeded models (float64, so exactness tests see protocol error, not float32 noise)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# ../shared/data beside the checkout (CI lays it there): real CounterFact / zsRE / MQuAKE records
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

torch.set_num_threads(1)  # tests run beside other processes on a 2-core machine


@pytest.fixture(scope="session", params=["tiny-gpt2", "tiny-llama"])
def tiny(request):
    from secure_collab.models import load_model

    return load_model(request.param)


@pytest.fixture(scope="session")
def capitals():
    from secure_collab.data.requests import Request

    rows = [("France", "Paris", "Rome"), ("Germany", "Berlin", "Madrid"), ("Italy", "Rome", "Oslo"),
            ("Spain", "Madrid", "Paris"), ("Japan", "Tokyo", "Lima"), ("Peru", "Lima", "Tokyo"),
            ("Norway", "Oslo", "Cairo")]
    return [Request(subject=c, prompt="The capital of {} is", target_new=n, target_true=t, case_id=str(i))
            for i, (c, t, n) in enumerate(rows)]


def random_spd(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, 4 * d, generator=g, dtype=torch.float64)
    return a @ a.T / (4 * d)


@pytest.fixture(autouse=True)
def _our_log_levels_back():
    """A command run in-process with -q sets our loggers to WARNING for the whole process (it is meant for a
    process of its own): put them back after each test, so a later test that reads their INFO lines sees them."""
    import logging

    from secure_collab.progress import OUR_LOGGERS

    saved = {name: logging.getLogger(name).level for name in OUR_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
