"""Merge baselines over per-party updates Δ_p (not private: they need each party's own ΔW).

Task Arithmetic: ΣΔ_p. Simple Average: ΣΔ_p / N. TIES (Yadav et al. 2023): keep each party's top-k % entries
by magnitude, elect a sign per entry by total mass, average the entries that agree with it, scale.
"""

from __future__ import annotations

import torch


def task_arithmetic(deltas: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(deltas).sum(0)


def simple_average(deltas: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(deltas).mean(0)


def ties(deltas: list[torch.Tensor], density: float = 0.2, scale: float = 0.4) -> torch.Tensor:
    stack = torch.stack(deltas)  # (P, d_v, d_k)
    flat = stack.reshape(len(deltas), -1)
    k = max(1, int(round(density * flat.shape[1])))
    # trim: per party, zero all but the k largest magnitudes
    thresh = flat.abs().kthvalue(flat.shape[1] - k + 1, dim=1, keepdim=True).values
    trimmed = torch.where(flat.abs() >= thresh, flat, torch.zeros_like(flat))
    # elect: the sign with more total mass per entry
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    # disjoint mean over the parties that agree
    count = agree.sum(0).clamp(min=1)
    merged = (trimmed * agree).sum(0) / count
    return (scale * merged).reshape(stack.shape[1:])


MERGES = {"ta": task_arithmetic, "sa": simple_average, "ties": ties}
