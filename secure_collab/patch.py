"""The one ΔW patch format (safetensors), written by `edit --save`/`party --patch` and read by `apply`.

One tensor per (round, layer), named ``r<round>.<module>.weight`` after the weight it updates, holding ΔW as
(d_v, d_k) = (out_features, in_features) whatever the module stores (GPT-2's Conv1D stores (in, out): ``apply``
adds the transpose there). The safetensors metadata (strings) say::

    format        "secure-collab-delta"       version  "1"
    base_model    the model name the ΔW was computed on
    base_digest   sha256 of those base weights (LoadedModel.source_digest); apply refuses other weights
    orientation   "out,in"
    entries       JSON list of {"tensor", "module", "layer", "round", "release_sha256"}; release_sha256 is the
                  sha256 of the solver-signed release a party applied ("" for a local edit)
    info          JSON object: method, variant, session id, configuration digest, ...

Rounds of one layer are applied in order (their sum).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from secure_collab.errors import SessionMismatch, UserError

FORMAT = "secure-collab-delta"
VERSION = "1"
ORIENTATION = "out,in"


class PatchError(UserError, ValueError):
    """The file is not a ΔW patch of this format, or does not fit the model."""


@dataclass(frozen=True)
class PatchEntry:
    tensor: str
    module: str
    layer: int
    round: int
    release_sha256: str = ""


@dataclass
class Patch:
    base_model: str
    base_digest: str
    entries: list[PatchEntry]
    deltas: dict[tuple[int, int], torch.Tensor]  # (round, layer) -> (d_v, d_k)
    info: dict[str, Any] = field(default_factory=dict)

    def per_layer(self) -> dict[int, torch.Tensor]:
        """Σ over rounds of each layer's ΔW, (d_v, d_k) float64."""
        out: dict[int, torch.Tensor] = {}
        for (_, layer), d in sorted(self.deltas.items()):
            out[layer] = out.get(layer, 0) + d.to(torch.float64)  # type: ignore[assignment]
        return out


def write_patch(path: Path, lm: Any, deltas: dict[tuple[int, int], Any], info: dict[str, Any] | None = None,
                release_sha256: dict[tuple[int, int], str] | None = None) -> Path:
    """Write ``deltas`` {(round, layer): (d_v, d_k) tensor or array} computed on ``lm``'s base weights."""
    from safetensors.torch import save

    from secure_collab.files import private_dir, write_private

    tensors, entries = {}, []
    for (round_, layer), delta in sorted(deltas.items()):
        module = lm.spec.down_name(layer)
        name = f"r{round_}.{module}.weight"
        tensors[name] = torch.as_tensor(delta).detach().to("cpu").contiguous().clone()  # no shared storage
        entries.append({"tensor": name, "module": module, "layer": int(layer), "round": int(round_),
                        "release_sha256": (release_sha256 or {}).get((round_, layer), "")})
    meta = {"format": FORMAT, "version": VERSION, "base_model": lm.name, "base_digest": lm.source_digest,
            "orientation": ORIENTATION, "entries": json.dumps(entries), "info": json.dumps(info or {})}
    path = Path(path)
    private_dir(path.parent, tighten=False)  # missing parents 0700; an existing directory is the user's
    return write_private(path, save(tensors, metadata=meta))  # the ΔW carry the edits: 0600, written atomically


def read_patch(path: Path) -> Patch:
    """Load and check a patch file (format, entries against tensors, 2-D shapes)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise PatchError(f"no patch file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError) as exc:
        raise PatchError(f"{path} is not a safetensors file: {exc}") from None
    if meta.get("format") != FORMAT or meta.get("orientation") != ORIENTATION:
        raise PatchError(f"{path} is not a {FORMAT} patch (metadata format={meta.get('format')!r})")
    try:
        entries = [PatchEntry(str(e["tensor"]), str(e["module"]), int(e["layer"]), int(e["round"]),
                              str(e.get("release_sha256", ""))) for e in json.loads(meta["entries"])]
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise PatchError(f"{path}: malformed entries metadata ({exc})") from None
    if {e.tensor for e in entries} != set(tensors) or len(entries) != len(tensors):
        raise PatchError(f"{path}: entries and tensors differ")
    deltas = {}
    for e in entries:
        t = tensors[e.tensor]
        if t.dim() != 2 or (e.round, e.layer) in deltas:
            raise PatchError(f"{path}: {e.tensor} is not one 2-D ΔW per (round, layer)")
        deltas[(e.round, e.layer)] = t
    return Patch(meta.get("base_model", ""), meta.get("base_digest", ""), entries, deltas, info)


def apply_patch(lm: Any, patch: Patch) -> None:
    """Add every ΔW of ``patch`` to ``lm`` in place, after checking base weights and module names."""
    from secure_collab.models.specs import add_to_down_weight, n_layers

    if patch.base_digest != lm.source_digest:
        raise SessionMismatch(
            f"the patch was computed on weights sha256 {patch.base_digest[:16]}… ({patch.base_model}); "
            f"{lm.name} here is {lm.source_digest[:16]}…")
    depth = n_layers(lm.model, lm.spec)
    for e in patch.entries:
        if not 0 <= e.layer < depth or e.module != lm.spec.down_name(e.layer):
            raise PatchError(f"the patch updates {e.module} (layer {e.layer}), which {lm.name} does not have")
    for (_, layer), delta in sorted(patch.deltas.items()):
        try:
            add_to_down_weight(lm.model, lm.spec, layer, delta)
        except ValueError as exc:
            raise PatchError(str(exc)) from None
