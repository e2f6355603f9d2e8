"""Per-architecture names of the parts MEMIT touches: down-projection, block output, final norm, unembedding.

One ``ArchSpec`` per family. Module paths are templates with ``{}`` for the layer index.
GPT-2 stores its MLP projections as ``Conv1D`` with weight shape (in, out): every read and write of the
down-projection goes through ``down_weight`` / ``add_to_down_weight`` here so the orientation is handled once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    family: str
    down_proj: str  # module whose *input* is the key and whose weight W (d_v, d_k) is edited
    block: str  # decoder block whose output is the residual stream after layer l
    final_norm: str
    unembed: str
    n_layers_attr: str = "num_hidden_layers"
    conv1d: bool = False  # weight stored (in, out), as GPT-2's Conv1D does

    def down_name(self, layer: int) -> str:
        return self.down_proj.format(layer)

    def block_name(self, layer: int) -> str:
        return self.block.format(layer)


def _llama_like(family: str) -> ArchSpec:
    return ArchSpec(family, "model.layers.{}.mlp.down_proj", "model.layers.{}", "model.norm", "lm_head")


SPECS: dict[str, ArchSpec] = {
    "gpt2": ArchSpec(
        "gpt2", "transformer.h.{}.mlp.c_proj", "transformer.h.{}", "transformer.ln_f", "lm_head",
        n_layers_attr="n_layer", conv1d=True,
    ),
    "gptj": ArchSpec(
        "gptj", "transformer.h.{}.mlp.fc_out", "transformer.h.{}", "transformer.ln_f", "lm_head",
        n_layers_attr="n_layer",
    ),
    "gpt_neox": ArchSpec(
        "gpt_neox", "gpt_neox.layers.{}.mlp.dense_4h_to_h", "gpt_neox.layers.{}",
        "gpt_neox.final_layer_norm", "embed_out",
    ),
    **{name: _llama_like(name) for name in ("llama", "mistral", "qwen2", "gemma", "gemma2")},
}


def spec_for(model: nn.Module) -> ArchSpec:
    model_type = str(getattr(model.config, "model_type", ""))
    try:
        return SPECS[model_type]
    except KeyError:
        raise ValueError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(SPECS))}"
        ) from None


def n_layers(model: nn.Module, spec: ArchSpec) -> int:
    return int(getattr(model.config, spec.n_layers_attr))


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def down_weight(model: nn.Module, spec: ArchSpec, layer: int) -> torch.Tensor:
    """The down-projection weight as (d_v, d_k) = (out, in), a view (Conv1D transposed)."""
    w = cast(torch.Tensor, get_module(model, spec.down_name(layer)).weight)
    return w.T if spec.conv1d else w


def add_to_down_weight(model: nn.Module, spec: ArchSpec, layer: int, delta: torch.Tensor) -> None:
    """W += delta, with delta given as (d_v, d_k); cast to the weight's dtype and device."""
    w = cast(torch.Tensor, get_module(model, spec.down_name(layer)).weight)
    d = delta.T if spec.conv1d else delta  # Conv1D stores (in, out)
    if d.shape != w.shape:
        raise ValueError(f"delta shape {tuple(delta.shape)} does not fit layer {layer} weight {tuple(w.shape)}")
    with torch.no_grad():
        w.add_(d.to(dtype=w.dtype, device=w.device))
