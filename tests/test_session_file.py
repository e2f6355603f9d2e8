"""`secure-collab session init/show` and the ΔW patch format with `secure-collab apply`, on tiny models."""

from __future__ import annotations

import json
import os
import stat
import tomllib

import pytest
import torch

from secure_collab.cli import main
from secure_collab.keys import init_keys


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("session")
    init_keys(d / "keys", ["a", "b", "c"])
    assert main(["session", "init", "--model", "tiny-llama", "--parties", "a,b,c",
                 "--roster", str(d / "keys/roster.toml"), "--out", str(d / "session.toml"), "--id", "s-test",
                 "--lambda", "12.5", "--layers", "1-3",
                 "--endpoint", "tcp://coord.example.org:5555", "--cache-dir", str(d / "cache"), "-q"]) == 0
    return d


def test_session_init_takes_everything_derivable_from_the_model(session_dir):
    from secure_collab.config import load_config
    from secure_collab.editing.templates import context_templates
    from secure_collab.models import load_model
    from secure_collab.models.specs import down_weight

    text = (session_dir / "session.toml").read_text()
    doc = tomllib.loads(text)
    s = doc["session"]
    lm = load_model("tiny-llama")
    d_v, d_k = down_weight(lm.model, lm.spec, 1).shape  # independent of the writer: straight from the weights
    assert (s["d_k"], s["d_v"]) == (d_k, d_v) == (96, 64)
    assert s["layers"] == [1, 2, 3] and s["id"] == "s-test" and s["model"] == "tiny-llama"
    assert s["weights_digest"] == lm.source_digest
    assert s["hparams"]["lambda"] == 12.5 and "mom2_update_weight" not in s["hparams"]
    assert s["hparams"]["context_templates"] == context_templates(lm, 2, 5, 0, session_dir / "cache")
    assert doc["network"]["coordinator_endpoint"] == "tcp://coord.example.org:5555"
    # commented: every [session] and [network] key written carries a comment saying what it is
    for line in text.splitlines():
        if " = " in line and not line.startswith(" ") and line.split(" = ")[0] in s | doc["network"]:
            assert "#" in line, line
    config = load_config(session_dir / "session.toml")
    assert config.session.weights_digest == lm.source_digest
    assert sorted(config.roster.parties) == ["a", "b", "c"]


def test_session_init_refuses_to_overwrite_and_a_roster_mismatch(session_dir, capsys):
    argv = ["session", "init", "--model", "tiny-llama", "--roster", str(session_dir / "keys/roster.toml"),
            "--out", str(session_dir / "session.toml"), "--cache-dir", str(session_dir / "cache")]
    assert main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*argv[:-4], "--out", str(session_dir / "other.toml"), "--parties", "a,b,d"]) == 2
    assert "differ from the roster's a,b,c" in capsys.readouterr().err
    assert not (session_dir / "other.toml").exists()


def test_session_show_prints_what_sites_compare(session_dir, capsys):
    from secure_collab.config import load_config

    assert main(["session", "show", "--config", str(session_dir / "session.toml"), "--json", "-"]) == 0
    out = capsys.readouterr()
    info = json.loads(out.out)
    config = load_config(session_dir / "session.toml")
    assert info["config_digest"] == config.digest and config.digest in out.err
    assert info["fingerprints"]["party:a"] == config.roster.parties["a"].fingerprint()
    assert info["roster_sha256"] == config.session.roster_sha256 == config.roster.digest()


def test_hparams_lambda_is_mom2_update_weight_and_both_are_refused():
    from secure_collab.editing.session import session_hparams
    from secure_collab.errors import ConfigError

    hp = session_hparams("tiny-llama", 4, (1, 2), "sequential", 0, {"lambda": 7.0}, 1)
    assert hp.mom2_update_weight == 7.0
    with pytest.raises(ConfigError, match="both lambda and mom2_update_weight"):
        session_hparams("tiny-llama", 4, (1, 2), "sequential", 0, {"lambda": 7.0, "mom2_update_weight": 7.0}, 1)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_apply_writes_a_model_from_pretrained_loads(tmp_path, capsys, model):
    """Two rounds of ΔW for two layers: the saved model's weights are base + the rounds' sum, in the orientation
    the module stores (GPT-2's Conv1D: transposed), read straight from the state dict."""
    from transformers import AutoModelForCausalLM

    from secure_collab.models import load_model
    from secure_collab.patch import read_patch, write_patch

    lm = load_model(model)
    g = torch.Generator().manual_seed(0)
    d_v, d_k = lm.model.config.hidden_size, lm.model.config.n_inner if model == "tiny-gpt2" else 96
    deltas = {(r, lay): torch.randn(d_v, d_k, generator=g, dtype=torch.float64) for r in (0, 1) for lay in (1, 2)}
    old_umask = os.umask(0o022)
    try:  # a patch and an edited model carry the edits: private whatever the umask
        path = write_patch(tmp_path / "new" / "p.safetensors", lm, deltas, {"method": "test"}, {(0, 1): "ab" * 32})
        assert main(["apply", "--model", model, "--patch", str(path), "--out", str(tmp_path / "m"), "--json",
                     "-"]) == 0
    finally:
        os.umask(old_umask)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (path, path.parent, tmp_path / "m")] == [0o600, 0o700, 0o700]
    patch = read_patch(path)
    assert patch.base_model == model and patch.base_digest == lm.source_digest
    assert {e.module for e in patch.entries} == {lm.spec.down_name(1), lm.spec.down_name(2)}
    info = json.loads(capsys.readouterr().out)
    assert info["layers"] == [1, 2] and info["rounds"] == [0, 1] and info["release_sha256"]["0/1"] == "ab" * 32
    edited = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float64).state_dict()
    base = lm.model.state_dict()
    for lay in (1, 2):
        name = f"{lm.spec.down_name(lay)}.weight"
        total = deltas[(0, lay)] + deltas[(1, lay)]  # (d_v, d_k) = (out, in)
        expect = base[name] + (total.T if model == "tiny-gpt2" else total)
        torch.testing.assert_close(edited[name], expect, rtol=0, atol=1e-12)
    untouched = f"{lm.spec.down_name(0)}.weight"
    assert torch.equal(edited[untouched], base[untouched])


def test_apply_refuses_other_weights_and_non_patches(tmp_path, capsys):
    from secure_collab.models import load_model
    from secure_collab.patch import write_patch

    lm = load_model("tiny-llama")
    path = write_patch(tmp_path / "p.safetensors", lm, {(0, 1): torch.zeros(64, 96, dtype=torch.float64)})
    assert main(["apply", "--model", "tiny-gpt2", "--patch", str(path), "--out", str(tmp_path / "m")]) == 2
    assert "the patch was computed on weights" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert main(["apply", "--model", "tiny-llama", "--patch", str(tmp_path / "junk.safetensors"),
                 "--out", str(tmp_path / "m")]) == 2
    assert "is not a safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_tiny_models_built_in_threads_have_the_same_weights():
    """Roles run as threads (tests, the Python API) each build the tiny model: torch's one global generator
    interleaved their draws, and the weights-digest check at start caught the different weights."""
    import threading

    from secure_collab.models import load_model

    digests: list[str] = []
    threads = [threading.Thread(target=lambda: digests.append(load_model("tiny-llama").source_digest))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(digests) == 4 and len(set(digests)) == 1
    assert digests[0] == load_model("tiny-llama").source_digest
