"""C_l = E[k kᵀ], the uncentred second moment of the down-projection input over a public corpus, cached.

Two parts: pure math (``second_moment``, ``MomentAccumulator``: tensors in, float64 tensors out, on the keys'
device) and the model-running part (``layer_covariances``), which runs one forward pass per batch for all
requested layers at once and stops it at the input of the highest requested layer's down-projection.

Cache: ``<cache_dir>/covariance/L<layer>-<key digest>.safetensors`` (one float64 tensor ``"cov"``) plus a JSON
sidecar with the key, the number of tokens actually used and the sha256 of the tensor file. The key is
(model source_digest, layer, corpus digest, token budget, max sequence length, document order seed, model
dtype).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from secure_collab.cache import cache_dir, digest_json, sha256_file
from secure_collab.data.corpus import Corpus, open_corpus
from secure_collab.files import temp_beside
from secure_collab.models.hooks import StopForward, capture_input
from secure_collab.parallel import SINGLE, Shard

log = logging.getLogger(__name__)

DEFAULT_TOKENS = 100_000
DEFAULT_MAX_SEQ_LEN = 256
DEFAULT_BATCH_SIZE = 8
CACHE_FORMAT = 1


# ----------------------------------------------------------------------------------------------- pure math

def second_moment(keys: torch.Tensor) -> torch.Tensor:
    """(n, d_k) keys -> (d_k, d_k) float64 mean of k kᵀ."""
    if keys.ndim != 2 or keys.shape[0] == 0:
        raise ValueError(f"keys must be (n > 0, d_k), got {tuple(keys.shape)}")
    k = keys.to(torch.float64)  # (n, d_k)
    return k.T @ k / k.shape[0]


class MomentAccumulator:
    """Running float64 sum of k kᵀ over key batches; ``moment()`` = sum / count."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None  # (d_k, d_k) float64, on the first batch's device
        self.count = 0

    def add(self, keys: torch.Tensor) -> None:
        if keys.ndim != 2:
            raise ValueError(f"keys must be (n, d_k), got {tuple(keys.shape)}")
        if keys.shape[0] == 0:
            return
        k = keys.to(torch.float64)  # (n, d_k)
        if self.total is None:
            self.total = torch.zeros(k.shape[1], k.shape[1], dtype=torch.float64, device=k.device)
        self.total.addmm_(k.T, k)
        self.count += k.shape[0]

    def moment(self) -> torch.Tensor:
        if self.total is None or self.count == 0:
            raise ValueError("no keys accumulated")
        return self.total / self.count


# ------------------------------------------------------------------------------------------------- cache

@dataclass(frozen=True)
class CovarianceKey:
    model_digest: str
    layer: int
    corpus_digest: str
    tokens: int  # the budget asked for
    max_seq_len: int
    order_seed: int | None  # documents shuffled with random.Random(order_seed); None: file order
    dtype: str = "float32"  # the model's dtype: source_digest hashes float32 bytes, so it cannot tell

    def digest(self) -> str:
        return digest_json({"format": CACHE_FORMAT, **asdict(self)})

    def stem(self) -> str:
        return f"L{self.layer}-{self.digest()[:24]}"


@dataclass
class CovarianceEntry:
    key: CovarianceKey
    cov: torch.Tensor  # (d_k, d_k) float64, CPU
    tokens_used: int  # fewer than key.tokens only when the corpus ran out
    path: Path | None  # the cached tensor file, None when caching is off
    file_sha256: str | None
    from_cache: bool


def _paths(root: Path, key: CovarianceKey) -> tuple[Path, Path]:
    return root / f"{key.stem()}.safetensors", root / f"{key.stem()}.json"


