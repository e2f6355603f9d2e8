"""Merge baselines over per-party updates Δ_p of one layer (not private: they need each party's own ΔW).

Task Arithmetic: ΣΔ_p. Simple Average: ΣΔ_p / N. TIES (Yadav et al. 2023) as CollabEdit's released code runs it
(``experiments/util_TIES.py``, the TIES authors' own helpers): per party keep the entries whose magnitude is at
least its (d − ⌊d·density⌋)-th smallest (so ⌊d·density⌋ + 1 entries when magnitudes are distinct), elect a
sign per entry by the sum of the kept values ("mass"), resolve a zero elected sign to the majority of the
elected signs of the whole layer, average the kept values that agree with the elected sign (an entry whose sign
stayed zero keeps the negative ones, as that code's ``torch.where(sign > 0, x > 0, x < 0)`` does), and scale
by 0.4.
"""

from __future__ import annotations

import torch


def task_arithmetic(deltas: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(deltas).sum(0)


def simple_average(deltas: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(deltas).mean(0)


def ties(deltas: list[torch.Tensor], density: float = 0.2, scale: float = 0.4) -> torch.Tensor:
    stack = torch.stack(deltas)  # (P, d_v, d_k)
    flat = stack.reshape(len(deltas), -1)  # (P, d)
    d = flat.shape[1]
    # trim: per party, keep magnitudes at or above the (d - ⌊d·density⌋)-th smallest
    kth = max(1, d - int(d * density))
    thresh = flat.abs().kthvalue(kth, dim=1, keepdim=True).values  # (P, 1)
    trimmed = flat * (flat.abs() >= thresh)
    # elect: the sign of the summed mass; zero -> the majority of the elected signs
    sign = torch.sign(trimmed.sum(0))  # (d,)
    sign[sign == 0] = torch.sign(sign.sum())
    # disjoint mean over the parties whose kept value agrees with the elected sign
    chosen = trimmed * torch.where(sign > 0, trimmed > 0, trimmed < 0)
    count = (chosen != 0).sum(0).clamp(min=1)
    return (scale * chosen.sum(0) / count).reshape(stack.shape[1:])


MERGES = {"ta": task_arithmetic, "sa": simple_average, "ties": ties}
