"""The ledger as an operator meets it: piped into head, asked for a session it does not hold, found from the
session file; and `session init` reads --roster from where the user typed it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from secure_collab.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "network"))

from network_doubles import make_config, run_session  # noqa: E402


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ledger")
    cfg = make_config(tmp)
    assert run_session(cfg).outcome.ok
    return cfg.paths.ledger


def test_ledger_show_into_a_closed_pipe_exits_0_without_a_traceback(ledger):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "secure_collab", "ledger", "show", "--ledger", str(ledger)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # `| head` that has read all it wanted
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_ledger_show_of_an_unknown_session_exits_2_naming_the_sessions_it_holds(ledger, capsys):
    assert main(["ledger", "show", "--ledger", str(ledger), "--session", "nope"]) == 2
    err = capsys.readouterr().err
    assert "holds no session 'nope'; it holds s1" in err


def test_ledger_show_finds_the_ledger_from_the_session_file(ledger, capsys):
    config = next(ledger.parent.glob("config-*.toml"))
    assert main(["ledger", "show", "--config", str(config), "--session", "s1"]) == 0
    assert "hand-offs to the solver" in capsys.readouterr().out


def test_session_init_reads_the_roster_from_the_current_directory(tmp_path, monkeypatch, capsys):
    from secure_collab.config import load_config
    from secure_collab.keys import init_keys

    init_keys(tmp_path / "keys", ["a", "b"])
    monkeypatch.chdir(tmp_path)
    argv = ["session", "init", "--model", "tiny-llama", "--roster", "keys/roster.toml", "--out",
            "elsewhere/session.toml", "--cache-dir", str(tmp_path / "cache"), "-q"]
    (tmp_path / "elsewhere").mkdir()
    assert main(argv) == 0
    config = load_config(tmp_path / "elsewhere" / "session.toml")
    assert config.paths.roster == tmp_path / "keys" / "roster.toml"  # written relative to the session file
    assert config.paths.ledger == tmp_path / "elsewhere" / "ledger.sqlite"  # next to it, no doubled directory
    assert main([*argv[:5], "keys/nope.toml", *argv[6:]]) == 2
    err = capsys.readouterr().err
    assert f"no roster at {tmp_path / 'keys' / 'nope.toml'}" in err and "current directory" in err


def test_demo_and_session_init_share_one_precision_default_and_the_file_explains_its_rules():
    import argparse

    from secure_collab.cli import demo, session
    from secure_collab.session_file import COMMENTS, PRECISION_BITS

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    assert p.parse_args([]).precision_bits == PRECISION_BITS
    p = argparse.ArgumentParser()
    session.add_arguments(p)
    assert p.parse_args(["init", "--model", "m"]).precision_bits == PRECISION_BITS
    assert {"update_rule", "nullspace_threshold", "alphaedit_l2", "wait_log_s"} <= set(COMMENTS)


def test_the_party_table_says_why_a_metric_is_missing_and_formats_bytes(capsys):
    import argparse

    from secure_collab.cli.party import show

    report = {"party": "a", "session": "s1", "edits": 2, "ok": True, "reason": "session complete",
              "applied": {"0/3": "x"}, "bytes_sent": 82652370, "seconds": 12.3, "patch": "patch.safetensors",
              "pre": {"efficacy": 0.1, "generalization": None, "specificity": None, "score": None},
              "post": {"efficacy": 0.9, "generalization": None, "specificity": None, "score": None}}
    show(argparse.Namespace(json=None, quiet=False), report)
    out = capsys.readouterr().out
    assert "generalization -: the requests carry no paraphrase prompts" in out
    assert "specificity -: the requests carry no neighbourhood prompts" in out and "score -: " in out
    assert "82.7 MB sent" in out and "82652370" not in out
    assert "patch: patch.safetensors" in out and "model: -" not in out and "edited model" not in out