def _load_cached(root: Path, key: CovarianceKey) -> CovarianceEntry | None:
    from safetensors.torch import load_file

    tensor_path, meta_path = _paths(root, key)
    if not (tensor_path.is_file() and meta_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    digest = sha256_file(tensor_path)
    if meta.get("key") != asdict(key) or meta.get("sha256") != digest:
        log.warning("ignoring covariance cache %s: key or digest mismatch", tensor_path)
        return None
    cov = load_file(str(tensor_path))["cov"]
    return CovarianceEntry(key, cov, int(meta["tokens_used"]), tensor_path, digest, from_cache=True)


def _store(root: Path, key: CovarianceKey, cov: torch.Tensor, tokens_used: int,
           info: dict) -> CovarianceEntry:
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    tensor_path, meta_path = _paths(root, key)
    tmp = temp_beside(tensor_path)
    save_file({"cov": cov.contiguous()}, str(tmp))
    digest = sha256_file(tmp)
    meta = {"key": asdict(key), "tokens_used": tokens_used, "shape": list(cov.shape), "dtype": "float64",
            "sha256": digest, **info}
    meta_tmp = temp_beside(meta_path)
    meta_tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, tensor_path)  # tensor first: a sidecar never points at a missing file
    os.replace(meta_tmp, meta_path)
    return CovarianceEntry(key, cov, tokens_used, tensor_path, digest, from_cache=False)


# ----------------------------------------------------------------------------------------- model running

POOL_BATCHES = 16  # documents are sorted by length within pools of this many batches: less padding


