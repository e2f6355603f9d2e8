"""Target vectors z*: MEMIT's compute_z, batched over requests, replaying only the layers above the edit.

For each request j a vector δ_j is added to the residual stream at the output of the last edited layer, at the
subject's last token, in every rewriting prompt (context template + prompt + target_new[:-1]) and in the KL
prompt ("{subject} is a"). δ_j minimises NLL(target_new) + kl_factor·KL(current ‖ initial) on the KL prompt
+ weight decay, with Adam, a norm clamp and an early stop, exactly as MEMIT does one request at a time.

The losses of different requests share nothing but the batch: the gradient of their sum w.r.t. δ_j is the
gradient of request j's own loss, and a request that reaches the early-stop loss is frozen and leaves the
batch while the others go on. The hidden states up to the edited layer are computed once; each step runs only
the blocks above it, with the arguments (masks, rotary embeddings) captured from that one full forward, and
only on the positions δ can change: from the subject's last token to the last position the loss reads (the
keys and values of the earlier positions come from the model's cache; see ``_UpperStack``). On SmolLM2 that
is 2-4 of ~20 positions per prompt.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from secure_collab.data.requests import Request
from secure_collab.editing.hparams import MemitHParams
from secure_collab.editing.tokens import encode, with_context
from secure_collab.models.hooks import StopForward
from secure_collab.models.loading import LoadedModel


@dataclass
class TargetResult:
    z: torch.Tensor  # (n, d_v) optimised residual-stream targets at the last edited layer
    z_init: torch.Tensor  # (n, d_v) the unedited states
    loss: list[float]  # final total loss per request
    nll: list[float]  # final NLL of target_new per request (mean per token, mean over prompts)
    steps: list[int]  # optimisation steps taken per request

    @property
    def residual_norm(self) -> list[float]:
        return (self.z - self.z_init).norm(dim=1).tolist()

    def take(self, rows: list[int]) -> TargetResult:
        """The targets of some requests, in the order given."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.z.device)
        return TargetResult(self.z[idx], self.z_init[idx], [self.loss[i] for i in rows],
                            [self.nll[i] for i in rows], [self.steps[i] for i in rows])

    def split(self, sizes: list[int]) -> list[TargetResult]:
        """Consecutive blocks of ``sizes`` requests (one per party, as ``split_parties`` cuts them)."""
        out, s = [], 0
        for n in sizes:
            out.append(self.take(list(range(s, s + n))))
            s += n
        return out

    @staticmethod
    def concat(parts: list[TargetResult]) -> TargetResult:
        return TargetResult(z=torch.cat([p.z for p in parts]), z_init=torch.cat([p.z_init for p in parts]),
                            loss=[x for p in parts for x in p.loss], nll=[x for p in parts for x in p.nll],
                            steps=[x for p in parts for x in p.steps])


@dataclass
class _Prepared:
    input_ids: torch.Tensor  # (b, t)
    attention_mask: torch.Tensor  # (b, t)
    owner: torch.Tensor  # (b,) request index of each row
    lookup: torch.Tensor  # (b,) subject-last position (where δ is added)
    tgt_row: torch.Tensor  # (m,) rows of target-token predictions
    tgt_pos: torch.Tensor  # (m,) positions predicting them
    tgt_id: torch.Tensor  # (m,) the target token ids
    tgt_weight: torch.Tensor  # (m,) 1 / (n_target_tokens · n_rewrite_prompts) for the request
    kl_rows: torch.Tensor  # (n,) one KL row per request
    bare_rows: torch.Tensor  # (n,) the bare-prompt rewriting row per request (for z_init)


