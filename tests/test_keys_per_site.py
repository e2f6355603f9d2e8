"""Keys per site: `keys new` on each site, `keys roster` from the public files, `keys check` against the
fingerprints agreed out of band (an added, swapped or missing key is refused in one line)."""

from __future__ import annotations

import json
import stat

import pytest

from secure_collab.cli import main
from secure_collab.keys import load_public_identity, load_roster


def _new(capsys, site, *argv) -> str:
    assert main(["keys", "new", *argv, "--dir", str(site / "keys"), "--json", "-"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def sites(tmp_path, capsys):
    made = {}
    for who, argv in {"coordinator": ["--role", "coordinator"], "solver": ["--role", "solver"],
                      "a": ["--role", "party", "--name", "a"], "b": ["--role", "party", "--name", "b"]}.items():
        made[who] = _new(capsys, tmp_path / who, *argv)
    agreed = tmp_path / "agreed.txt"
    agreed.write_text("".join(f"{m['who']} {m['fingerprint']}\n" for m in made.values()))
    return tmp_path, made, agreed


def test_each_site_writes_its_secret_0600_and_a_public_file_with_its_fingerprint(sites):
    root, made, _ = sites
    secret = root / "a" / "keys" / "party-a.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    public = load_public_identity(root / "a" / "keys" / "party-a.public.toml")
    assert made["a"]["who"] == "party:a" and made["a"]["fingerprint"] == public.fingerprint()
    text = (root / "a" / "keys" / "party-a.public.toml").read_text()
    assert "secret" not in text and len(public.signing) == 32 and len(public.sealing) == 32


def test_roster_from_public_files_passes_check_and_is_pinned_by_session_init(sites, capsys):
    root, made, agreed = sites
    publics = [str(p) for p in root.glob("*/keys/*.public.toml")]
    assert main(["keys", "roster", "--out", str(root / "roster.toml"), *publics, "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)
    roster = load_roster(root / "roster.toml")
    assert info["roster_sha256"] == roster.digest() and sorted(roster.parties) == ["a", "b"]
    assert main(["keys", "check", "--roster", str(root / "roster.toml"), "--fingerprints", str(agreed)]) == 0
    assert "every fingerprint matches the 4 agreed" in capsys.readouterr().out
    assert main(["keys", "check", "--roster", str(root / "roster.toml"), "--fingerprints", str(agreed),
                 "--json", "-"]) == 0
    out = capsys.readouterr()  # --json -: stdout is the JSON alone, the human line moves to stderr
    checked = json.loads(out.out)
    assert checked["ok"] and checked["roster_sha256"] == roster.digest() and "every fingerprint" in out.err
    assert checked["fingerprints"] == {m["who"]: m["fingerprint"] for m in made.values()}
    assert main(["session", "init", "--model", "tiny-llama", "--roster", str(root / "roster.toml"), "--out",
                 str(root / "session.toml"), "--roster-sha256", "0" * 64, "-q"]) == 2
    assert "not the agreed" in capsys.readouterr().err
    assert main(["session", "init", "--model", "tiny-llama", "--roster", str(root / "roster.toml"), "--out",
                 str(root / "session.toml"), "--roster-sha256", roster.digest(), "--json", "-"]) == 0
    assert f'roster_sha256 = "{roster.digest()}"' in (root / "session.toml").read_text()
    out = capsys.readouterr()
    written = json.loads(out.out)  # --json -: the session's summary on stdout, its table on stderr
    assert written["path"] == str((root / "session.toml").resolve()) and written["config_digest"] in out.err


@pytest.mark.parametrize("tamper", ["added", "swapped", "missing"])
def test_check_refuses_a_roster_that_differs_from_the_agreed_fingerprints(sites, capsys, tamper):
    root, made, agreed = sites
    publics = sorted(root.glob("*/keys/*.public.toml"))
    if tamper == "added":  # the operator adds a key of its own as party m
        _new(capsys, root / "m", "--role", "party", "--name", "m")
        publics.append(root / "m" / "keys" / "party-m.public.toml")
    elif tamper == "swapped":  # the operator replaces party b's key with one it holds
        _new(capsys, root / "evil", "--role", "party", "--name", "b")
        publics = [p for p in publics if "party-b" not in p.name] + [root / "evil" / "keys" / "party-b.public.toml"]
    else:
        publics = [p for p in publics if "party-b" not in p.name]
    assert main(["keys", "roster", "--out", str(root / "roster.toml"), *map(str, publics), "-q"]) == 0
    assert main(["keys", "check", "--roster", str(root / "roster.toml"), "--fingerprints", str(agreed)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1
    want = {"added": "holds party:m, which nobody agreed to", "swapped": "party:b has fingerprint",
            "missing": "lacks party:b"}[tamper]
    assert want in err[0]


def test_a_public_file_whose_fingerprint_line_was_edited_is_refused(sites, capsys):
    root, _, _ = sites
    public = root / "a" / "keys" / "party-a.public.toml"
    public.write_text(public.read_text().replace('curve_public = "', 'curve_public = "X', 1)[:-1])
    assert main(["keys", "roster", "--out", str(root / "r.toml"), str(public)]) == 2
    assert "secure-collab keys: error:" in capsys.readouterr().err


def test_keys_new_never_overwrites(sites, capsys):
    root, _, _ = sites
    assert main(["keys", "new", "--role", "party", "--name", "a", "--dir", str(root / "a" / "keys")]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert main(["keys", "new", "--role", "solver", "--name", "x", "--dir", str(root / "x")]) == 2
    assert "--name is required for --role party, and only for it" in capsys.readouterr().err
