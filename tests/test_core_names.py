"""One name per meaning in the core (secure_collab/): one spelling of a round index, one meaning of "engine"."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "secure_collab"


def _trees():
    for path in sorted(CORE.rglob("*.py")):
        yield path.relative_to(CORE.parent), ast.parse(path.read_text(), str(path))


def test_a_round_index_is_spelled_round_underscore():
    """``round`` is the builtin: a parameter, local or loop variable holding a round index is ``round_`` (fields
    such as ``Request.round`` are attributes and shadow nothing)."""
    bad = []
    for rel, tree in _trees():
        fields = {id(st.target) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)
                  for st in cls.body if isinstance(st, ast.AnnAssign)}  # dataclass fields: attributes
        for node in ast.walk(tree):
            if id(node) in fields:
                continue
            if isinstance(node, ast.arg) and node.arg == "round":
                bad.append(f"{rel}:{node.lineno} parameter")
            elif isinstance(node, ast.Name) and node.id == "round" and isinstance(node.ctx, ast.Store):
                bad.append(f"{rel}:{node.lineno} assignment")
    assert not bad, bad


def test_engine_is_the_partys_word():
    """"engine" names the party's callbacks (parties.runner.PartyEngine); the solver's side is "solve"
    (solver.solve.SessionSolve): no core name joins the two."""
    bad = []
    for rel, tree in _trees():
        for node in ast.walk(tree):
            name = getattr(node, "name", None) or getattr(node, "id", None) or getattr(node, "attr", None)
            if isinstance(name, str) and "engine" in name.lower() and "solve" in name.lower():
                bad.append(f"{rel}:{node.lineno} {name}")
    assert not bad, bad
