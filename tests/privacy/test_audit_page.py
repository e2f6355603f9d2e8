"""The audit page as a privacy officer reads it: per role a verdict, one plain sentence why, the measured figure and
the setting that lowers it; a glossary; a timeline; statistics only in a details section; --session; edits."""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from secure_collab.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "network"))

from network_doubles import make_config, run_session  # noqa: E402

EPS = [EntryPoint("audit", "attacks.cli.audit", "secure_collab.commands")]
ROLES = ("coordinator", "solver", "party a", "party b", "party c")


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory) -> Path:
    """One ledger holding sessions s1 and s2 (as a coordinator host that ran two sessions)."""
    tmp = tmp_path_factory.mktemp("audit")
    for sid in ("s1", "s2"):
        cfg = make_config(tmp, id=sid, mode="shares")
        assert run_session(cfg).outcome.ok
    (tmp / "requests-a.jsonl").write_text("".join(json.dumps({"subject": s, "prompt": "{} is in", "target_new": "X"})
                                                  + "\n" for s in ("France", "Peru", "Chad")))
    return cfg.paths.ledger


def test_several_sessions_need_session_and_an_unknown_one_is_named(two_sessions, tmp_path, capsys):
    out = str(tmp_path / "a.html")
    assert main(["audit", "--ledger", str(two_sessions), "--html", out], EPS) == 2
    assert "holds 2 sessions (s1, s2): choose one with --session" in capsys.readouterr().err
    assert main(["audit", "--ledger", str(two_sessions), "--html", out, "--session", "nope"], EPS) == 2
    assert "no session 'nope'; it holds s1, s2" in capsys.readouterr().err


def test_each_role_has_a_verdict_a_reason_a_figure_and_a_setting(two_sessions, tmp_path):
    page = tmp_path / "audit.html"
    assert main(["audit", "--ledger", str(two_sessions), "--html", str(page), "--session", "s1",
                 "--requests", str(two_sessions.parent / "requests-a.jsonl")], EPS) == 0
    text = page.read_text()
    assert "Privacy audit of session s1" in text
    for role in ROLES:
        row = re.search(rf"<tr class='(ok|warn|leak)' data-role='{role}'>(.*?)</tr>", text)
        assert row, role
        cells = dict(re.findall(r"<td class='(level|reason|figure|setting)'>(.*?)</td>", row.group(2)))
        assert cells["level"] == row.group(1)
        assert cells["reason"].endswith(".") and cells["reason"].count(". ") == 0  # one sentence
        assert re.search(r"\d", cells["figure"]) and ("docs/privacy.md" in cells["figure"] or "measured" in
                                                      cells["figure"] or "ledger" in cells["figure"])
        assert "session." in cells["setting"]  # names the setting
    assert "<h2>Words used here</h2>" in text and "<dt>ΔW</dt>" in text
    assert "<img alt='figure: timeline' src='data:image/png;base64," in text
    before, details = text.split("<details>", 1)
    assert not re.search(r"χ²|chi-square|p = ", before)  # the statistics: in the details section only
    assert re.search(r"<td>a</td><td>3</td>", details)  # the edits column, from requests-a.jsonl


def test_the_party_verdicts_follow_the_sessions_release_policy(tmp_path):
    """From the ledger alone: a defended weights release is named in the parties' verdict (which still points to
    the served release); a served release says the party never held ΔW and how much of its budget it used."""
    from test_net_served import _ask, served_config, served_session

    from attacks.audit import read_ledger, verdicts

    cfg = make_config(tmp_path / "w", defence="rank:2", mode="shares")
    assert run_session(cfg).outcome.ok
    v = verdicts(read_ledger(cfg.paths.ledger), {})["party a"]
    assert v.level == "warn" and "(rank:2)" in v.reason and "session.release = served" in v.setting
    plain = make_config(tmp_path / "n", mode="shares")
    assert run_session(plain).outcome.ok
    assert "defence" not in verdicts(read_ledger(plain.paths.ledger), {})["party a"].reason

    cfg = served_config(tmp_path / "s", budget=4)
    with served_session(cfg):
        assert _ask("a", cfg, {"kind": "logprobs", "prompt": "The capital of Oz is", "candidates": ["X", "Y"]})["ok"]
        for n in "abc":
            assert _ask(n, cfg, {"kind": "done"})["ok"]
    v = verdicts(read_ledger(cfg.paths.ledger), {})
    assert "never held ΔW" in v["party a"].reason and "for 4 forward passes and used 2" in v["party a"].reason
    assert "used 0" in v["party b"].reason and "session.query_budget" in v["party b"].setting
