"""MALMEN meta-training on the tiny models: the two-stage gradient is the exact gradient, the loss falls, an
interrupted run resumes to the uninterrupted state, and a finished run is a cache hit."""

from __future__ import annotations

import json

import pytest
import torch

from secure_collab.data.requests import Request
from secure_collab.editing.malmen.edit import layer_shapes
from secure_collab.editing.malmen.hparams import DEFAULTS
from secure_collab.editing.malmen.net import Hypernet
from secure_collab.editing.malmen.rows import edit_rows
from secure_collab.editing.malmen.train import TrainConfig, meta_loss, meta_step
from secure_collab.editing.malmen.trainer import fit_normaliser, train_hypernet
from tests.editing.test_malmen import make_hypernet


def _records(n: int, offset: int = 0, paraphrase: bool = True) -> list[Request]:
    words = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Berlin", "Madrid", "Quito", "Dakar"]
    people = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lu"]
    out = []
    for k in range(offset, offset + n):
        s = people[k % len(people)] + str(k)
        out.append(Request(subject=s, prompt="{} lives in", target_new=words[k % len(words)],
                           target_true=words[(k + 3) % len(words)],
                           paraphrase_prompts=(f"The home of {s} is",) if paraphrase else (),
                           neighborhood_prompts=(f"{people[(k + 5) % len(people)]} lives in",),
                           neighborhood_targets=(words[(k + 7) % len(words)],)))
    return out


@pytest.mark.parametrize("pair_batch", [1, 64])
def test_two_stage_gradient_is_the_exact_gradient(tiny, pair_batch):
    """Stage 1 (the meta loss one prompt per forward, or all at once) + stage 2 (through the normal equation by hand)
    equal autograd through torch.linalg.solve of the whole batch's loss."""
    batch = _records(3)
    hypernet = make_hypernet(tiny, batch)
    hypernet.zero_grad(set_to_none=True)
    meta_step(tiny, hypernet, batch, loc_coef=0.7, pair_batch=pair_batch)
    two_stage = {n: p.grad.clone() for n, p in hypernet.named_parameters() if p.grad is not None}

    hypernet.zero_grad(set_to_none=True)
    rows = edit_rows(tiny, batch, hypernet.hp.layers)
    shifts = {}
    with torch.enable_grad():
        for layer in hypernet.hp.layers:
            net, i = hypernet.net(layer), hypernet.index[layer]
            u = rows.u[layer]
            d = net.value_diffs(u, rows.g[layer], i)
            a = u.T @ u + torch.exp(net.lamda[i]) * torch.eye(u.shape[1], dtype=u.dtype)
            shifts[layer] = torch.linalg.solve(a, u.T @ d)
        loss, _, _ = meta_loss(tiny, batch, shifts, 0.7)
        loss.backward()
    direct = {n: p.grad for n, p in hypernet.named_parameters() if p.grad is not None}
    assert sorted(two_stage) == sorted(direct)
    for name, want in direct.items():
        if want.norm() == 0:
            assert two_stage[name].norm() == 0, name
            continue
        rel = float((two_stage[name] - want).norm() / want.norm())
        assert rel <= 1e-9, f"{name}: {rel:.2e}"


