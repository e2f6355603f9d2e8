"""The MALMEN hypernetwork: one network per edited-weight shape, a per-layer embedding, a frozen normaliser.

For a row (u, ∇v) of layer l (u: d_k, the layer input at an answer token; ∇v: d_v, the edit loss's gradient with
respect to the layer output there):
  x  = (concat(u, ∇v) − mean) / (std + eps)                  frozen after training (``Normaliser``)
  x ← x + scale_l ⊙ relu(x A B + bias) + shift_l              per block (A: size×rank, B: rank×size)
  (ũ, ∇̃v) = split(x)
  d  = −η_l (uᵀũ) ∇̃v                                          the row's value difference (d_v)
MALMEN's reference code updates a running mean and standard deviation with every batch it sees, evaluation
included; here the normaliser is fitted once and frozen, so every party maps the same row to the same d (otherwise
collab ≠ global), and the frozen statistics are part of ``Hypernet.digest``. A is drawn with a 1/sqrt(size) scale
(the reference draws a plain standard normal); B = 0, scale = 1, shift = 0: each block starts as the identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import torch
from torch import nn

from secure_collab.editing.malmen.hparams import MalmenHParams

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "bundled"
"""Hypernetworks shipped with the package, one directory per model name (``hypernet.json`` + safetensors): trained
with `secure-collab malmen train` on public records only (each directory's ``provenance.json`` records the command,
the run key and why that step was kept)."""


def bundled_hypernet(model: str) -> Path | None:
    """The hypernetwork bundled for ``model`` (a built-in model name), or None where none is."""
    path = BUNDLED_DIR / str(model)
    return path if (path / "hypernet.json").is_file() else None


class Normaliser(nn.Module):
    """Per-feature (x − mean) / (std + eps), fitted once (``fit``) and then fixed."""

    mean: torch.Tensor
    std: torch.Tensor
    count: torch.Tensor

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))  # rows it was fitted on; 0: not fitted

    @property
    def fitted(self) -> bool:
        return float(self.count) > 0

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Mean and unbiased standard deviation of the rows of ``x`` (rows, size); once only."""
        if self.fitted:
            raise ValueError("the normaliser is frozen: it was fitted already")
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"fit needs (rows >= 2, {self.mean.shape[0]}), got {tuple(x.shape)}")
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0))
        self.count.fill_(x.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise ValueError("the normaliser has not been fitted: train (or load) the hypernetwork first")
        return (x - self.mean) / (self.std + torch.finfo(x.dtype).eps)


class Block(nn.Module):
    """x + scale_l ⊙ relu(x A B + bias) + shift_l: a residual low-rank MLP with a per-layer affine."""

    def __init__(self, size: int, rank: int, n_layers: int, generator: torch.Generator) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(size, rank, generator=generator) / math.sqrt(size))
        self.b = nn.Parameter(torch.zeros(rank, size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.scale = nn.Parameter(torch.ones(n_layers, size))
        self.shift = nn.Parameter(torch.zeros(n_layers, size))

    def forward(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return x + self.scale[i] * torch.relu(x @ self.a @ self.b + self.bias) + self.shift[i]


class ShapeNet(nn.Module):
    """The network for every edited layer of one (d_k, d_v); ``i`` is a layer's index among them."""

    def __init__(self, d_k: int, d_v: int, n_layers: int, hp: MalmenHParams, generator: torch.Generator) -> None:
        super().__init__()
        self.d_k, self.d_v = d_k, d_v
        self.normaliser = Normaliser(d_k + d_v)
        self.blocks = nn.ModuleList(Block(d_k + d_v, hp.rank, n_layers, generator) for _ in range(hp.n_blocks))
        self.lr = nn.Parameter(torch.full((n_layers,), hp.lr_init))  # η_l
        self.lamda = nn.Parameter(torch.full((n_layers,), hp.lambda_init))  # λ_l: the ridge is e^{λ_l}

    def forward(self, u: torch.Tensor, g: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ũ, ∇̃v) of rows u (r, d_k), g (r, d_v)."""
        x = self.normaliser(torch.cat((u, g), -1))  # (r, d_k + d_v)
        for block in self.blocks:
            x = block(x, i)
        return x[:, : self.d_k], x[:, self.d_k :]

    def value_diffs(self, u: torch.Tensor, g: torch.Tensor, i: int) -> torch.Tensor:
        """d = −η_l (uᵀũ) ∇̃v per row: (r, d_v)."""
        u_t, g_t = self(u, g, i)
        return -self.lr[i] * (u * u_t).sum(-1, keepdim=True) * g_t


def shape_key(d_k: int, d_v: int) -> str:
    return f"{d_k}x{d_v}"


class Hypernet(nn.Module):
    """The whole hypernetwork of a model: one ``ShapeNet`` per distinct (d_k, d_v) of the edited layers."""

    def __init__(self, hp: MalmenHParams, shapes: dict[int, tuple[int, int]]) -> None:
        super().__init__()
        if sorted(shapes) != list(hp.layers):
            raise ValueError(f"shapes given for layers {sorted(shapes)}, edited layers are {list(hp.layers)}")
        self.hp = hp
        self.shapes = dict(shapes)
        groups: dict[str, list[int]] = {}
        for layer in hp.layers:
            groups.setdefault(shape_key(*shapes[layer]), []).append(layer)
        self.index = {layer: members.index(layer) for members in groups.values() for layer in members}
        generator = torch.Generator().manual_seed(hp.seed)
        self.nets = nn.ModuleDict({key: ShapeNet(*shapes[members[0]], len(members), hp, generator)
                                   for key, members in groups.items()})

    def net(self, layer: int) -> ShapeNet:
        return self.nets[shape_key(*self.shapes[layer])]  # type: ignore[return-value]

    def value_diffs(self, layer: int, u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """d (r, d_v) for rows of ``layer``, in the network's dtype, ``hp.row_batch`` rows per call."""
        net = self.net(layer)
        dtype = net.lr.dtype
        parts = [net.value_diffs(u[s : s + self.hp.row_batch].to(dtype), g[s : s + self.hp.row_batch].to(dtype),
                                 self.index[layer])
                 for s in range(0, u.shape[0], self.hp.row_batch)]
        return torch.cat(parts) if parts else u.new_zeros((0, g.shape[1]), dtype=dtype)

    def ridge(self, layer: int) -> float:
        """e^{λ_l}: the multiple of I added to UᵀU in the solve."""
        return float(torch.exp(self.net(layer).lamda[self.index[layer]].detach().double()))

    @property
    def fitted(self) -> bool:
        return all(self.net(layer).normaliser.fitted for layer in self.hp.layers)

    def digest(self) -> str:
        """sha256 over the hyper-parameters, the layer shapes and every tensor (normaliser included) as float64:
        what a session file pins and every role checks. Refused before the normaliser is fitted."""
        if not self.fitted:
            raise ValueError("an unfitted hypernetwork has no digest: fit its normaliser (train it) first")
        h = hashlib.sha256()
        h.update(json.dumps({"hp": self.hp.net_dict(), "shapes": {str(k): v for k, v in self.shapes.items()}},
                            sort_keys=True).encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
        return h.hexdigest()

    def save(self, directory: Path, trained_for: str | None = None) -> Path:
        """``hypernet.safetensors`` and ``hypernet.json`` (hyper-parameters, shapes, digest and ``trained_for``, the
        digest of the base weights it was trained on) in ``directory``."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(directory / "hypernet.safetensors"))
        meta = {"hp": self.hp.to_dict(), "shapes": {str(k): list(v) for k, v in self.shapes.items()},
                "digest": self.digest() if self.fitted else None, "trained_for": trained_for}
        (directory / "hypernet.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        return directory

    @staticmethod
    def load(directory: Path, expect_digest: str | None = None) -> Hypernet:
        """The hypernet saved in ``directory``; its recomputed digest must match the recorded one (and
        ``expect_digest`` when given)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        meta = json.loads((directory / "hypernet.json").read_text())
        hp = MalmenHParams.from_dict(meta["hp"])
        shapes = {int(k): (int(v[0]), int(v[1])) for k, v in meta["shapes"].items()}
        with torch.device("meta"):  # the tensors these settings make, without allocating any of them
            described = {k: tuple(v.shape) for k, v in Hypernet(hp, shapes).state_dict().items()}
        path = str(directory / "hypernet.safetensors")
        with safe_open(path, framework="pt") as f:  # the header only: names, shapes, dtypes
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        if have != described or not dtypes <= {"F32", "F64"} or len(dtypes) != 1:
            raise ValueError(f"{path} does not hold the tensors its hypernet.json describes (names, shapes, one "
                             "float dtype)")
        hypernet = Hypernet(hp, shapes)
        state = load_file(path)
        hypernet.to(next(iter(state.values())).dtype)
        hypernet.load_state_dict(state)
        got = hypernet.digest()
        for want in (meta["digest"], expect_digest):
            if want is not None and want != got:
                raise ValueError(f"hypernetwork in {directory} has digest {got[:16]}…, expected {want[:16]}…")
        return hypernet


def load_hypernet(path: Path, expect_digest: str | None = None, dtype: torch.dtype | None = None,
                  device: torch.device | None = None, model_digest: str | None = None) -> Hypernet:
    """A trained hypernetwork from ``path``: its directory (hypernet.json) or a training run's directory (which holds
    ``hypernet/`` once finished); checked against its recorded digest and ``expect_digest``, then cast. A
    ``model_digest`` other than the base weights it was trained on is logged, not refused (the model may carry
    earlier rounds' edits)."""
    for candidate in (path, path / "hypernet"):
        if (candidate / "hypernet.json").is_file():
            net = Hypernet.load(candidate, expect_digest)
            trained_for = json.loads((candidate / "hypernet.json").read_text()).get("trained_for")
            if model_digest is not None and trained_for is not None and trained_for != model_digest:
                log.warning("the hypernetwork in %s was trained on other base weights (%s…, these are %s…)",
                            candidate, trained_for[:12], model_digest[:12])
            return net.to(device=device, dtype=dtype) if (dtype or device) else net
    raise FileNotFoundError(f"no trained hypernetwork in {path} (train one with `secure-collab malmen train`)")