def _batches(tok, texts: Sequence[str], batch_size: int, max_seq_len: int
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids, attention_mask), each (b, t), with documents sorted by length within a pool.

    Wikipedia leads vary from a few to a few hundred tokens; batching them in file order wastes about half
    of the forward pass on padding. The order stays deterministic.
    """
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    pool = batch_size * POOL_BATCHES
    for start in range(0, len(texts), pool):
        ids = tok(list(texts[start:start + pool]), truncation=True, max_length=max_seq_len)["input_ids"]
        ids = sorted((x for x in ids if x), key=len)
        chunks = [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
        # batches in a pool in seeded order, so a budget ending mid-pool is not biased to short documents
        random.Random(start).shuffle(chunks)
        for chunk in chunks:
            width = max(len(x) for x in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (b, t)
            mask = torch.zeros((len(chunk), width), dtype=torch.bool)  # (b, t)
            for row, x in enumerate(chunk):
                input_ids[row, :len(x)] = torch.tensor(x)
                mask[row, :len(x)] = True
            yield input_ids, mask


def accumulate_layer_moments(loaded, layers: Sequence[int], texts: Sequence[str], tokens: int,
                             batch_size: int = DEFAULT_BATCH_SIZE, max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
                             progress: bool = True, stop_early: bool = True) -> tuple[dict[int, torch.Tensor], int]:
    """Run ``texts`` through ``loaded.model`` until ``tokens`` non-padding tokens were seen.

    Returns ({layer: (d_k, d_k) float64 CPU}, tokens used). The budget is exact: in the last batch only the
    first remaining tokens (row-major over the unpadded positions) are counted. Batches follow ``_batches``.
    """
    moments = accumulate_budget_moments(loaded, layers, texts, [tokens], batch_size, max_seq_len, progress,
                                        stop_early)
    return moments[tokens]


def accumulate_budget_moments(loaded, layers: Sequence[int], texts: Sequence[str], budgets: Sequence[int],
                              batch_size: int = DEFAULT_BATCH_SIZE, max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
                              progress: bool = True, stop_early: bool = True, shard: Shard = SINGLE
                              ) -> dict[int, tuple[dict[int, torch.Tensor], int]]:
    """``accumulate_layer_moments`` for several token budgets in one pass: {budget: (moments, tokens used)}.
    ``stop_early=False`` runs every forward to the logits (only the benchmark of what stopping saves wants it).

    The first b tokens of the pass are the same whatever the largest budget, so a budget's moment is a snapshot
    taken when the running sum reaches it; a budget the corpus cannot fill gets the whole corpus.

    ``shard`` (a party over several processes, ``secure_collab.parallel``): every worker tokenises the same batches
    and counts their tokens, but runs the forward pass only on its own (batch i on worker i mod W); each budget's
    segment of the pass is summed per worker, added over workers in float64 and the segments added up, so every
    worker returns the same moments, equal to one process's within float64 round-off of the order of additions.
    """
    from secure_collab.models.specs import down_weight, get_module, n_layers
    from secure_collab.progress import progress as progress_bar

    model, tok, spec = loaded.model, loaded.tokenizer, loaded.spec
    depth = n_layers(model, spec)
    if not layers or not all(0 <= layer < depth for layer in layers):
        raise ValueError(f"layers must be a non-empty subset of 0..{depth - 1}, got {list(layers)}")
    if not budgets or min(budgets) <= 0:
        raise ValueError("token budgets must be positive")
    layers = sorted(set(layers))
    pending = sorted(set(budgets))
    top, total = layers[-1], pending[-1]
    accs = {layer: MomentAccumulator() for layer in layers}
    out: dict[int, tuple[dict[int, torch.Tensor], int]] = {}
    seen = 0
    segments: list[tuple[int, int, list[torch.Tensor]]] = []  # sharded: (budget, tokens, sums since the last)

    def snapshot(budget: int) -> None:
        nonlocal accs
        if shard.single:
            out[budget] = ({layer: acc.moment().cpu().clone() for layer, acc in accs.items()}, seen)
            return
        sums = []
        for layer, acc in accs.items():  # a worker none of whose batches fell in the segment adds zeros
            d_k = down_weight(model, spec, layer).shape[1]
            sums.append(acc.total if acc.total is not None else torch.zeros(d_k, d_k, dtype=torch.float64))
        segments.append((budget, seen, sums))
        accs = {layer: MomentAccumulator() for layer in layers}

    with progress_bar(f"covariance of layers {layers[0]}-{top}", total, "tokens", enabled=progress) as advance, \
            torch.no_grad(), ExitStack() as stack:
        stores = {layer: stack.enter_context(capture_input(get_module(model, spec.down_name(layer)),
                                                           stop=stop_early and layer == top))
                  for layer in layers}
        # right padding: real tokens keep positions 0..len-1 whatever the model does with the mask
        for index, (ids, mask) in enumerate(_batches(tok, texts, batch_size, max_seq_len)):
            if seen >= total:
                break
            ids, mask = ids.to(loaded.device), mask.to(loaded.device)  # (b, t), (b, t)
            mine = shard.owns_batch(index)  # another worker's batch: only its tokens are counted here
            keys = {}
            if mine:
                try:
                    model(input_ids=ids, attention_mask=mask.long(), use_cache=False)
                except StopForward:
                    pass
                for layer in layers:
                    (x,) = stores[layer]  # (b, t, d_k): one forward, one call of each hook
                    stores[layer].clear()
                    keys[layer] = x.reshape(-1, x.shape[-1])  # (b*t, d_k)
            flat = mask.flatten()  # (b*t,)
            rank = torch.cumsum(flat.long(), 0)  # 1-based index of each real token within the batch
            done = 0  # tokens of this batch already added
            while True:  # up to each budget that falls inside this batch, then the rest
                stop = min(pending[0] - seen + done, int(flat.sum()))
                take = flat & (rank > done) & (rank <= stop)
                for layer in keys:
                    accs[layer].add(keys[layer][take.to(keys[layer].device)])  # (n, d_k)
                seen += stop - done
                advance(stop - done)
                done = stop
                if seen < pending[0]:
                    break
                snapshot(pending.pop(0))
                if not pending:
                    break
            if not pending:
                break
    if seen == 0:
        raise ValueError("the corpus gave no tokens")
    for budget in pending:  # the corpus ran out before these
        snapshot(budget)
    if not shard.single:
        out = _sum_segments(segments, layers, shard)
    return out


def _sum_segments(segments: list[tuple[int, int, list[torch.Tensor]]], layers: list[int], shard: Shard
                  ) -> dict[int, tuple[dict[int, torch.Tensor], int]]:
    """{budget: (moments, tokens)} from each worker's per-segment sums: one float64 all_reduce, then running sums."""
    summed = shard.sum([t for _, _, sums in segments for t in sums])
    out: dict[int, tuple[dict[int, torch.Tensor], int]] = {}
    running: list[torch.Tensor] = []
    for s, (budget, seen, _) in enumerate(segments):
        part = summed[s * len(layers):(s + 1) * len(layers)]
        running = part if not running else [a + b for a, b in zip(running, part, strict=True)]
        out[budget] = ({layer: (t / seen).cpu() for layer, t in zip(layers, running, strict=True)}, seen)
    return out


def model_max_len(model) -> int:
    """The longest sequence the model's position embeddings allow (GPT-2: n_positions)."""
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def corpus_texts(corpus: Corpus, order_seed: int | None) -> list[str]:
    """The corpus documents, shuffled by ``random.Random(order_seed)`` (not secret) unless it is None.

    The default Wikipedia file is sorted by title, so a token budget smaller than the corpus would otherwise
    see only articles starting with digits and 'A'.
    """
    texts = list(corpus.texts())
    if order_seed is not None:
        random.Random(order_seed).shuffle(texts)
    return texts


