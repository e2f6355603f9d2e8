"""The release defences as a session setting (``session.defence``): refused at load when it is not one of the built
forms, written by `session init`, bound into the session digest."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from network_doubles import make_config

from secure_collab.cli import main
from secure_collab.config import load_config
from secure_collab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _one_line_error(capsys, command: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"secure-collab {command}: error: "), err
    return err[0]


def _with_defence(path: Path, value: str) -> Path:
    """The session file at ``path`` with ``session.defence`` set to ``value`` (written as TOML text)."""
    text = path.read_text()
    assert "\ndefence = " not in text
    out = path.with_name("defended.toml")
    out.write_text(text.replace("[session]\n", f"[session]\ndefence = {json.dumps(value)}\n", 1))
    return out


@pytest.mark.parametrize(("value", "why"), [("noise:1", "not built yet"), ("blur", "bad defence 'blur'"),
                                            ("rank:0", "bad defence 'rank:0'"), ("camouflage:2+", "bad defence ''")])
def test_a_defence_that_is_not_built_or_not_a_form_is_refused_at_load_in_one_line(tmp_path, capsys, value, why):
    make_config(tmp_path)
    path = _with_defence(next(tmp_path.glob("config-*.toml")), value)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "\n" not in message and "session.defence" in message and why in message
    assert "camouflage:S (S > 0) | rank:K (K >= 1)" in message  # it names the forms
    assert main(["session", "show", "--config", str(path)]) == 2  # every role loads the file the same way
    assert "session.defence" in _one_line_error(capsys, "session")


def test_the_defence_setting_loads_without_torch_and_is_in_the_digest(tmp_path):
    """The torch-free coordinator loads the session file, so parsing the setting must not load torch."""
    plain = make_config(tmp_path)
    path = _with_defence(next(tmp_path.glob("config-*.toml")), "rank:3+camouflage:0.5")
    probe = ("import json, sys; from secure_collab.config import load_config; c = load_config(sys.argv[1]); "
             "print(json.dumps([c.session.defence, c.digest, 'torch' in sys.modules]))")
    run = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True)
    defence, digest, torch_loaded = json.loads(run.stdout)
    assert defence == "rank:3+camouflage:0.5" and not torch_loaded
    defended = load_config(path)
    assert replace(defended.session, defence="none") == plain.session  # the one difference ...
    assert digest == defended.digest != plain.digest  # ... changes the digest every message carries


def test_session_init_writes_the_defence_and_the_file_loads(tmp_path, capsys):
    from secure_collab.keys import init_keys

    init_keys(tmp_path / "keys", ["a", "b", "c"])
    common = ["session", "init", "--model", "tiny-llama", "--roster", str(tmp_path / "keys/roster.toml"),
              "--id", "s-def", "--cache-dir", str(tmp_path / "cache"), "-q"]
    assert main([*common, "--out", str(tmp_path / "defended.toml"), "--defence", "camouflage:3"]) == 0
    text = (tmp_path / "defended.toml").read_text()
    assert tomllib.loads(text)["session"]["defence"] == "camouflage:3"
    assert "#" in next(line for line in text.splitlines() if line.startswith("defence = "))  # commented
    defended = load_config(tmp_path / "defended.toml")
    assert defended.session.defence == "camouflage:3"
    assert main(["session", "show", "--config", str(tmp_path / "defended.toml"), "--json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["defence"] == "camouflage:3" and "defence camouflage:3" in out.err
    # the default writes "none"; the two files differ in that setting only, and so in their digests
    assert main([*common, "--out", str(tmp_path / "plain.toml")]) == 0
    plain = load_config(tmp_path / "plain.toml")
    assert plain.session.defence == "none" and replace(defended.session, defence="none") == plain.session
    assert plain.digest != defended.digest
    # a bad setting is refused in one line before the model loads, and nothing is written
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad.toml"), "--defence", "blur"]) == 2
    assert "bad defence 'blur'" in _one_line_error(capsys, "session")
    assert not (tmp_path / "bad.toml").exists()
