"""A learned key inverter in the manner of GEIA: a small decoder that writes the text a key was computed from.

Training data is public: sentences of the Wikipedia extracts (the covariance corpus). For a word end in a
sentence the public model gives the down-projection input there, averaged as MEMIT averages an edit's key
(½ the bare text, ½ the text after a context template: one template per sentence, in rotation, which also
serves as augmentation); the decoder learns to write the last ``window`` tokens up to that position. A
key from any view (an edit's key, a spectral estimate) then becomes text. The nearest-neighbour baseline
returns the text of the closest public training key: the inverter is only worth keeping if it beats it.

Everything is cached under ``<cache>/attacks/inverter/<digest>/``, the digest covering what the decoder was
trained on (model weights, layer, templates, sentences, positions, hyper-parameters): the key set
(``data.safetensors``), checkpoints every ``checkpoint_every`` steps (a killed run resumes from the last one)
and the final weights (``decoder.safetensors`` + ``meta.json``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from secure_collab.cache import cache_dir, digest_json
from secure_collab.editing.tokens import with_context
from secure_collab.files import temp_beside
from secure_collab.models.hooks import StopForward, capture_input

log = logging.getLogger(__name__)
FORMAT = 1


@dataclass(frozen=True)
class InverterConfig:
    n_sentences: int = 20_000  # training sentences (two positions each)
    n_val: int = 500
    positions_per_sentence: int = 2
    window: int = 8  # tokens the decoder writes: the last ones up to the key's position
    hidden: int = 512
    epochs: int = 5
    batch: int = 128
    lr: float = 2e-3
    seed: int = 0
    max_minutes: float = 40.0  # training stops here even before the last epoch
    checkpoint_every: int = 200


# --------------------------------------------------------------------------------------------- public text

def public_sentences(texts: Sequence[str], n: int, seed: int, min_chars: int = 30, max_chars: int = 200) -> list[str]:
    """``n`` sentences of 30-200 characters from ``texts``, in a seeded order (duplicates dropped)."""
    seen: set[str] = set()
    out: list[str] = []
    for text in texts:
        for s in re.split(r"(?<=[.!?])\s+", text):
            s = s.strip()
            if min_chars <= len(s) <= max_chars and s not in seen:
                seen.add(s)
                out.append(s)
    random.Random(seed).shuffle(out)
    if len(out) < n:
        raise ValueError(f"the corpus has {len(out)} usable sentences, {n} asked for")
    return out[:n]


def word_ends(sentence: str) -> list[int]:
    """Character positions just after each word (where a subject could end), from the second word on."""
    ends = [m.end() for m in re.finditer(r"\w+", sentence)]
    return ends[1:] or ends


def _last_token_before(offsets: torch.Tensor, mask: torch.Tensor, end: int) -> int:
    """The rule ``secure_collab.editing.tokens.encode`` uses for the subject's last token."""
    real = mask.bool() & (offsets[:, 1] > offsets[:, 0])
    idx = torch.nonzero(real & (offsets[:, 0] < end)).flatten()
    return int(idx[-1])


@torch.no_grad()
def _inputs_at(lm, texts: list[str], ends: list[list[int]], layer: int) -> tuple[list[torch.Tensor], list]:
    """Down-projection input at ``layer`` at the token ending before each char position: per text (p, d_k)."""
    tok = lm.tokenizer
    enc = tok(texts, return_offsets_mapping=True, padding=True, padding_side="right", add_special_tokens=True,
              return_tensors="pt")
    module = lm.model.get_submodule(lm.spec.down_name(layer))
    with capture_input(module, stop=True) as store:
        try:
            lm.model(input_ids=enc["input_ids"].to(lm.device), attention_mask=enc["attention_mask"].to(lm.device),
                     use_cache=False)
        except StopForward:
            pass
    h = store[0].float().cpu()  # (b, t, d_k)
    rows, idxs = [], []
    for r, positions in enumerate(ends):
        ix = [_last_token_before(enc["offset_mapping"][r], enc["attention_mask"][r], e) for e in positions]
        rows.append(h[r, ix])
        idxs.append((enc["input_ids"][r], ix))
    return rows, idxs


