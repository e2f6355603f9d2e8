"""Red team 3 (after issue 18, finding 5): the plausibility check is total for NaN and ±inf, but not for extreme
*finite* statistics.

``plausibility_problems`` symmetrises ΣG as ``0.5 * (g + g.T)`` before ``eigvalsh``. For entries of magnitude
above about 9e307 the sum ``g + g.T`` overflows to ±inf, LAPACK returns NaN eigenvalues, and ``NaN < -tol`` is
False: the psd check silently passes. The trace check does not catch these either (its sum is 0 or −inf, never
above κ²N). So a ΣG that is plainly not positive semi-definite (−5e307·I, or eigenvalues ±1e308) is judged
plausible with every finite input the docstring promises to handle ("any input ... gives a list").

Not reachable over the wire with sane settings (opened sums are bounded by P·value_bound and the range check),
but ``config.py`` accepts any finite ``value_bound`` (e.g. 5e307 with 3 parties sets up), and this check is the
stated last line behind the MAC. Fix: symmetrise without overflow (``0.5 * g + 0.5 * g.T``) and treat a
non-finite eigenvalue, trace or norm as a named problem (or refuse |entries| beyond a sane bound).
"""

from __future__ import annotations

import numpy as np
import pytest

from secure_collab.protocol.plausibility import Bounds, plausibility_problems

BOUNDS = Bounds(key_norm=2.0, residual_norm=3.0, max_edits=5)


@pytest.mark.parametrize("g", [
    np.diag([-1e308, -1e308, -1e308]),  # negative definite, trace −inf
    np.array([[0.0, 1e308, 0.0], [1e308, 0.0, 0.0], [0.0, 0.0, 0.0]]),  # eigenvalues ±1e308, trace 0
    np.diag([1e308, -1e308, 0.0]),  # indefinite, trace 0
], ids=["neg-definite", "offdiag", "indefinite"])
def test_redteam3_extreme_finite_sigma_g_that_is_not_psd_is_judged_plausible(g):
    assert np.isfinite(g).all()
    assert float(np.linalg.eigvalsh(g / 1e308)[0]) < 0  # scaled down: plainly not positive semi-definite
    problems = plausibility_problems(g, np.zeros((2, 3)), 2.0, parties=2, bounds=BOUNDS)
    assert problems, "a ΣG with a negative eigenvalue of −1e308 passed every plausibility check"
