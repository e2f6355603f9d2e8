"""`secure-collab protection-check` end to end on small dimensions."""

from __future__ import annotations

import json

import pytest

from secure_collab.cli import main

FIELDS = {"mode", "parties", "dim", "dropouts", "max_abs_err", "max_rel_err", "bytes_per_value",
          "protect_seconds", "accumulate_seconds", "open_seconds", "coordinator_peak_bytes"}


# ckks dim 89: 4,005 values + 6 integrity-tag limbs fill one 4,096-slot ciphertext
@pytest.mark.parametrize(("mode", "dim", "max_bytes"), [("shares", 40, 8.2), ("plain", 40, 8.2), ("ckks", 89, 33)])
def test_protection_check_writes_the_issue_fields(tmp_path, capsys, mode, dim, max_bytes):
    out = tmp_path / "r.json"
    code = main(["protection-check", "--mode", mode, "--parties", "4", "--dim", str(dim), "--dropouts", "1",
                 "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert FIELDS <= set(result)
    assert result["ok"] and result["n_values"] == dim * (dim + 1) // 2
    assert result["bytes_per_value"] <= max_bytes * (1 + 200 / result["n_values"])  # header overhead
    assert "max relative error" in capsys.readouterr().out  # the human summary; JSON only where --json says
    assert main(["protection-check", "--mode", mode, "--parties", "4", "--dim", str(dim), "--dropouts", "1",
                 "--json", "-", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)  # stdout is the JSON document alone
    assert again["ok"] and {k: again[k] for k in ("mode", "n_values", "dim")} == {k: result[k] for k in
                                                                                 ("mode", "n_values", "dim")}


def test_protection_check_refuses_bad_arguments(capsys):
    assert main(["protection-check", "--mode", "shares", "--parties", "2", "--dim", "4", "--dropouts", "2",
                 "--quiet"]) == 2
    with pytest.raises(SystemExit):
        main(["protection-check", "--mode", "none", "--parties", "2", "--dim", "4"])
