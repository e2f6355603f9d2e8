"""`edit --rounds R --update-rule RULE` end to end on a tiny model; requests placed in rounds by file or field."""

from __future__ import annotations

import json

import pytest

from secure_collab.cli import main
from secure_collab.data.formats import load_requests
from secure_collab.data.requests import Request, RequestError
from secure_collab.editing.session import requests_by_round
from tests.conftest import SHARED


@pytest.mark.parametrize("rule", ["memit-static", "memit-dynamic", "alphaedit"])
def test_edit_over_rounds_collab_equals_global(tmp_path, rule):
    out = tmp_path / "r.json"
    rc = main(["edit", "--model", "tiny-llama", "--requests", str(SHARED / "counterfact.json"), "--limit", "8",
               "--rounds", "2", "--parties", "2", "--update-rule", rule, "--tokens", "600", "--steps", "4",
               "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--quiet"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["update_rule"] == rule and r["rounds"] == 2 and r["edits"] == 8
    assert r["delta_rel_diff_vs_global"] <= 1e-9
    assert [row["edits"] for row in r["per_round_after_last"]] == [4, 4]
    assert len(r["delta_rel_diff_per_round_layer"]) == 2


def test_edit_refuses_rounds_it_cannot_fill(tmp_path, capsys):
    rc = main(["edit", "--model", "tiny-llama", "--requests", str(SHARED / "counterfact.json"), "--limit", "3",
               "--rounds", "2", "--parties", "2", "--cache-dir", str(tmp_path), "--quiet"])
    assert rc == 2 and "every round needs at least --parties=2 requests" in capsys.readouterr().err


def _req(i: int, round_: int | None = None) -> Request:
    return Request(subject=f"S{i}", prompt="{} is in", target_new="X", case_id=str(i), round=round_)


def test_requests_by_round_from_files_fields_or_blocks(tmp_path):
    assert requests_by_round([[_req(0), _req(1)], [_req(2)]], 2) == [[_req(0), _req(1)], [_req(2)]]
    assert requests_by_round([[_req(0, 1), _req(1, 0), _req(2, 1)]], 2) == [[_req(1, 0)], [_req(0, 1), _req(2, 1)]]
    assert requests_by_round([[_req(i) for i in range(5)]], 2) == [[_req(0), _req(1), _req(2)], [_req(3), _req(4)]]
    with pytest.raises(ValueError, match="3 request files for a session of 2 rounds"):
        requests_by_round([[_req(0)], [_req(1)], [_req(2)]], 2)
    with pytest.raises(ValueError, match="request file 2 is round 1"):
        requests_by_round([[_req(0)], [_req(1, 0)]], 2)
    with pytest.raises(ValueError, match="lack the 'round' field"):
        requests_by_round([[_req(0, 0), _req(1)]], 2)
    with pytest.raises(ValueError, match=r"requests for rounds \[3\]"):
        requests_by_round([[_req(0, 3)]], 2)


def test_round_field_is_read_from_any_format_and_checked(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"subject": "Paris", "prompt": "{} is in", "target_new": "Italy", "round": 1}\n')
    assert load_requests(path)[0].round == 1
    cf = json.loads((SHARED / "counterfact.json").read_text())[0]
    (tmp_path / "cf.json").write_text(json.dumps([{**cf, "round": 2}]))
    assert load_requests(tmp_path / "cf.json")[0].round == 2
    for bad in ("-1", "true", '"1"'):
        path.write_text('{"subject": "Paris", "prompt": "{} is in", "target_new": "Italy", "round": ' + bad + "}\n")
        with pytest.raises(RequestError, match="field 'round' must be an integer >= 0"):
            load_requests(path)