def build_key_set(lm, sentences: list[str], layer: int, templates: list[str], cfg: InverterConfig,
                  progress: Callable[[int, int], None] | None = None, batch: int = 32
                  ) -> tuple[torch.Tensor, list[list[int]]]:
    """(n, d_k) float32 keys and the token ids (≤ window) each was computed from, for every chosen position."""
    rng = random.Random(cfg.seed + 1)
    contexts = templates[1:] or templates
    keys: list[torch.Tensor] = []
    targets: list[list[int]] = []
    for s in range(0, len(sentences), batch):
        part = sentences[s:s + batch]
        ends = []
        for sent in part:
            cand = word_ends(sent)
            ends.append(sorted(rng.sample(cand, min(cfg.positions_per_sentence, len(cand)))))
        bare, ids = _inputs_at(lm, part, ends, layer)
        ctx_texts, ctx_ends = [], []
        for i, (sent, e) in enumerate(zip(part, ends, strict=True)):
            c = contexts[(s + i) % len(contexts)]
            text = with_context(c, sent)
            shift = c.index("{}")
            ctx_texts.append(text)
            ctx_ends.append([shift + x for x in e])
        ctx, _ = _inputs_at(lm, ctx_texts, ctx_ends, layer)
        for b, k_ctx, (row_ids, ix) in zip(bare, ctx, ids, strict=True):
            keys.append(0.5 * b + 0.5 * k_ctx)
            for i in ix:
                lo = max(0, i - cfg.window + 1)
                targets.append([int(t) for t in row_ids[lo:i + 1] if int(t) not in _special_ids(lm.tokenizer)])
        if progress:
            progress(min(s + batch, len(sentences)), len(sentences))
    return torch.cat(keys), targets


def _special_ids(tok) -> set[int]:
    return {int(i) for i in tok.all_special_ids}


# ------------------------------------------------------------------------------------------------- decoder

class KeyDecoder(nn.Module):
    """GRU decoder conditioned on a standardised key; token embeddings and output geometry from the public
    model's (frozen) embedding rows of the training vocabulary."""

    emb: torch.Tensor  # a registered buffer (V, d_model); declared so it is not typed Tensor | Module

    def __init__(self, d_k: int, emb: torch.Tensor, hidden: int):
        super().__init__()
        self.register_buffer("emb", emb)  # (V, d_model) frozen rows of the public model's embedding
        self.key_h0 = nn.Sequential(nn.Linear(d_k, hidden), nn.Tanh())
        self.key_step = nn.Linear(d_k, hidden)
        self.tok_in = nn.Linear(emb.shape[1], hidden)
        self.bos = nn.Parameter(torch.zeros(hidden))
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, emb.shape[1])
        self.bias = nn.Parameter(torch.zeros(emb.shape[0]))

    def logits(self, k: torch.Tensor, prev: torch.Tensor, h: torch.Tensor | None = None):
        """k (b, d_k) standardised, prev (b, t) vocabulary indices of the previous tokens (-1: start)."""
        x = self.tok_in(self.emb[prev.clamp_min(0)])  # (b, t, hidden)
        x = torch.where((prev < 0)[..., None], self.bos.expand_as(x), x) + self.key_step(k)[:, None]
        if h is None:
            h = self.key_h0(k)[None]  # (1, b, hidden)
        y, h = self.gru(x, h)
        return self.out(y) @ self.emb.T + self.bias, h  # (b, t, V)


