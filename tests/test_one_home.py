"""One home per concept (issue 19): each concept below is defined, or written out, in its one module only.

The source tree is read with ``ast`` (nothing is imported). To add a concept, add a row to ``CONCEPTS``: a name,
a finder (what counts as a definition or a hand-written copy) and the modules allowed to hold it.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("secure_collab", "parties", "coordinator", "solver", "attacks", "benchmarks")
ROLES = ("parties", "coordinator", "solver")

Finder = Callable[[ast.AST], bool]  # True for a node that defines (or re-writes) the concept


@cache
def _trees() -> dict[str, ast.AST]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[path.relative_to(ROOT).as_posix()] = ast.parse(path.read_text(), str(path))
    return out


def defines(*names: str) -> Finder:
    """A function, class or module-level assignment of one of ``names``."""
    def find(node: ast.AST) -> bool:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return node.name in names
        if isinstance(node, ast.Assign):
            return any(isinstance(t, ast.Name) and t.id in names for t in node.targets)
        if isinstance(node, ast.AnnAssign):
            return isinstance(node.target, ast.Name) and node.target.id in names
        return False
    return find


def calls(name: str) -> Finder:
    """A call of ``name`` (a bare name or an attribute)."""
    def find(node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        f = node.func
        return (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name)
    return find


def constant(test: Callable[[object], bool]) -> Finder:
    """A string or bytes literal (an f-string read as its literal parts) for which ``test`` holds."""
    def find(node: ast.AST) -> bool:
        if isinstance(node, ast.JoinedStr):
            return test("".join(v.value for v in node.values if isinstance(v, ast.Constant)))
        return isinstance(node, ast.Constant) and isinstance(node.value, str | bytes) and test(node.value)
    return find


def sqlite_connect(node: ast.AST) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return (isinstance(f, ast.Attribute) and f.attr == "connect" and isinstance(f.value, ast.Name)
            and f.value.id == "sqlite3")


def dict_with_key(key: str) -> Finder:
    def find(node: ast.AST) -> bool:
        return isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == key for k in node.keys)
    return find


def triangle_arithmetic(node: ast.AST) -> bool:
    """``d * (d + 1) // 2``, the size of a packed upper triangle, written by hand."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.FloorDiv)
            and isinstance(node.right, ast.Constant) and node.right.value == 2):
        return False
    left = node.left
    return (isinstance(left, ast.BinOp) and isinstance(left.op, ast.Mult)
            and any(isinstance(side, ast.BinOp) and isinstance(side.op, ast.Add)
                    and isinstance(side.right, ast.Constant) and side.right.value == 1
                    for side in (left.left, left.right)))


def _sql(value: object) -> bool:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text.lstrip().startswith(("SELECT ", "INSERT ", "CREATE TABLE", "PRAGMA "))


def _signed_layout(value: object) -> bool:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return "secure-collab/v2/" in text and "\0" in text


@dataclass(frozen=True)
class Concept:
    name: str
    finder: Finder
    homes: frozenset[str]  # the modules (paths from the repository root) allowed to hold it
    where: tuple[str, ...] = PACKAGES  # the packages searched
    once: bool = False  # exactly one match in all (a definition), not merely "only in its homes"
    top_level: bool = False  # only module-level statements count (a method of the same name is another thing)


STATEMENTS = ("_statement", "contribution_statement", "setup_bytes", "release_bytes", "release_label", "seal_ad",
              "blinded_statement", "evaluated_statement", "tags_statement", "decision_statement")

