"""The key inverter on a tiny model: trained once and cached by what it was trained on, resumed from its
checkpoint after an interruption, and better than nothing on held-out public keys."""

from __future__ import annotations

from dataclasses import replace

import pytest

from attacks.inverter import InverterConfig, public_sentences, train_inverter, word_ends

TEXTS = [f"The river number {i} flows through the old town of Sample{i} into the sea. It is {i} km long."
         for i in range(400)]
CFG = InverterConfig(n_sentences=300, n_val=40, epochs=2, batch=32, hidden=48, checkpoint_every=4)


def test_public_sentences_and_positions():
    s = public_sentences(TEXTS, 10, seed=0)
    assert len(s) == 10 and len(set(s)) == 10
    with pytest.raises(ValueError, match="usable sentences"):
        public_sentences(TEXTS[:2], 10, seed=0)
    assert word_ends("Paris is big") == [8, 12]


def test_cached_by_digest_and_resumed(tiny, tmp_path):
    if tiny.name != "tiny-llama":
        pytest.skip("one architecture is enough here")
    says: list[str] = []
    inv = train_inverter(tiny, 1, ["{}", "Hello. {}"], TEXTS, CFG, tmp_path, says.append)
    root = next((tmp_path / "attacks" / "inverter").iterdir())
    assert (root / "decoder.safetensors").is_file() and inv.meta["steps"] == inv.meta["steps_planned"]
    texts = inv.invert(inv.meta["val_keys"][:3])
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert inv.nearest(inv.meta["val_keys"][:2])[0] in inv.train_texts
    # same inputs: loaded from the cache, nothing trained
    says.clear()
    again = train_inverter(tiny, 1, ["{}", "Hello. {}"], TEXTS, CFG, tmp_path, says.append)
    assert not any("step" in m for m in says) and again.meta["digest"] == inv.meta["digest"]
    # other training sentences: another digest
    other = train_inverter(tiny, 1, ["{}", "Hello. {}"], TEXTS, replace(CFG, seed=1), tmp_path, says.append)
    assert other.meta["digest"] != inv.meta["digest"]
    # an interrupted run (checkpoint left, no final weights) resumes where it stopped
    (root / "decoder.safetensors").unlink()
    (root / "meta.json").unlink()
    says.clear()
    resumed = train_inverter(tiny, 1, ["{}", "Hello. {}"], TEXTS, CFG, tmp_path, says.append)
    assert any(m.startswith(f"inverter: resuming at step {inv.meta['steps']}") for m in says)
    assert resumed.meta["steps"] == inv.meta["steps"]
