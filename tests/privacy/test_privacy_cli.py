"""The attack commands reach the core command line as plugins, and the core never imports attacks/."""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from secure_collab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
EPS = [EntryPoint("attack", "attacks.cli.attack", "secure_collab.commands"),
       EntryPoint("audit", "attacks.cli.audit", "secure_collab.commands")]


def test_plugins_are_discovered_from_the_entry_point_group(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--help"], entry_points=EPS)
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--view" in out and "(default: 1,2,4,8,16,32)" in out
    parser = build_parser(EPS)
    assert {"attack", "audit", "demo"} <= set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def test_a_broken_or_clashing_plugin_is_skipped(capsys):
    bad = [EntryPoint("nothing", "attacks.no_such_module", "secure_collab.commands"),
           EntryPoint("demo", "attacks.cli.attack", "secure_collab.commands")]
    choices = build_parser(bad)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "nothing" not in choices and choices["demo"].description.startswith("run a whole session")
    err = capsys.readouterr().err
    assert "'nothing' not loaded" in err and "'demo' ignored" in err


def test_pyproject_registers_the_group():
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points."secure_collab.commands"]' in text
    assert 'attack = "attacks.cli.attack"' in text and 'audit = "attacks.cli.audit"' in text


def test_the_core_never_imports_attacks():
    offenders = [str(p.relative_to(ROOT)) for d in ("secure_collab", "parties", "coordinator")
                 for p in (ROOT / d).rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+attacks\b", p.read_text(), re.M)]
    assert offenders == []


def test_user_mistakes_get_one_line_errors(tmp_path, capsys):
    rc = main(["attack", "--model", "tiny-llama", "--requests", str(tmp_path / "missing.json"), "--view", "keys"],
              entry_points=EPS)
    assert rc == 2 and capsys.readouterr().err.strip().count("\n") == 0
    rc = main(["audit", "--ledger", str(tmp_path / "none.sqlite"), "--html", str(tmp_path / "a.html")],
              entry_points=EPS)
    assert rc == 2 and "not found" in capsys.readouterr().err
