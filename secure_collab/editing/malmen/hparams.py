"""Typed MALMEN hyper-parameters: which layers are edited and the size of the hypernetwork."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class MalmenHParams:
    """The hypernet's shape. ``layers``: the edited MLP output projections (``ArchSpec.down_proj``), ascending.

    The network over the concatenated (u, ∇v) has ``n_blocks`` residual low-rank blocks of rank ``rank``; η_l starts
    at ``lr_init`` and λ_l (the ridge e^{λ_l}) at ``lambda_init``, both learned per layer. ``seed`` draws the blocks'
    first factor. ``row_batch``: answer-token rows per hypernetwork call (memory only, not the result)."""

    layers: tuple[int, ...]
    rank: int = 128
    n_blocks: int = 2
    lr_init: float = 1e-4
    lambda_init: float = 0.0
    seed: int = 0
    row_batch: int = 1024
    edit_batch: int = 8  # edits per forward and backward pass when the rows are taken

    def __post_init__(self) -> None:
        if not self.layers or list(self.layers) != sorted(set(self.layers)) or min(self.layers) < 0:
            raise ValueError(f"layers must be a non-empty ascending list without repeats, got {self.layers}")
        if self.rank < 1 or self.n_blocks < 0:
            raise ValueError("rank must be >= 1 and n_blocks >= 0")
        if self.row_batch < 1 or self.edit_batch < 1:
            raise ValueError("row_batch and edit_batch must be >= 1")

    def with_(self, **changes: Any) -> MalmenHParams:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> MalmenHParams:
        return MalmenHParams(**{**d, "layers": tuple(d["layers"])})

    def net_dict(self) -> dict[str, Any]:
        """What fixes the network's function once trained (the digest's part; batch sizes are left out)."""
        d = self.to_dict()
        for k in ("row_batch", "edit_batch"):
            d.pop(k)
        return d


def last_layers(n_layers: int, count: int = 6) -> tuple[int, ...]:
    """The paper's choice: the last ``count`` MLP output projections (all of them in a shallower model)."""
    return tuple(range(max(0, n_layers - count), n_layers))


DEFAULTS: dict[str, MalmenHParams] = {
    # 30 layers, d_k = 1536, d_v = 576: (u, ∇v) has 2112 entries; rank 64 keeps a step near a second on one core
    "smollm2-135m": MalmenHParams(layers=last_layers(30), rank=64, n_blocks=2),
    "tiny-gpt2": MalmenHParams(layers=(2, 3), rank=8, n_blocks=2, lr_init=1e-2),
    "tiny-llama": MalmenHParams(layers=(2, 3), rank=8, n_blocks=2, lr_init=1e-2),
}


def default_malmen_hparams(model_name: str, n_layers: int | None = None) -> MalmenHParams:
    """Known defaults, else the last six MLP output projections with the generic network size."""
    if model_name in DEFAULTS:
        return DEFAULTS[model_name]
    if n_layers is None:
        raise ValueError(f"no MALMEN defaults for {model_name!r}: give the layers explicitly")
    return MalmenHParams(layers=last_layers(n_layers))
