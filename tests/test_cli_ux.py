"""The command line as a user meets it: --version, defaults in every --help, one name per concept, `--json -`
is stdout everywhere, and every user mistake of issue 9 ends in one line on stderr with exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from secure_collab import __version__
from secure_collab.cli import COMMANDS, _leaves, build_parser, main
from secure_collab.cli._output import JSON_HELP
from tests.conftest import SHARED

# the attack plugins as pyproject registers them (named here: the venv may predate the entry points)
PLUGINS = [EntryPoint("attack", "attacks.cli.attack", "secure_collab.commands"),
           EntryPoint("audit", "attacks.cli.audit", "secure_collab.commands"),
           EntryPoint("defences", "attacks.cli.defences", "secure_collab.commands")]

LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")
ROOT = Path(__file__).resolve().parents[1]
NETWORK = ROOT / "tests" / "network"
sys.path.insert(0, str(NETWORK))  # network_doubles, as the network tests use it

from network_doubles import make_config, run_session  # noqa: E402


def _leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    return {p.prog.removeprefix("secure-collab "): p for p in _leaves(build_parser(PLUGINS))}


def one_error_line(capsys, command: str) -> str:
    """Apart from log records, the command's stderr is one line, `secure-collab COMMAND: error: ...`; returns
    the message."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not LOG_RECORD.match(line)]
    assert len(lines) == 1, err
    prefix = f"secure-collab {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0].removeprefix(prefix)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"secure-collab {__version__}"


def test_every_option_shows_its_default_and_every_command_has_json():
    leaves = _leaf_parsers()
    assert {name.split()[0] for name in leaves} == set(COMMANDS) | {"attack", "audit", "defences"}
    missing = []
    for name, parser in leaves.items():
        text = " ".join(parser.format_help().split())
        assert "--json OUT" in text, name
        json_action = next(a for a in parser._actions if "--json" in a.option_strings)
        assert json_action.help == JSON_HELP, name  # every command writes it through _output.write_json
        formatter = parser._get_formatter()
        for action in parser._actions:
            if (not action.option_strings or action.required or action.nargs == 0
                    or isinstance(action, argparse._HelpAction | argparse._CountAction)):
                continue  # positionals, required options and flags have no default to show
            shown = formatter._get_help_string(action) or ""
            if "default" not in shown.lower():
                missing.append(f"{name} {action.option_strings[0]}: {shown!r}")
    assert not missing, "\n".join(missing)


def test_one_name_per_concept():
    """bound, save, threads, lambda: one spelling across commands and the TOML ([session] value_bound, ...)."""
    spelled = {opt for p in _leaf_parsers().values() for a in p._actions for opt in a.option_strings}
    assert not spelled & {"--bound", "--save-model", "--lam", "--num-threads", "--mom2-update-weight"}
    by_command = {name: {o for a in p._actions for o in a.option_strings} for name, p in _leaf_parsers().items()}
    for name in ("demo", "session init", "protection-check"):
        assert "--value-bound" in by_command[name], name
    for name in ("edit", "party"):
        assert "--save" in by_command[name], name
    for name in ("edit", "session init"):
        assert "--lambda" in by_command[name], name
    for name in ("edit", "stats", "party", "solver", "demo"):
        assert "--threads" in by_command[name], name


def test_common_options_before_or_after_the_command(tmp_path, capsys):
    for argv in (["-q", "keys", "init"], ["keys", "init", "-q"]):
        d = tmp_path / argv[0]
        assert main([*argv, "--dir", str(d), "--parties", "a,b"]) == 0
        assert capsys.readouterr().out == ""  # -q silences the human result