@dataclass
class Inverter:
    decoder: KeyDecoder
    vocab: torch.Tensor  # (V,) public-model token id of each decoder index; index 0 is the end token
    mean: torch.Tensor  # (d_k,) standardisation of keys
    std: torch.Tensor
    train_keys: torch.Tensor  # (n, d_k) standardised public keys (for the nearest-neighbour baseline)
    train_texts: list[str]
    tokenizer: object
    meta: dict

    def _std(self, keys: torch.Tensor) -> torch.Tensor:
        return (keys.float().cpu() - self.mean) / self.std

    @torch.no_grad()
    def invert(self, keys: torch.Tensor, max_tokens: int | None = None) -> list[str]:
        """Greedy decoding: one text per key (n, d_k)."""
        k = self._std(keys)
        n = k.shape[0]
        prev = torch.full((n, 1), -1, dtype=torch.long)
        h = None
        done = torch.zeros(n, dtype=torch.bool)
        out: list[list[int]] = [[] for _ in range(n)]
        for _ in range(max_tokens or self.meta["window"] + 1):
            logits, h = self.decoder.logits(k, prev, h)
            nxt = logits[:, -1].argmax(-1)  # (n,)
            for i in range(n):
                if not done[i]:
                    if int(nxt[i]) == 0:
                        done[i] = True
                    else:
                        out[i].append(int(self.vocab[nxt[i]]))
            if bool(done.all()):
                break
            prev = nxt[:, None]
        return [self.tokenizer.decode(ids).strip() for ids in out]  # type: ignore[attr-defined]

    @torch.no_grad()
    def nearest(self, keys: torch.Tensor) -> list[str]:
        """Baseline: the text of the public training key with the highest cosine similarity."""
        k = nn.functional.normalize(self._std(keys), dim=1)
        bank = nn.functional.normalize(self.train_keys, dim=1)
        best = (k @ bank.T).argmax(1)
        return [self.train_texts[int(i)] for i in best]


def _digest(lm, layer: int, templates: list[str], sentences: list[str], cfg: InverterConfig) -> str:
    return digest_json({"format": FORMAT, "model": lm.source_digest, "layer": layer, "templates": templates,
                        "sentences": digest_json(sentences), "cfg": asdict(cfg)})[:24]


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = temp_beside(path)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def train_inverter(lm, layer: int, templates: list[str], texts: Sequence[str], cfg: InverterConfig = InverterConfig(),
                   cache: Path | None = None, say: Callable[[str], None] = print) -> Inverter:
    """Build (or load) the key set, train (or resume, or load) the decoder; returns the ready inverter."""
    from safetensors.torch import load_file

    sentences = public_sentences(texts, cfg.n_sentences + cfg.n_val, cfg.seed)
    root = cache_dir(cache) / "attacks" / "inverter" / _digest(lm, layer, templates, sentences, cfg)
    root.mkdir(parents=True, exist_ok=True)
    data_path = root / "data.safetensors"
    if data_path.is_file():
        data = load_file(str(data_path))
    else:
        t0 = time.monotonic()

        def progress(done: int, total: int) -> None:
            if done % 2048 < 32 or done == total:
                say(f"inverter keys: {done}/{total} sentences, {time.monotonic() - t0:.0f} s")

        keys, targets = build_key_set(lm, sentences, layer, templates, cfg, progress)
        lengths = torch.tensor([len(t) for t in targets])
        flat = torch.tensor([x for t in targets for x in t], dtype=torch.long)
        data = {"keys": keys, "lengths": lengths, "tokens": flat}
        _save_atomic(data, data_path)
    keys, lengths, flat = data["keys"], data["lengths"], data["tokens"]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    targets = [flat[offsets[i]:offsets[i + 1]].tolist() for i in range(len(lengths))]
    n_train = cfg.n_sentences * cfg.positions_per_sentence
    vocab = torch.tensor([-1] + sorted({t for seq in targets[:n_train] for t in seq}), dtype=torch.long)
    index = {int(t): i for i, t in enumerate(vocab.tolist())}
    mean, std = keys[:n_train].mean(0), keys[:n_train].std(0).clamp_min(1e-6)
    emb_w = lm.model.get_input_embeddings().weight.detach().float().cpu()
    emb = torch.cat([torch.zeros(1, emb_w.shape[1]), emb_w[vocab[1:]]])  # row 0: the end token (learned bias)
    torch.manual_seed(cfg.seed)
    dec = KeyDecoder(keys.shape[1], emb, cfg.hidden)
    texts_out = [lm.tokenizer.decode(t).strip() for t in targets]
    meta = {"format": FORMAT, "layer": layer, "window": cfg.window, "cfg": asdict(cfg), "digest": root.name,
            "n_train": n_train, "n_sentences": cfg.n_sentences, "vocab": len(vocab)}
    final = root / "decoder.safetensors"
    if final.is_file():
        dec.load_state_dict(load_file(str(final)), strict=False)
        meta.update(json.loads((root / "meta.json").read_text()))
    else:
        meta.update(_fit(dec, keys, targets, index, mean, std, n_train, cfg, root, say))
        _save_atomic({k: v for k, v in dec.state_dict().items() if k != "emb"}, final)
        (root / "meta.json").write_text(json.dumps(meta, indent=1))
    dec.eval()
    return Inverter(dec, vocab.clamp_min(0), mean, std, (keys[:n_train] - mean) / std, texts_out[:n_train],
                    lm.tokenizer, meta | {"val_keys": (keys[n_train:]), "val_texts": texts_out[n_train:]})


