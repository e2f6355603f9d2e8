"""The real protection schemes in a networked session: ΔW against the single-process one."""

from __future__ import annotations

import numpy as np
import pytest
from network_doubles import make_config, reference_deltas, run_session

from secure_collab.protection import get_scheme


@pytest.mark.parametrize("mode, tolerance", [("plain", 1e-12), ("shares", 1e-12), ("ckks", 1e-6)])
@pytest.mark.parametrize("variant", ["sequential", "oneshot"])
def test_session_with_real_scheme(tmp_path, mode, tolerance, variant):
    cfg = make_config(tmp_path, mode=mode, variant=variant, value_bound=1000.0,
                      network={"max_message_bytes": 64 << 20})
    run = run_session(cfg, scheme=get_scheme(mode), timeout=120)
    assert run.outcome.ok, run.outcome.reason
    for key, delta in reference_deltas(cfg, ["a", "b", "c"]).items():
        got = run.solver.releases[key]
        assert np.linalg.norm(got - delta) <= tolerance * np.linalg.norm(delta), (mode, key)
