"""Coordinator runtime (ROUTER server that only adds protected payloads) and the solver process."""

from coordinator.server import Coordinator, Outcome, run_coordinator
from coordinator.solver import SolveFn, Solver, SolverResult, run_solver

__all__ = ["Coordinator", "Outcome", "SolveFn", "Solver", "SolverResult", "run_coordinator", "run_solver"]