def _prepare(lm: LoadedModel, requests: list[Request], hp: MemitHParams, templates: list[str]) -> _Prepared:
    tok, dev = lm.tokenizer, lm.device
    prompts, subjects, owner, kinds = [], [], [], []
    target_ids = []
    for j, r in enumerate(requests):
        ids = tok(" " + r.target_new, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"target_new {r.target_new!r} tokenises to nothing")
        target_ids.append(ids)
        for c in templates:
            prompts.append(with_context(c, r.prompt))
            subjects.append(r.subject)
            owner.append(j)
            kinds.append("rewrite")
        prompts.append(hp.kl_prompt)
        subjects.append(r.subject)
        owner.append(j)
        kinds.append("kl")
    b = encode(tok, prompts, subjects, torch.device("cpu"))
    # append target_new[:-1] after each rewriting prompt's last real token
    extra = max(len(t) for t in target_ids) - 1
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    n_rows, t0 = b.input_ids.shape
    ids = torch.full((n_rows, t0 + extra), pad_id, dtype=torch.long)
    mask = torch.zeros((n_rows, t0 + extra), dtype=torch.long)
    ids[:, :t0], mask[:, :t0] = b.input_ids, b.attention_mask
    tgt_row, tgt_pos, tgt_id, tgt_w = [], [], [], []
    n_rewrite = len(templates)
    for row in range(n_rows):
        if kinds[row] != "rewrite":
            continue
        tids = target_ids[owner[row]]
        length = int(b.lengths[row])
        ids[row, length : length + len(tids) - 1] = torch.tensor(tids[:-1], dtype=torch.long)
        mask[row, length : length + len(tids) - 1] = 1
        for k, token in enumerate(tids):  # position length-1+k predicts target token k
            tgt_row.append(row)
            tgt_pos.append(length - 1 + k)
            tgt_id.append(token)
            tgt_w.append(1.0 / (len(tids) * n_rewrite))
    kl_rows = [i for i, k in enumerate(kinds) if k == "kl"]
    bare_rows = [i for i, k in enumerate(kinds) if k == "rewrite" and (i % (n_rewrite + 1)) == 0]

    def t(x, dtype=torch.long):
        return torch.tensor(x, dtype=dtype, device=dev)

    return _Prepared(ids.to(dev), mask.to(dev), t(owner), b.subject_last.to(dev), t(tgt_row), t(tgt_pos),
                     t(tgt_id), t(tgt_w, torch.float64), t(kl_rows), t(bare_rows))


