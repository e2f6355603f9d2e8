"""The `edit` command end to end on a tiny model: JSON fields, collab == global, the saved model reloads."""

from __future__ import annotations

import json

import pytest
import torch

from secure_collab.cli import main
from tests.conftest import SHARED

FIELDS = {"method", "variant", "parties", "edits", "efficacy", "generalization", "specificity", "score", "pre",
          "delta_rel_diff_vs_global", "seconds"}


@pytest.mark.parametrize("variant", ["sequential", "oneshot"])
def test_edit_collab_equals_global(tmp_path, variant):
    out = tmp_path / "r.json"
    rc = main(["edit", "--model", "tiny-llama", "--requests", str(SHARED / "counterfact.json"), "--limit", "6",
               "--parties", "3", "--method", "collab", "--variant", variant, "--tokens", "600",
               "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--quiet"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert FIELDS <= set(r)
    assert r["method"] == "collab" and r["variant"] == variant and r["parties"] == 3 and r["edits"] == 6
    assert r["delta_rel_diff_vs_global"] <= 1e-9
    assert set(r["pre"]) == {"efficacy", "generalization", "specificity", "score"}
    assert all(0.0 <= r[k] <= 1.0 for k in ("efficacy", "generalization", "specificity"))


def test_edit_ta_differs_and_saved_model_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    from secure_collab.models import load_model
    from secure_collab.models.specs import down_weight
    from secure_collab.patch import read_patch

    out, saved = tmp_path / "r.json", tmp_path / "model"
    rc = main(["edit", "--model", "tiny-gpt2", "--requests", str(SHARED / "counterfact.json"), "--limit", "6",
               "--parties", "3", "--method", "ta", "--tokens", "600", "--cache-dir", str(tmp_path / "cache"),
               "--save", str(saved), "--json", str(out), "--quiet"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["delta_rel_diff_vs_global"] > 1e-3
    patch = read_patch(saved / "patch.safetensors")
    base = load_model("tiny-gpt2")
    assert patch.base_model == "tiny-gpt2" and patch.base_digest == base.source_digest
    edited = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float64)
    for layer in r["hparams"]["layers"]:
        delta = patch.deltas[(0, layer)]
        torch.testing.assert_close(down_weight(edited, base.spec, layer),
                                   down_weight(base.model, base.spec, layer) + delta, rtol=1e-12, atol=1e-12)


def test_edit_refuses_more_parties_than_requests(tmp_path, capsys):
    rc = main(["edit", "--model", "tiny-gpt2", "--limit", "2", "--parties", "3", "--quiet",
               "--cache-dir", str(tmp_path)])
    assert rc == 2
    assert "--parties must be between 1 and the number of requests (2)" in capsys.readouterr().err
