"""The keys and ledger commands (called through their modules: HELP, add_arguments, run)."""

from __future__ import annotations

import argparse
import json
import stat

import pytest
from network_doubles import make_config, run_session

from secure_collab.cli import _roles, main
from secure_collab.protection import get_scheme


def _run(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def test_keys_init(tmp_path, capsys):
    assert main(["keys", "init", "--dir", str(tmp_path / "k"), "--parties", "a,b,c"]) == 0
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == sorted([f"{r}.{kind}" for r in ("coordinator", "solver", "party-a", "party-b", "party-c")
                            for kind in ("key_secret", "public.toml")] + ["roster.toml"])
    assert all(stat.S_IMODE((tmp_path / "k" / n).stat().st_mode) == 0o600 for n in names if "secret" in n)
    assert "secret" not in (tmp_path / "k" / "roster.toml").read_text()
    assert "roster" in capsys.readouterr().out
    assert main(["keys", "init", "--dir", str(tmp_path / "k"), "--parties", "a"]) == 2  # no overwrite
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err and "never overwrites" in err


def test_ledger_show(tmp_path, capsys):
    cfg = make_config(tmp_path)
    assert run_session(cfg).outcome.ok
    assert main(["ledger", "show", "--ledger", str(cfg.paths.ledger)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:4] == ["time", "direction", "peer", "type"] and "digest" in header and "outcome" in header
    assert "contrib" in out and "accepted" in out and "aggregate" in out and "handoff" in out
    assert main(["ledger", "show", "--ledger", str(cfg.paths.ledger), "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    contribs = [m for m in doc["messages"] if m["type"] == "contrib"]
    assert len(contribs) == 3 * 2 * (3 + 4 + 1)  # parties x layers x chunks of G, B and N
    assert all(len(m["digest"]) == 64 and m["bytes"] > 0 and m["outcome"] == "accepted" for m in contribs)
    assert [r["layer"] for r in doc["releases"]] == [1, 2]


def test_unknown_protection_mode_is_an_error():
    with pytest.raises((RuntimeError, ValueError)):  # no protection layer yet / ProtectionError
        _roles.load_scheme("rot13")


def test_role_commands_run_a_session(tmp_path, monkeypatch, capsys):
    """coordinator / solver / party commands, with the engine plug-in points monkeypatched."""
    from network_doubles import SyntheticEngine, Threads, closed_form_solve

    from secure_collab.cli import coordinator as coordinator_cli
    from secure_collab.cli import party as party_cli
    from secure_collab.cli import solver as solver_cli

    cfg = make_config(tmp_path)
    config_path = str(next(tmp_path.glob("config-*.toml")))
    monkeypatch.setattr(_roles, "load_scheme", lambda mode: get_scheme("plain"))
    monkeypatch.setattr(solver_cli, "session_solve", lambda config, args=None: closed_form_solve)
    engines = {n: SyntheticEngine(n, cfg) for n in ("a", "b", "c")}
    from parties.runner import PartyEngine

    monkeypatch.setattr(party_cli, "engine_callbacks", lambda config, name, args, group=None: PartyEngine(
        engines[name].compute_statistics, engines[name].apply_delta, lambda result: {"edits": 3}))
    th = Threads()
    th.start("coordinator", lambda: _run(coordinator_cli, ["--config", config_path]))
    th.start("solver", lambda: _run(solver_cli, ["--config", config_path]))
    for n in engines:
        th.start(n, lambda n=n: _run(party_cli, ["--config", config_path, "--name", n, "--requests", "unused",
                                                 "--json", str(tmp_path / f"{n}.json")]))
    th.join(40)
    assert all(code == 0 for code in th.results.values()), th.results
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["ok"] and report["edits"] == 3 and set(report["applied"]) == {"0/1", "0/2"}
    assert report["bytes_sent"] > 0
    assert "session s1: done" in capsys.readouterr().out
