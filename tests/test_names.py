"""Names that reach the file system or the wire (session ids, party names, roster entries) match one strict
pattern, checked whole (issue 18, findings 2 and 3): through the real command line, at load and on the wire."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from secure_collab.keys import KeyFileError, init_keys, load_roster
from secure_collab.protocol.messages import Message, MsgType
from secure_collab.protocol.schema import ProtocolError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "network"))  # network_doubles, as the network tests use it

from network_doubles import make_config  # noqa: E402

# each one, as a session id under paths.solver_state, would name a directory elsewhere
HOSTILE_IDS = ["../x", "../../victim", "a/../../v", "s/.", "..", "a\n", "a\x00b", "a\\..\\v"]


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m secure_collab ARGV` in its own process, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "secure_collab", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    """Exit 2 and exactly one line on stderr, ``secure-collab COMMAND: error: ...``; returns the message."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    prefix = f"secure-collab {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0].removeprefix(prefix)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("bad", ["../x", "/abs", "a\n"])
def test_session_init_refuses_a_session_id_that_is_not_a_name(tmp_path, bad):
    init_keys(tmp_path / "keys", ["a", "b"])
    before = tree(tmp_path)
    bad = str(tmp_path / "abs") if bad == "/abs" else bad
    proc = cli("session", "init", "--model", "tiny-llama", "--roster", "keys/roster.toml", "--out",
               str(tmp_path / "session.toml"), "--id", bad, "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert "session id" in one_error_line(proc, "session")
    assert tree(tmp_path) == before  # no session file, no cache


@pytest.mark.parametrize("bad", ["a\n", "a\r", "A", "а", "../a", "a" * 33, "solver", "coordinator"])
def test_keys_new_refuses_a_name_that_is_not_a_name(tmp_path, bad):
    """(A NUL byte cannot be passed in argv at all; the roster and wire tests cover it.)"""
    proc = cli("keys", "new", "--role", "party", "--name", bad, "--dir", "keys", cwd=tmp_path)
    assert "party name" in one_error_line(proc, "keys")
    assert tree(tmp_path) == set()


@pytest.mark.parametrize("bad", ["../../victim", "a/../../v", "/abs", "s/."])
def test_solver_refuses_a_hand_edited_session_id_at_load_and_creates_nothing(tmp_path, bad):
    """The config file edited by hand: the solver stops at load, in one line, and no directory appears."""
    site = tmp_path / "org" / "site"
    cfg = make_config(site, model="tiny-llama")  # a small model: before the fix the solver got that far
    bad = str(tmp_path / "abs") if bad == "/abs" else bad
    path = site / "config-s1.toml"
    text = path.read_text()
    assert text.count('id = "s1"\n') == 1
    path.write_text(text.replace('id = "s1"\n', f'id = "{bad}"\n'))
    before = tree(tmp_path)
    proc = cli("solver", "--config", str(path), "--cache-dir", str(tmp_path / "cache"), cwd=site)
    assert "session.id" in one_error_line(proc, "solver")
    assert tree(tmp_path) == before
    assert not (cfg.paths.solver_state).exists()


def _roster_with(tmp_path: Path, old: str, new: str) -> Path:
    """A roster of parties a, b, c whose party ``old`` is renamed ``new`` (a TOML quoted key)."""
    init_keys(tmp_path / "keys", ["a", "b", "c"])
    path = tmp_path / "keys" / "roster.toml"
    text = path.read_text()
    assert text.count(f"[parties.{old}]\n") == 1
    path.write_text(text.replace(f"[parties.{old}]\n", f"[parties.{new}]\n"))
    return path


@pytest.mark.parametrize("key", [r'"a\n"', r'"b\u0000"', '"../b"', '"B"', r'"\u0430"'])
def test_a_roster_whose_party_name_is_not_a_name_is_refused_at_load(tmp_path, key):
    path = _roster_with(tmp_path, "c", key)
    with pytest.raises(KeyFileError, match="party name"):
        load_roster(path)
    agreed = tmp_path / "agreed.txt"
    agreed.write_text("coordinator " + "0" * 64 + "\n")
    proc = cli("keys", "check", "--roster", str(path), "--fingerprints", str(agreed), cwd=tmp_path)
    assert "party name" in one_error_line(proc, "keys")


def test_a_secret_identity_file_whose_name_is_not_a_name_is_refused(tmp_path):
    from secure_collab.keys import load_identity

    init_keys(tmp_path / "keys", ["a", "b"])
    path = tmp_path / "keys" / "party-a.key_secret"
    path.write_text(path.read_text().replace('name = "a"', r'name = "a\n"'))
    with pytest.raises(KeyFileError, match="party name"):
        load_identity(path)


def _header(**changes) -> list[bytes]:
    hello = Message(MsgType.HELLO, "s1", sender="a", config="0" * 64, body={"role": "party", "public": False})
    header = hello.header() | changes
    return [msgpack.packb(header, use_bin_type=True)]


@pytest.mark.parametrize("bad", HOSTILE_IDS + ["/abs", "S1", "a" * 33])
def test_the_wire_refuses_a_session_id_that_is_not_a_name(bad):
    Message.from_frames(_header())  # the honest header passes
    with pytest.raises(ProtocolError):
        Message.from_frames(_header(session=bad))


@pytest.mark.parametrize("bad", ["a\n", "a\x00", "../a", "A", "\u0430"])
def test_the_wire_refuses_a_sender_that_is_not_a_name(bad):
    with pytest.raises(ProtocolError):
        Message.from_frames(_header(sender=bad))


@pytest.mark.parametrize("bad", HOSTILE_IDS + ["/abs"])
def test_the_solver_state_directory_never_leaves_its_parent(tmp_path, bad):
    """The second line of defence: whatever id reaches it, the derived directory is refused outside its parent."""
    from secure_collab.files import child_dir

    bad = str(tmp_path / "abs") if bad == "/abs" else bad
    with pytest.raises(ValueError):
        child_dir(tmp_path / "solver", bad)
    assert tree(tmp_path) == set()
    assert child_dir(tmp_path / "solver", "s1") == (tmp_path / "solver" / "s1").resolve()


def test_a_session_directory_that_is_a_link_out_of_its_parent_is_refused(tmp_path):
    from secure_collab.files import child_dir

    (tmp_path / "solver").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "solver" / "s1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError):
        child_dir(tmp_path / "solver", "s1")