def _batch_tensors(seqs: list[list[int]], index: dict[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (start + tokens) and outputs (tokens + end) as decoder indices, padded with -100 in the output."""
    width = max(len(s) for s in seqs) + 1
    inp = torch.full((len(seqs), width), -1, dtype=torch.long)
    out = torch.full((len(seqs), width), -100, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids = [index.get(t, 0) for t in s]
        inp[r, 1:len(ids) + 1] = torch.tensor(ids, dtype=torch.long)
        out[r, :len(ids) + 1] = torch.tensor(ids + [0], dtype=torch.long)
    return inp, out


def _fit(dec: KeyDecoder, keys, targets, index, mean, std, n_train: int, cfg: InverterConfig, root: Path,
         say: Callable[[str], None]) -> dict:
    """Adam on token cross-entropy; checkpoints so that a killed run resumes at its last step."""
    from safetensors.torch import load_file

    params = [p for p in dec.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    steps_per_epoch = n_train // cfg.batch
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.05, 1.0 - s / max(1, total)))
    ckpt = root / "checkpoint.safetensors"
    step, elapsed = 0, 0.0
    if ckpt.is_file():
        saved = load_file(str(ckpt))
        dec.load_state_dict({k[4:]: v for k, v in saved.items() if k.startswith("dec.")}, strict=False)
        state = opt.state_dict()
        for i in range(len(params)):
            state["state"][i] = {"step": saved[f"opt.{i}.step"], "exp_avg": saved[f"opt.{i}.m"],
                                 "exp_avg_sq": saved[f"opt.{i}.v"]}
        opt.load_state_dict(state)
        step, elapsed = int(saved["step"]), float(saved["elapsed"])
        sched.last_epoch = step  # continue the schedule where it stopped (no optimiser step in between)
        for group, base in zip(opt.param_groups, sched.base_lrs, strict=True):
            group["lr"] = base * max(0.05, 1.0 - step / max(1, total))
        say(f"inverter: resuming at step {step}/{total}")
    k_all = (keys - mean) / std
    t0 = time.monotonic() - elapsed
    losses: list[float] = []
    while step < total and (time.monotonic() - t0) / 60 < cfg.max_minutes:
        epoch, within = divmod(step, steps_per_epoch)
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed + epoch))
        idx = order[within * cfg.batch:(within + 1) * cfg.batch]
        inp, out = _batch_tensors([targets[i] for i in idx.tolist()], index)
        logits, _ = dec.logits(k_all[idx], inp)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), out.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        step += 1
        losses.append(loss.item())
        if step % cfg.checkpoint_every == 0 or step == total:
            say(f"inverter: step {step}/{total} (epoch {epoch + 1}), loss {sum(losses[-50:]) / len(losses[-50:]):.3f}, "
                f"{time.monotonic() - t0:.0f} s")
            tensors = {f"dec.{k}": v for k, v in dec.state_dict().items() if k != "emb"}
            for i, p in enumerate(params):
                st = opt.state[p]
                tensors |= {f"opt.{i}.step": st["step"].reshape(()), f"opt.{i}.m": st["exp_avg"],
                            f"opt.{i}.v": st["exp_avg_sq"]}
            tensors |= {"step": torch.tensor(step), "elapsed": torch.tensor(time.monotonic() - t0)}
            _save_atomic(tensors, ckpt)
    return {"steps": step, "steps_planned": total, "train_seconds": round(time.monotonic() - t0, 1),
            "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:]))}