def covariance_entries(loaded, layers: Sequence[int], corpus: str | os.PathLike[str] | Corpus | None = None,
                       tokens: int = DEFAULT_TOKENS, batch_size: int = DEFAULT_BATCH_SIZE,
                       max_seq_len: int = DEFAULT_MAX_SEQ_LEN, cache: str | os.PathLike[str] | None = None,
                       use_cache: bool = True, order_seed: int | None = 0,
                       progress: bool = True, shard: Shard = SINGLE) -> dict[int, CovarianceEntry]:
    """C_l for each layer with its cache entry; layers not in the cache are computed in one shared pass."""
    return covariance_budget_entries(loaded, layers, [tokens], corpus, batch_size, max_seq_len, cache, use_cache,
                                     order_seed, progress, shard)[tokens]


def covariance_budget_entries(loaded, layers: Sequence[int], budgets: Sequence[int],
                              corpus: str | os.PathLike[str] | Corpus | None = None,
                              batch_size: int = DEFAULT_BATCH_SIZE, max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
                              cache: str | os.PathLike[str] | None = None, use_cache: bool = True,
                              order_seed: int | None = 0, progress: bool = True,
                              shard: Shard = SINGLE) -> dict[int, dict[int, CovarianceEntry]]:
    """{budget: {layer: entry}} for several token budgets; everything missing from the cache in one pass.

    ``shard``: the pass split over a party's workers (``accumulate_budget_moments``); all of them must call this
    with the same arguments and the same cache. Only worker 0 writes the cache; all return the same moments."""
    if min(budgets, default=0) <= 0 or batch_size <= 0 or max_seq_len <= 0:
        raise ValueError("tokens, batch_size and max_seq_len must be positive")
    corp = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
    root = cache_dir(cache) / "covariance"
    max_seq_len = min(max_seq_len, model_max_len(loaded.model))
    dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    keys = {(b, layer): CovarianceKey(loaded.source_digest, int(layer), corp.digest, int(b), max_seq_len,
                                      order_seed, dtype) for b in set(budgets) for layer in set(layers)}
    out: dict[int, dict[int, CovarianceEntry]] = {b: {} for b in set(budgets)}
    if use_cache:
        for (b, layer), key in keys.items():
            if (entry := _load_cached(root, key)) is not None:
                out[b][layer] = entry
    missing = sorted({layer for (b, layer) in keys if layer not in out[b]})
    todo = sorted({b for (b, layer) in keys if layer not in out[b]})
    if missing:
        moments = accumulate_budget_moments(loaded, missing, corpus_texts(corp, order_seed), todo, batch_size,
                                            max_seq_len, progress, shard=shard)
        info = {"model": loaded.name, "corpus": corp.name}
        for b in todo:
            mom, used = moments[b]
            if used < b:
                log.warning("corpus %s ran out after %d of %d tokens", corp.name, used, b)
            for layer in missing:
                if layer in out[b]:
                    continue
                store = use_cache and shard.rank == 0  # one writer (the others' moments are the same)
                out[b][layer] = (_store(root, keys[b, layer], mom[layer], used, info) if store else
                                 CovarianceEntry(keys[b, layer], mom[layer], used, None, None, from_cache=False))
    return {b: dict(sorted(v.items())) for b, v in out.items()}


def layer_covariances(loaded, layers: Sequence[int], corpus: str | os.PathLike[str] | Corpus | None = None,
                      tokens: int = DEFAULT_TOKENS, batch_size: int = DEFAULT_BATCH_SIZE,
                      max_seq_len: int = DEFAULT_MAX_SEQ_LEN, cache: str | os.PathLike[str] | None = None,
                      use_cache: bool = True, order_seed: int | None = 0,
                      progress: bool = True, shard: Shard = SINGLE) -> dict[int, torch.Tensor]:
    """{layer: C_l (d_k, d_k) float64 on CPU}, from the cache when present (see ``covariance_entries``)."""
    entries = covariance_entries(loaded, layers, corpus, tokens, batch_size, max_seq_len, cache, use_cache,
                                 order_seed, progress, shard)
    return {layer: e.cov for layer, e in entries.items()}