def test_json_dash_is_stdout_and_nothing_else(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a file named "-" would land here
    assert main(["keys", "init", "--dir", "k", "--parties", "a,b", "--json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["parties"] == ["a", "b"] and "roster" in out.err
    cfg = make_config(tmp_path / "s", keys_dir=tmp_path / "s" / "keys")
    assert run_session(cfg).outcome.ok
    assert main(["ledger", "show", "--ledger", str(cfg.paths.ledger), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["releases"]
    html = tmp_path / "audit.html"
    assert main(["audit", "--ledger", str(cfg.paths.ledger), "--html", str(html), "--json", "-"], PLUGINS) == 0
    assert json.loads(capsys.readouterr().out)["html"] == str(html) and html.is_file()
    config_path = next((tmp_path / "s").glob("config-*.toml"))
    assert main(["session", "show", "--config", str(config_path), "--json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["config_digest"] == cfg.digest and cfg.digest in out.err
    assert main(["protection-check", "--mode", "shares", "--parties", "2", "--dim", "4", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "shares"
    assert not (tmp_path / "-").exists()


def test_json_dash_for_the_model_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(f"paragraph {i} " * 20 for i in range(6)))
    assert main(["stats", "--model", "tiny-llama", "--layers", "1", "--corpus", str(corpus), "--tokens", "200",
                 "--cache-dir", str(tmp_path / "cache"), "--json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["layers"][0]["layer"] == 1 and "layer   1" in out.err
    assert main(["edit", "--model", "tiny-llama", "--limit", "2", "--parties", "2", "--tokens", "200",
                 "--corpus", str(corpus), "--cache-dir", str(tmp_path / "cache"), "--json", "-", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["edits"] == 2 and doc["delta_rel_diff_vs_global"] <= 1e-9
    assert not (tmp_path / "-").exists()


def test_the_documented_default_model_exists():
    """Issue 9: the template in config.py named a model ("smollm2") that does not exist."""
    from secure_collab.config import SessionConfig
    from secure_collab.models.loading import KNOWN

    assert SessionConfig(id="s", mode="shares", layers=(1,), d_k=1, d_v=1).model in KNOWN
    import secure_collab.config

    assert 'model = "smollm2-135m"' in secure_collab.config.__doc__


# ---- one line and exit code 2 for every user mistake ------------------------------------------------------

def test_missing_session_file(tmp_path, capsys):
    assert main(["coordinator", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "no session file at" in one_error_line(capsys, "coordinator")


def test_session_file_that_is_not_toml(tmp_path, capsys):
    (tmp_path / "s.toml").write_text("[session\nid = 1\n")
    assert main(["party", "--config", str(tmp_path / "s.toml"), "--name", "a", "--requests", "r.jsonl"]) == 2
    assert "is not valid TOML" in one_error_line(capsys, "party")


def test_session_field_of_the_wrong_type(tmp_path, capsys):
    cfg_path = _config_file(tmp_path)
    cfg_path.write_text(cfg_path.read_text().replace("d_v = 4", 'd_v = "four"'))
    assert main(["solver", "--config", str(cfg_path)]) == 2
    assert "session.d_v must be an integer" in one_error_line(capsys, "solver")


def test_party_not_in_the_roster_and_missing_key(tmp_path, capsys):
    cfg_path = _config_file(tmp_path)
    assert main(["party", "--config", str(cfg_path), "--name", "zed", "--requests", "x.jsonl"]) == 2
    assert "party 'zed' is not in the roster" in one_error_line(capsys, "party")
    (tmp_path / "keys" / "party-a.key_secret").unlink()
    assert main(["party", "--config", str(cfg_path), "--name", "a", "--requests", "x.jsonl"]) == 2
    assert "party-a.key_secret is missing" in one_error_line(capsys, "party")
    from secure_collab.keys import write_identity

    write_identity(tmp_path / "keys", "party", "a")  # a new key pair, not the one the roster pins
    assert main(["party", "--config", str(cfg_path), "--name", "a", "--requests", "x.jsonl"]) == 2
    assert "is not the key the roster holds for party a" in one_error_line(capsys, "party")


def test_missing_request_file(tmp_path, capsys):
    assert main(["edit", "--model", "tiny-llama", "--requests", str(tmp_path / "none.json")]) == 2
    assert "none.json" in one_error_line(capsys, "edit")


def test_unknown_model_fails_at_once_without_a_hub(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SECURE_COLLAB_ALLOW_DOWNLOAD", raising=False)
    start = time.monotonic()
    assert main(["edit", "--model", "smolm2-135m", "--limit", "2", "--parties", "1", "--cache-dir", str(tmp_path)]) == 2
    assert time.monotonic() - start < 20  # today a hub is retried for 50 s
    message = one_error_line(capsys, "edit")
    assert "unknown model 'smolm2-135m'" in message and "did you mean smollm2-135m" in message
    assert "--allow-download" in message
    assert main(["stats", "--model", "./no/such/dir", "--cache-dir", str(tmp_path)]) == 2
    assert "model directory ./no/such/dir does not exist" in one_error_line(capsys, "stats")


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "coordinator", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith(".toml")


def test_wrong_d_v_is_refused_by_the_solver_at_start(tmp_path, capsys):
    """Issue 9: a wrong d_v was accepted by the solver and failed in every party after target optimisation."""
    cfg_path = _model_config(tmp_path, d_v=65)
    assert main(["solver", "--config", str(cfg_path), "--cache-dir", str(tmp_path / "cache")]) == 2
    message = one_error_line(capsys, "solver")
    assert "d_v = 65" in message and "d_v = 64" in message and "session init" in message


def test_other_weights_are_refused_by_a_party_at_start(tmp_path, capsys):
    cfg_path = _model_config(tmp_path, weights_digest="0" * 64)
    (tmp_path / "r.jsonl").write_text(json.dumps({"subject": "France", "prompt": "The capital of {} is",
                                                  "target_new": "Rome"}) + "\n")
    assert main(["party", "--config", str(cfg_path), "--name", "a", "--requests", str(tmp_path / "r.jsonl"),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "differ from the session's weights_digest" in one_error_line(capsys, "party")


def test_rerun_after_editing_the_configuration_names_what_to_remove(tmp_path, capsys):
    """Issue 9: this deadlocked with a misleading "signature does not verify"."""
    cfg = make_config(tmp_path)
    assert run_session(cfg).outcome.ok
    cfg_path = next(tmp_path.glob("config-*.toml"))
    assert main(["coordinator", "--config", str(cfg_path)]) == 2  # the same file: the session already ran
    assert "records session 's1' as done" in one_error_line(capsys, "coordinator")
    cfg_path.write_text(cfg_path.read_text().replace("min_parties = 2", "min_parties = 3"))
    assert main(["coordinator", "--config", str(cfg_path)]) == 2
    message = one_error_line(capsys, "coordinator")
    assert "under another configuration" in message and str(cfg.paths.ledger) in message
    assert "remove the ledger" in message
    assert main(["solver", "--config", str(cfg_path)]) == 2
    assert "solver state of session 's1' under another configuration" in one_error_line(capsys, "solver")


def test_a_second_solver_on_the_same_state_is_one_line(tmp_path, capsys):
    """The solver state is held by one process at a time (solver/state.py): a second one is told so."""
    from secure_collab.config import load_config
    from solver.state import SolverState

    cfg_path = _model_config(tmp_path)
    config = load_config(cfg_path)
    held = SolverState(config.paths.solver_state / config.session.id, bytes(32), config.session.id, config.digest)
    try:
        assert main(["solver", "--config", str(cfg_path), "--cache-dir", str(tmp_path / "cache")]) == 2
    finally:
        held.close()
    assert "another solver process is running on" in one_error_line(capsys, "solver")


def test_port_in_use(tmp_path, capsys):
    cfg_path = _config_file(tmp_path)
    endpoint = _endpoint_of(cfg_path)
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        assert main(["coordinator", "--config", str(cfg_path)]) == 2
    message = one_error_line(capsys, "coordinator")
    assert f"cannot listen on {endpoint}" in message and "in use" in message


def test_ctrl_c_on_the_coordinator_is_one_line_and_tells_the_parties(tmp_path):
    """SIGINT: one line, exit 2, and the END with the reason goes to every connected peer first."""
    cfg_path = _config_file(tmp_path, join_timeout_s=60.0)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "secure_collab", "coordinator", "--config", str(cfg_path),
                             "--json", "-"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(proc, "listening on")
        proc.send_signal(signal.SIGINT)
        out, err = _communicate(proc, 30)
    finally:
        proc.kill()
    assert json.loads(out)["reason"] == "the coordinator was stopped by its operator"  # stdout: the JSON alone
    assert proc.returncode == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1] == "secure-collab coordinator: error: interrupted"
    assert not any("Traceback" in ln for ln in lines)
    assert any("ABORTED: the coordinator was stopped by its operator" in ln for ln in lines)


def test_ctrl_c_on_the_solver_is_one_line_and_json_dash_is_its_stdout(tmp_path):
    """The solver with --json -: interrupted while it waits for a coordinator, stdout still holds its JSON alone."""
    cfg_path = _model_config(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "secure_collab", "solver", "--config", str(cfg_path),
                             "--cache-dir", str(tmp_path / "cache"), "--json", "-"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(proc, "connecting to the coordinator", timeout=120)  # past the model and session checks
        proc.send_signal(signal.SIGINT)
        out, err = _communicate(proc, 30)
    finally:
        proc.kill()
    assert proc.returncode == 2
    doc = json.loads(out)
    assert doc["ok"] is False and doc["releases"] == [] and doc["session"]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1] == "secure-collab solver: error: interrupted" and not any("Traceback" in ln for ln in lines)
    assert any(ln.startswith("solver: stopped: ") for ln in lines)  # the human summary went to stderr


def test_ctrl_c_on_a_party_is_one_line_and_json_dash_is_its_stdout(tmp_path):
    cfg_path = _model_config(tmp_path)
    requests = _requests_file(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "secure_collab", "party", "--config", str(cfg_path), "--name", "a",
                             "--requests", str(requests), "--cache-dir", str(tmp_path / "cache"), "--json", "-"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(proc, "connecting to the coordinator", timeout=120)
        proc.send_signal(signal.SIGINT)
        out, err = _communicate(proc, 30)
    finally:
        proc.kill()
    assert proc.returncode == 2
    report = json.loads(out)
    assert report["party"] == "a" and report["ok"] is False and report["applied"] == {}
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1] == "secure-collab party: error: interrupted" and not any("Traceback" in ln for ln in lines)
    assert any(ln.startswith("party a: FAILED") for ln in lines)


def test_malformed_context_templates_are_refused_by_a_party_at_start(tmp_path, capsys):
    import tomllib

    from secure_collab.config import dump_toml

    cfg_path = _model_config(tmp_path)
    doc = tomllib.loads(cfg_path.read_text())
    doc["session"]["hparams"]["context_templates"] = ["The {} of {}", "{}"]  # hand-edited: two slots, "{}" not first
    cfg_path.write_text(dump_toml(doc))
    assert main(["party", "--config", str(cfg_path), "--name", "a", "--requests", str(_requests_file(tmp_path)),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "session.hparams.context_templates must be" in one_error_line(capsys, "party")


def test_json_dash_for_the_attack_plugin(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["attack", "--model", "tiny-llama", "--requests", str(SHARED / "counterfact.json"), "--limit", "4",
                 "--view", "keys", "--m", "1", "--trials", "4", "--attack", "spectral",
                 "--cache-dir", str(tmp_path / "cache"), "--json", "-", "-q"], PLUGINS) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["meta"]["view"] == "keys" and [r["m"] for r in doc["results"]] == [1]
    assert not (tmp_path / "-").exists()


# ---- helpers --------------------------------------------------------------------------------------------

def _config_file(tmp_path: Path, **network: float) -> Path:
    make_config(tmp_path, network=network or None)
    return next(tmp_path.glob("config-*.toml"))


def _endpoint_of(cfg_path: Path) -> str:
    import tomllib

    return tomllib.loads(cfg_path.read_text())["network"]["coordinator_bind"]


def _model_config(tmp_path: Path, **session) -> Path:
    """A tiny-llama session file as `session init` writes it, with some [session] fields overridden."""
    import tomllib

    from secure_collab.config import dump_toml
    from secure_collab.keys import init_keys

    init_keys(tmp_path / "keys", ["a", "b"])
    assert main(["session", "init", "--model", "tiny-llama", "--roster", str(tmp_path / "keys/roster.toml"),
                 "--out", str(tmp_path / "session.toml"), "--cache-dir", str(tmp_path / "cache"), "-q"]) == 0
    doc = tomllib.loads((tmp_path / "session.toml").read_text())
    doc["session"].update(session)
    (tmp_path / "session.toml").write_text(dump_toml(doc))
    return tmp_path / "session.toml"


def _requests_file(tmp_path: Path) -> Path:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"subject": "France", "prompt": "The capital of {} is", "target_new": "Rome",
                                "target_true": "Paris"}) + "\n")
    return path


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 30.0) -> str:
    """Read the process's stderr until a line contains ``text`` (test_role_feedback's reader: no line left unseen
    in a buffer)."""
    from test_role_feedback import _lines_until

    return _lines_until(proc, re.escape(text), timeout)[-1][1]


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    from test_role_feedback import _communicate as communicate

    return communicate(proc, timeout)


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write: 0500 for a user; for root (CI), whom permission bits do not stop,
    the read-only sysfs."""
    if os.geteuid() != 0:
        d = tmp_path / "read-only"
        d.mkdir(mode=0o500)
        return d
    return Path("/sys")


@pytest.mark.parametrize("where", ["read-only", "under-a-file"])
@pytest.mark.parametrize("option", ["--patch", "--json", "--save"])
def test_an_output_path_a_party_cannot_write_is_refused_before_it_joins(tmp_path, capsys, where, option):
    """Issue 21: a party whose --patch pointed into a read-only directory took part in the whole session, then died
    with a traceback and lost its patch and report. Now: one line, exit 2, at once (no coordinator runs here: a
    party that went on to join would wait for it)."""
    cfg_path = _model_config(tmp_path)
    (tmp_path / "r.jsonl").write_text(json.dumps({"subject": "France", "prompt": "The capital of {} is",
                                                  "target_new": "Rome"}) + "\n")
    (tmp_path / "a-file").write_text("x")
    parent = _unwritable_dir(tmp_path) if where == "read-only" else tmp_path / "a-file"
    target = parent / ("edited" if option == "--save" else "out.file")
    start = time.monotonic()
    assert main(["party", "--config", str(cfg_path), "--name", "a", "--requests", str(tmp_path / "r.jsonl"),
                 "--cache-dir", str(tmp_path / "cache"), option, str(target)]) == 2
    assert time.monotonic() - start < 10
    message = one_error_line(capsys, "party")
    assert message.startswith(f"{option} {target}") and ("cannot write" in message or "not a directory" in message)


def test_apply_into_a_directory_it_cannot_write_is_one_line(tmp_path, capsys):
    import torch

    from secure_collab.models import load_model
    from secure_collab.patch import write_patch

    lm = load_model("tiny-llama")
    patch = tmp_path / "patch.safetensors"
    write_patch(patch, lm, {(0, 1): torch.zeros(64, 96, dtype=torch.float64)}, {"method": "collab"})
    out = _unwritable_dir(tmp_path) / "edited"
    assert main(["apply", "--model", "tiny-llama", "--patch", str(patch), "--out", str(out)]) == 2
    assert "cannot write" in one_error_line(capsys, "apply")


def test_no_help_text_states_a_default_twice_or_a_missing_one():
    """`experiment forgetting --help` printed "(default: the model's) (default: None)": argparse's own formatter on
    nested commands. Every leaf, nested ones included, now uses the one HelpFormatter."""
    for name, parser in _leaf_parsers().items():
        text = parser.format_help()
        assert "(default: None)" not in text, name
        flat = " ".join(text.split())
        assert not re.search(r"\(default: [^)]*\) \(default:", flat), name


def _readme_commands() -> list[list[str]]:
    """Every `secure-collab …` the README shows, as argv; placeholders (M, P, D, F…) filled with plausible values,
    alternatives (a\\|b) taken one by one, optional [groups] dropped."""
    text = (ROOT / "README.md").read_text()
    fill = {"M": "tiny-llama", "P": "3", "D": "8", "R": "4", "V": "delta", "A": "subspace", "RULE": "memit-dynamic",
            "F...": "a.toml", "1,2,4,...": "1,2,4", "DIR": "out", "X,Y": "Paris,Rome"}
    out = []
    for cmd in re.findall(r"`secure-collab ([^`]*)`", text):
        cmd = re.sub(r"\[[^\]]*\]", "", cmd).replace("\\|", "|")
        words = cmd.split()
        for i, w in enumerate(words):
            if "|" in w and not w.startswith("-"):
                for alt in w.split("|"):
                    out.append([fill.get(x, x) for x in words[:i] + [alt] + words[i + 1:]])
                break
        else:
            if "--mode" in words and words[words.index("--mode") + 1] == "M":
                words[words.index("--mode") + 1] = "shares"
            out.append([fill.get(x, x) for x in words])
    return out


def test_every_command_the_readme_shows_parses_with_the_real_command_line():
    """The README's commands as a user types them: each parses (its options exist, required ones are given), and
    the installed `secure-collab` on the venv's PATH answers (issue 21: the README's commands checked as documented)."""
    commands = _readme_commands()
    assert len(commands) >= 20
    for argv in commands:
        try:
            build_parser(PLUGINS).parse_args(argv)
        except SystemExit:
            pytest.fail(f"the README's `secure-collab {' '.join(argv)}` does not parse")
    exe = Path(sys.executable).parent / "secure-collab"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert proc.returncode == 0 and __version__ in proc.stdout