CONCEPTS = [
    Concept("MODES", defines("MODES"), frozenset({"secure_collab/protection/base.py"}), once=True),
    Concept("triangle_size", defines("triangle_size"), frozenset({"secure_collab/protection/encoding.py"}),
            once=True),
    Concept("the triangle size by hand", triangle_arithmetic, frozenset({"secure_collab/protection/encoding.py"})),
    *[Concept(f"statement layout {n}", defines(n), frozenset({"secure_collab/protection/statements.py"}), once=True)
      for n in STATEMENTS],
    Concept("a signed layout's domain string", constant(_signed_layout),
            frozenset({"secure_collab/protection/statements.py"})),
    Concept("the release check", defines("check_release"), frozenset({"secure_collab/protocol/release.py"}),
            once=True),
    Concept("release statement outside its check and its signer", calls("release_bytes"),
            frozenset({"secure_collab/protocol/release.py", "solver/server.py"})),
    Concept("the message builder", defines("build"), frozenset({"secure_collab/protocol/messages.py"}),
            where=("secure_collab", *ROLES, "attacks"), once=True, top_level=True),
    Concept("a message built by hand in a role or an attack", calls("Message"),
            frozenset({"secure_collab/protocol/messages.py"}), where=("secure_collab", *ROLES, "attacks")),
    Concept("the chunk body builder", defines("chunk_body"), frozenset({"secure_collab/protocol/statistics.py"}),
            once=True),
    Concept("the chunk body parser", defines("parse_chunk_body"),
            frozenset({"secure_collab/protocol/statistics.py"}), once=True),
    Concept("a chunk body written out", dict_with_key("n_chunks"),  # its builder, and its bounds in the wire schema
            frozenset({"secure_collab/protocol/statistics.py", "secure_collab/protocol/messages.py"})),
    Concept("the ledger reader", defines("read_ledger", "_select"),
            frozenset({"secure_collab/ledger.py"}), where=("secure_collab", *ROLES, "benchmarks")),
    Concept("SQL outside the ledger", constant(_sql), frozenset({"secure_collab/ledger.py"})),
    Concept("a database opened outside the ledger", sqlite_connect, frozenset({"secure_collab/ledger.py"})),
    Concept("the past-ΣG decision", defines("uses_past"), frozenset({"secure_collab/editing/__init__.py"}),
            once=True),
    Concept("an update rule named in a role", constant(lambda v: v == "memit-static"),
            frozenset(), where=ROLES),
    Concept("the target cache", defines("cached_targets"), frozenset({"secure_collab/editing/target_cache.py"}),
            once=True),
    Concept("the targets' take and concat", lambda n: isinstance(n, ast.FunctionDef) and n.name in ("take", "concat"),
            frozenset({"secure_collab/editing/targets.py", "coordinator/guard.py"}),  # guard.take: a token bucket
            where=("secure_collab", *ROLES, "attacks")),
    Concept("the session file's hparams table", defines("hparams_table"), frozenset({"secure_collab/session_file.py"}),
            once=True),
    Concept("a mode's running sum (its bookkeeping)", defines("RunningSum"),
            frozenset({"secure_collab/protection/public.py"}), once=True),
    Concept("the encoding step from public settings", defines("encoding_frac_bits"),
            frozenset({"secure_collab/protection/__init__.py"}), once=True),
    Concept("the noise's sensitivity Δ₂", defines("sensitivity"), frozenset({"secure_collab/editing/noise.py"}),
            once=True),
    Concept("the noise plan of a session", defines("session_noise_plan", "plan_noise"),
            frozenset({"secure_collab/editing/noise.py"})),
    Concept("the discrete Gaussian sampler", defines("discrete_gaussian", "discrete_laplace"),
            frozenset({"secure_collab/editing/dgauss.py"})),
    Concept("the default δ", defines("DEFAULT_DELTA"), frozenset({"secure_collab/editing/defences.py"}), once=True),
    Concept("the session's (ε, δ)", defines("session_epsilon"), frozenset({"secure_collab/editing/accounting.py"}),
            once=True),
    Concept("a privacy accountant outside the accountant", calls("RdpAccountant"),
            frozenset({"secure_collab/editing/accounting.py"})),
]


def _matches(concept: Concept) -> Iterator[tuple[str, int]]:
    for path, tree in _trees().items():
        if not path.startswith(tuple(f"{p}/" for p in concept.where)):
            continue
        nodes = tree.body if concept.top_level and isinstance(tree, ast.Module) else ast.walk(tree)
        for node in nodes:
            if concept.finder(node):
                yield path, getattr(node, "lineno", 0)


@pytest.mark.parametrize("concept", CONCEPTS, ids=lambda c: c.name)
def test_one_home(concept: Concept) -> None:
    found = list(_matches(concept))
    stray = [f"{p}:{line}" for p, line in found if p not in concept.homes]
    assert not stray, f"{concept.name}: also at {stray} (its home: {sorted(concept.homes) or 'none'})"
    if concept.once:
        assert len(found) == 1, f"{concept.name}: {len(found)} definitions {found}, want exactly one"


def test_the_finders_find_what_they_look_for() -> None:
    """A finder that found nothing would pass vacuously: each one finds its home's definition."""
    for concept in CONCEPTS:
        if concept.homes:
            assert any(True for _ in _matches(concept)), f"{concept.name}: not found even in its home"
