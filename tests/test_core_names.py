"""One name per meaning in the core (secure_collab/) and the roles (parties/, coordinator/, solver/): one spelling
of a round index, one meaning of "engine", one word for a frame's value count."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "secure_collab"
ROLES = tuple(ROOT / name for name in ("parties", "coordinator", "solver"))


def _trees(*packages: Path):
    for package in packages or (CORE,):
        for path in sorted(package.rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(), str(path))


def test_a_round_index_is_spelled_round_underscore():
    """``round`` is the builtin: a parameter, local or loop variable holding a round index is ``round_`` (fields
    such as ``Request.round`` are attributes and shadow nothing)."""
    bad = []
    for rel, tree in _trees(CORE, *ROLES):
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


def test_a_frames_value_count_is_frame_values():
    """"chunk" is a chunk of a statistic (its index, ``chunk_values`` per chunk); the values of one payload data
    frame are ``frame_values`` (the wire key stays "chunk"): the old names for that count are gone from
    protection/, protocol/ and the roles."""
    old = {"CHUNK", "_chunk", "chunk_frames"}
    bad = []
    for rel, tree in _trees(CORE / "protection", CORE / "protocol", *ROLES):
        for node in ast.walk(tree):
            name = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "name", None)
            if isinstance(node, ast.arg):
                name = node.arg
            if name in old:
                bad.append(f"{rel}:{node.lineno} {name}")
    assert not bad, bad
