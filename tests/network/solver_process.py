"""`python solver_process.py CONFIG`: the real solver (closed-form solve of the synthetic engine) as a process.

Prints one JSON line when the session ends: its outcome, every ΔW it released (small synthetic layers),
the (round, layer) of every solve it ran and every refusal (VERDICT) it sent.
"""

import json
import sys

from network_doubles import closed_form_solve

from secure_collab.config import load_config
from secure_collab.protection import get_scheme
from solver.server import run_solver

if __name__ == "__main__":
    cfg = load_config(sys.argv[1])
    calls = []

    def solve(round_, layer, g, b, past_g=None):
        calls.append([round_, layer])
        return closed_form_solve(round_, layer, g, b, past_g)

    result = run_solver(cfg, get_scheme(cfg.session.mode), solve)
    print(json.dumps({"ok": result.ok, "reason": result.reason, "solve_calls": calls,
                      "releases": {f"{r}/{lay}": d.tolist() for (r, lay), d in result.releases.items()},
                      "verdicts": result.verdicts}))