class _UpperStack:
    """Replays the decoder blocks above ``layer`` from captured per-block arguments, then norm + unembedding.

    ``window=False``: every position of every row is replayed. ``window=True`` (where the architecture's cache
    allows it, see ``_window_supported``): only each row's window, from the position where δ is added to the last
    position the loss reads. The positions before it do not depend on δ (causal attention), so their keys and values
    in every upper block are taken once from the first forward and the window attends to them through the
    model's own cache; positions after the last read one cannot change the loss. Same arithmetic on fewer tokens:
    the result changes by float rounding only (the reference tests hold it to 1e-12 in float64).
    """

    def __init__(self, lm: LoadedModel, layer: int, p: _Prepared, window: bool = True):
        from secure_collab.models.specs import n_layers

        model, spec = lm.model, lm.spec
        depth = n_layers(model, spec)
        self.blocks = [model.get_submodule(spec.block_name(i)) for i in range(layer + 1, depth)]
        self.norm = model.get_submodule(spec.final_norm)
        self.unembed = model.get_submodule(spec.unembed)
        self.cache: Any = None  # window mode: the model's cache
        self.prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # upper block -> its prefix (k, v)
        cache = _new_cache(model) if window else None
        store, handles = self._capture(layer + 1)
        here = model.get_submodule(spec.block_name(layer))
        outs: list[torch.Tensor] = []
        handles.append(here.register_forward_hook(lambda _m, _a, o: outs.append(o[0] if isinstance(o, tuple) else o)))
        extra: dict[str, Any] = {"use_cache": False} if cache is None else {cache[0]: cache[1], "use_cache": True}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            extra["logits_to_keep"] = 1  # the logits of this forward are not used: skip the unembedding
        try:
            with torch.no_grad():
                model(input_ids=p.input_ids, attention_mask=p.attention_mask, **extra)
        finally:
            for h in handles:
                h.remove()
        self.h0 = outs[0].detach()  # (b, t, d_v) residual stream after the edited layer
        self.col0 = torch.zeros(self.h0.shape[0], dtype=torch.long, device=self.h0.device)  # window start per row
        self.args = [store[i] for i in range(len(self.blocks))]
        if cache is not None and self.blocks and _window_supported(cache[1], range(layer + 1, depth)):
            self._to_window(model, p, cache, layer + 1, depth)

    def _capture(self, first: int) -> tuple[dict[int, tuple], list]:
        """Pre-hooks that record each upper block's arguments (masks, rotary embeddings, cache) on the next forward."""
        store: dict[int, tuple] = {}
        handles = []
        for i, blk in enumerate(self.blocks):
            def pre(_m, args, kwargs, i=i):
                store[i] = (args[1:], dict(kwargs))
            handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
        return store, handles

    def _to_window(self, model, p: _Prepared, cache: tuple[str, object], first: int, depth: int) -> None:
        """Keep only each row's window [δ position, last read position]; the prefix stays in the cache."""
        b, t, d = self.h0.shape
        dev = self.h0.device
        start = p.lookup  # (b,) δ goes here, in every row
        last = start.clone().scatter_reduce_(0, p.tgt_row, p.tgt_pos, reduce="amax")  # (b,) last position read
        width = last - start + 1
        s = int(width.max())
        j = torch.arange(s, device=dev)
        cols = (start[:, None] + j).clamp(max=t - 1)  # (b, s) absolute positions (padding columns repeat the last)
        kv = cache[1].layers  # type: ignore[attr-defined]
        self.prefix = {i: (kv[i].keys, kv[i].values) for i in range(first, depth)}  # (b, heads, t, hd), fixed
        # additive mask (b, 1, s, t + s): the row's own prefix [0, start), then the window causally; a padding
        # query (j >= width) sees only itself so that nothing is NaN, and no real query sees it
        allowed_prefix = torch.arange(t, device=dev)[None, None, :] < start[:, None, None]  # (b, 1, t)
        real = j[None, :] < width[:, None]  # (b, s)
        causal = j[None, :, None] >= j[None, None, :]  # (1, s, s): query i sees key j <= i
        allowed_win = causal & (real[:, None, :] | torch.eye(s, dtype=torch.bool, device=dev)[None])
        allowed = torch.cat([allowed_prefix.expand(b, s, t), allowed_win], dim=2)[:, None]
        mask = torch.zeros(allowed.shape, dtype=self.h0.dtype, device=dev)
        mask.masked_fill_(~allowed, torch.finfo(self.h0.dtype).min)
        store, handles = self._capture(first)

        def stop(_m, _a):
            raise StopForward

        handles.append(self.blocks[-1].register_forward_pre_hook(stop))  # the arguments are all we need
        try:
            with torch.no_grad():
                model(input_ids=p.input_ids.gather(1, cols), attention_mask=mask, position_ids=cols,
                      use_cache=True, **{cache[0]: cache[1]})
        except StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        self.cache = cache[1]
        self.args = [store[i] for i in range(len(self.blocks))]
        self.h0 = self.h0.gather(1, cols[:, :, None].expand(b, s, d))  # (b, s, d_v)
        self.col0 = start

    def subset(self, rows: torch.Tensor) -> _UpperStack:
        """The same stack restricted to some batch rows (per-row arguments such as the padding mask are sliced)."""
        n = self.h0.shape[0]

        def pick(x):
            if torch.is_tensor(x) and x.ndim >= 2 and x.shape[0] == n and n > 1:
                return x[rows]
            if isinstance(x, tuple):
                return tuple(pick(y) for y in x)
            return x

        new = copy.copy(self)
        new.h0, new.col0 = self.h0[rows], self.col0[rows]
        new.args = [(tuple(pick(a) for a in args), {k: pick(v) for k, v in kwargs.items()})
                    for args, kwargs in self.args]
        new.prefix = {i: (k[rows], v[rows]) for i, (k, v) in self.prefix.items()}
        return new

    def log_probs(self, h: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (m, vocab) at absolute positions ``pos`` of ``rows``; ``h`` holds the stack's columns."""
        for i, (k, v) in self.prefix.items():  # the cache appends the window to the prefix on every call
            self.cache.layers[i].keys, self.cache.layers[i].values = k, v
        for blk, (args, kwargs) in zip(self.blocks, self.args, strict=True):
            out = blk(h, *args, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        sel = self.norm(h[rows, pos - self.col0[rows]])  # only the positions the loss reads
        return torch.log_softmax(self.unembed(sel), dim=-1)  # (m, vocab), in the model's dtype as MEMIT


def _new_cache(model) -> tuple[str, object] | None:
    """(keyword, an empty DynamicCache) for the model's forward, or None where its forward takes no cache."""
    from transformers import DynamicCache

    params = inspect.signature(model.forward).parameters
    name = next((k for k in ("cache", "past_key_values") if k in params), None)
    return None if name is None else (name, DynamicCache(config=model.config))


def _window_supported(cache, layers: range) -> bool:
    """The window needs plain full-attention cache layers holding (b, heads, t, hd) for every upper block."""
    from transformers.cache_utils import DynamicLayer

    kv = getattr(cache, "layers", None)
    return kv is not None and len(kv) > layers[-1] and all(
        type(kv[i]) is DynamicLayer and torch.is_tensor(getattr(kv[i], "keys", None)) and kv[i].keys.ndim == 4
        for i in layers)


def compute_targets(lm: LoadedModel, requests: list[Request], hp: MemitHParams, templates: list[str],
                    progress: bool = False, window: bool = True) -> TargetResult:
    """Optimise z*_j on the model as it is now, ``hp.request_batch`` requests per batch (0: all at once).

    ``window``: replay only the positions δ can change (see ``_UpperStack``); False replays every position (the
    slower original, kept for the benchmark's before/after and the equality tests).
    """
    from secure_collab.progress import progress as progress_bar

    per = hp.request_batch or len(requests)
    parts = []
    with progress_bar("target optimisation", len(requests), "requests", enabled=progress) as advance:
        for s in range(0, len(requests), per):
            parts.append(_optimise(lm, requests[s : s + per], hp, templates, window))
            advance(len(parts[-1].loss))
    return parts[0] if len(parts) == 1 else TargetResult.concat(parts)


def _optimise(lm: LoadedModel, requests: list[Request], hp: MemitHParams, templates: list[str],
              window: bool = True) -> TargetResult:
    """One batch. Requests that reach the early-stop loss leave it: later steps run only the others' rows.

    The early-stop decision must not depend on the batch: a padded batch reduces in another order than one request
    alone, so a request's loss can differ in its last bits between the two (the decision once flipped on an Intel
    CPU where the threshold equalled a loss). A loss within ``_DECIDE_BAND`` of the threshold is therefore decided
    on the request's loss computed alone (its own rows, shapes and initial KL, as a batch of one computes it), so
    for the same δ the decision is the same batched or not. (δ itself follows the batch's gradients, equal to the
    lone ones up to rounding; only one request per batch, the CPU default, makes whole trajectories bit-equal.)
    """
    layer = hp.layers[-1]
    p = _prepare(lm, requests, hp, templates)
    full = _UpperStack(lm, layer, p, window)
    n, dev = len(requests), full.h0.device
    z_init = full.h0[p.bare_rows, p.lookup[p.bare_rows] - full.col0[p.bare_rows]]  # (n, d_v)
    delta = torch.zeros_like(z_init, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    steps = torch.zeros(n, dtype=torch.long)
    max_norm = hp.clamp_norm_factor * z_init.norm(dim=1)  # (n,)
    loss_j = torch.zeros(n, dtype=torch.float64, device=dev)  # reports only
    nll_j = torch.zeros(n, dtype=torch.float64, device=dev)
    batch = _Batch(p, full, z_init, hp)
    alone: dict[int, _Batch] = {}  # request -> the same request as a batch of one (built when a decision needs it)
    for it in range(hp.v_num_grad_steps):
        act = torch.nonzero(active).flatten()  # (a,) active requests
        loss, nll = batch.losses(active, delta)  # (a,), (a,)
        with torch.no_grad():
            decide = loss.detach().clone()
            if n > 1:
                near = torch.nonzero((decide - hp.v_loss_early_stop).abs()
                                     <= _DECIDE_BAND * abs(hp.v_loss_early_stop)).flatten()
                for i in near.tolist():
                    j = int(act[i])
                    if j not in alone:
                        alone[j] = _Batch.of(lm, requests[j], hp, templates, window)
                    decide[i] = alone[j].losses(torch.ones(1, dtype=torch.bool, device=dev),
                                                delta.detach()[j : j + 1])[0][0]
            loss_j[act], nll_j[act] = decide.double(), nll.detach().double()
            still = decide >= hp.v_loss_early_stop
            active[act[~still]] = False
        if not bool(active.any()) or it == hp.v_num_grad_steps - 1:
            break
        opt.zero_grad()
        (loss * still).sum().backward()
        before = delta.detach().clone()
        opt.step()
        with torch.no_grad():
            delta[~active] = before[~active]  # frozen requests keep their δ (Adam momentum would move them)
            steps[active.cpu()] += 1
            norms = delta.norm(dim=1)
            scale = torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms))
            delta.mul_(scale[:, None])
    z = (z_init + delta).detach()
    return TargetResult(z=z, z_init=z_init.detach(), loss=loss_j.tolist(), nll=nll_j.tolist(), steps=steps.tolist())


# A batched loss this close to the early-stop threshold (relative) is decided on the request's lone loss. Batching
# changes a loss by rounding only (~1e-16 relative in float64, ~1e-6 in float32), far inside the band; the band is
# rarely entered, so the extra lone forward costs nothing measurable.
_DECIDE_BAND = 1e-3


class _Batch:
    """The per-request losses of one batch of requests at a given δ, on the rows of the requests still active."""

    def __init__(self, p: _Prepared, full: _UpperStack, z_init: torch.Tensor, hp: MemitHParams) -> None:
        self.p, self.full, self.z_init, self.hp = p, full, z_init, hp
        self.weight = p.tgt_weight.to(full.h0.dtype)  # the loss stays in the model's dtype, as MEMIT's
        self.kl_init: torch.Tensor | None = None  # (n, vocab) at δ = 0, set by the first call (all active)
        self.rows_of: tuple | None = None

    @staticmethod
    def of(lm: LoadedModel, request: Request, hp: MemitHParams, templates: list[str], window: bool) -> _Batch:
        """``request`` alone, exactly as ``_optimise([request])`` computes it, its initial KL taken at δ = 0."""
        p = _prepare(lm, [request], hp, templates)
        full = _UpperStack(lm, hp.layers[-1], p, window)
        one = _Batch(p, full, full.h0[p.bare_rows, p.lookup[p.bare_rows] - full.col0[p.bare_rows]], hp)
        one.losses(torch.ones(1, dtype=torch.bool, device=full.h0.device), torch.zeros_like(one.z_init))
        return one

    def losses(self, active: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, NLL) of each active request, (a,) each; ``delta`` is (n, d_v) for all requests."""
        p, n, dev = self.p, active.shape[0], self.full.h0.device
        act = torch.nonzero(active).flatten()
        if self.rows_of is None or len(act) != self.rows_of[0]:  # (re)build the batch of active rows
            sel = torch.nonzero(active[p.owner]).flatten()  # rows of active requests
            newidx = torch.full((p.owner.shape[0],), -1, dtype=torch.long, device=dev)
            newidx[sel] = torch.arange(len(sel), device=dev)
            up = self.full.subset(sel) if len(sel) < p.owner.shape[0] else self.full
            t_mask = active[p.owner[p.tgt_row]]
            read_rows = torch.cat([newidx[p.tgt_row[t_mask]], newidx[p.kl_rows[act]]])
            read_pos = torch.cat([p.tgt_pos[t_mask], p.lookup[p.kl_rows[act]]])
            self.rows_of = (len(act), sel, up, t_mask, read_rows, read_pos)
        _, sel, up, t_mask, read_rows, read_pos = self.rows_of
        h = up.h0.index_put((torch.arange(len(sel), device=dev), p.lookup[sel] - up.col0), delta[p.owner[sel]],
                            accumulate=True)
        lp = up.log_probs(h, read_rows, read_pos)
        m = int(t_mask.sum())
        tok_lp = lp[:m].gather(1, p.tgt_id[t_mask][:, None]).squeeze(1)  # (m,)
        nll = torch.zeros(n, dtype=lp.dtype, device=dev).index_add(
            0, p.owner[p.tgt_row[t_mask]], -tok_lp * self.weight[t_mask])[act]  # (a,)
        kl_lp = lp[m:]  # (a, vocab) at the subject in "{subject} is a"
        if self.kl_init is None:
            self.kl_init = kl_lp.detach()  # every request is active at the first call
        kl = (kl_lp.exp() * (kl_lp - self.kl_init[act])).sum(1)  # KL(current ‖ initial), as MEMIT
        wd = self.hp.v_weight_decay * (delta[act].norm(dim=1) / self.z_init[act].norm(dim=1) ** 2)
        return nll + self.hp.kl_factor * kl + wd, nll