def test_loss_falls_on_a_fixed_batch(tiny):
    """Without paraphrases the generalisation term is the edit prompt's own NLL, which a random tiny model can learn
    to lower (its paraphrases share nothing with the prompt, so a fall there would need a real model)."""
    batch = _records(4, paraphrase=False)
    hp = DEFAULTS[tiny.name]
    hypernet = Hypernet(hp, layer_shapes(tiny, hp.layers)).double()
    fit_normaliser(tiny, hypernet, _records(16, 20), TrainConfig(norm_edits=16))
    opt = torch.optim.Adam(hypernet.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad(set_to_none=True)
        losses.append(meta_step(tiny, hypernet, batch, loc_coef=1.0)[0])
        torch.nn.utils.clip_grad_norm_(hypernet.parameters(), 1.0)
        opt.step()
    assert losses[-1] < 0.92 * losses[0] and min(losses[1:]) < losses[0], losses


CFG = TrainConfig(steps=4, edits_per_step=3, meta_lr=1e-2, norm_edits=8, val_every=2, val_edits=3,
                  checkpoint_every=1)


@pytest.mark.parametrize("model", ["tiny-gpt2"])
def test_resume_equals_uninterrupted_and_cache(model, tmp_path):
    from secure_collab.models import load_model

    lm = load_model(model)
    hp = DEFAULTS[model]
    train, val = _records(12), _records(3, 40)
    whole = train_hypernet(lm, hp, CFG, train, val, tmp_path / "whole")
    assert whole.finished and (tmp_path / "whole" / "curve.png").stat().st_size > 0
    half = train_hypernet(lm, hp, CFG, train, val, tmp_path / "half", stop_after=2)
    assert not half.finished and len(half.history) == 2
    resumed = train_hypernet(lm, hp, CFG, train, val, tmp_path / "half")
    assert resumed.finished
    a, b = whole.hypernet.state_dict(), resumed.hypernet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.hypernet.digest() == whole.hypernet.digest()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    again = train_hypernet(lm, hp, CFG, train, val, tmp_path / "whole")
    assert again.cached and again.hypernet.digest() == whole.hypernet.digest()
    saved = json.loads((tmp_path / "whole" / "hypernet" / "hypernet.json").read_text())
    assert saved["digest"] == whole.hypernet.digest()
    with pytest.raises(ValueError, match="another training run"):
        train_hypernet(lm, hp, CFG.__class__(**{**CFG.__dict__, "seed": 1}), train, val, tmp_path / "whole")


def test_cli_trains_then_hits_the_cache(tmp_path, capsys):
    from secure_collab.cli import main
    from tests.conftest import SHARED

    train, val = (SHARED / "counterfact_mend" / f"counterfact-{s}.json" for s in ("train", "val"))
    if not train.is_file():
        pytest.skip("../shared/data is not beside the checkout")
    argv = ["malmen", "train", "--model", "tiny-gpt2", "--train", str(train), "--train-limit", "40", "--val", str(val),
            "--steps", "2", "--val-edits", "2", "--norm-edits", "8", "--edits-per-step", "2", "--threads", "1",
            "--out", str(tmp_path / "run"), "-q"]
    assert main([*argv, "--json", str(tmp_path / "a.json")]) == 0
    assert main([*argv, "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert not a["cached"] and b["cached"] and a["digest"] == b["digest"] and a["steps"] == 2
    assert (tmp_path / "run" / "curve.png").is_file()


def test_edit_cli_with_the_malmen_backend(tmp_path, capsys):
    """`edit --backend malmen` with a trained hypernetwork: collab over 3 parties equals Global-Edit; MEMIT-only
    options are refused in one line."""
    from secure_collab.cli import main
    from secure_collab.models import load_model

    lm = load_model("tiny-llama")
    train_hypernet(lm, DEFAULTS["tiny-llama"], CFG.__class__(**{**CFG.__dict__, "steps": 1}), _records(12),
                   _records(3, 40), tmp_path / "run")
    argv = ["edit", "--backend", "malmen", "--model", "tiny-llama", "--hypernet", str(tmp_path / "run"),
            "--requests", "bundled", "--limit", "6", "--parties", "3", "--threads", "1", "-q"]
    assert main([*argv, "--json", str(tmp_path / "e.json")]) == 0
    out = json.loads((tmp_path / "e.json").read_text())
    assert out["backend"] == "malmen" and out["edits"] == 6 and out["rows"] > 6
    assert out["delta_rel_diff_vs_global"] <= 1e-12
    capsys.readouterr()
    assert main([*argv, "--lambda", "5"]) == 2
    assert "MEMIT options" in capsys.readouterr().err
    assert main([*argv, "--hypernet-digest", "0" * 64]) == 2
    assert "digest" in capsys.readouterr().err


def test_python_api_with_the_malmen_backend(tmp_path):
    from secure_collab.api import Editor
    from secure_collab.models import load_model

    train_hypernet(load_model("tiny-gpt2"), DEFAULTS["tiny-gpt2"], CFG.__class__(**{**CFG.__dict__, "steps": 1}),
                   _records(12), _records(3, 40), tmp_path / "run")
    editor = Editor.from_pretrained("tiny-gpt2", backend="malmen", hypernet=tmp_path / "run")
    assert editor.backend == "malmen" and editor.hparams.layers == DEFAULTS["tiny-gpt2"].layers
    result = editor.edit(_records(4), parties=2, method="collab", compare=True)
    assert sorted(result.deltas) == list(editor.hparams.layers) and result.delta_rel_diff_vs_global <= 1e-12
    editor.save_patch(tmp_path / "patch.safetensors")
    editor.restore()
    with pytest.raises(ValueError, match="hypernet"):
        Editor.from_pretrained("tiny-gpt2", backend="malmen")


def test_the_kept_network_is_the_lowest_validation_loss_not_the_last(tmp_path, monkeypatch):
    """Early stopping on the validation meta loss: with validation losses 3, 1, 2 at steps 2, 4, 6 the run keeps the
    step-4 network (equal to a 4-step run of the same seed), and a cache hit reports the same step."""
    from secure_collab.editing.malmen import trainer
    from secure_collab.models import load_model

    lm = load_model("tiny-gpt2")
    hp = DEFAULTS["tiny-gpt2"]
    train, val = _records(12), _records(3, 40)
    losses = iter([3.0, 1.0, 2.0, 3.0, 1.0])
    real = trainer.evaluate

    def scripted(*args, **kwargs):
        out = real(*args, **kwargs)
        return {**out, "loss": next(losses)}

    monkeypatch.setattr(trainer, "evaluate", scripted)
    six = train_hypernet(lm, hp, CFG.__class__(**{**CFG.__dict__, "steps": 6}), train, val, tmp_path / "six")
    assert six.selected_step == 4 and [h["step"] for h in six.history if "val" in h] == [2, 4, 6]
    four = train_hypernet(lm, hp, CFG, train, val, tmp_path / "four")
    assert four.selected_step == 4
    assert six.hypernet.digest() == four.hypernet.digest()
    last = train_hypernet(lm, hp, CFG.__class__(**{**CFG.__dict__, "steps": 6}), train, val, tmp_path / "six")
    assert last.cached and last.selected_step == 4 and last.hypernet.digest() == four.hypernet.digest()
