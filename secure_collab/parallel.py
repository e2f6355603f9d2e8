"""One party's work split over processes (torch.distributed): which share each worker computes, and the sums.

A party may run as W processes ("workers"; rank 0 is the one on the network). Each computes a deterministic share
and the partial float64 sums are added with ``all_reduce``:

- requests (keys, residuals, targets): contiguous blocks of whole forward batches (``Shard.rows``), so every batch a
  worker runs is one a single process runs too, with the same padding: each key and target is the single process's,
  bit for bit (with ``request_batch`` 0, "all in one batch", each worker's share is one batch instead: equal within
  the model dtype's round-off);
- covariance corpus batches: batch i to worker i mod W (``Shard.owns_batch``).

A sum over workers then differs from the single process's only in the order of its float64 additions (relative
error of a few ulp, ~1e-16 × log of the count). Rows each worker owns alone are gathered by an all_reduce of
zero-filled blocks (``gather_rows``), which is exact: x + 0 = x.

``SINGLE`` (rank 0 of 1) is the one-process party: every method is then the identity and nothing is communicated.
The process group is made by the caller (``parties.workers``); this module only takes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    group: Any = None  # torch.distributed ProcessGroup of the sums; None: the default group
    device: torch.device | None = None  # where sums travel: this worker's GPU under NCCL; None: the CPU (gloo)

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} of {self.world} workers")

    @property
    def single(self) -> bool:
        return self.world == 1

    def rows(self, n: int, batch: int) -> range:
        """This worker's share of ``n`` requests: contiguous whole batches of ``batch`` requests (0: the n requests
        cut into one near-equal block per worker), the batches dealt out in near-equal contiguous runs."""
        if self.single:
            return range(n)
        unit = batch if batch > 0 else max(1, -(-n // self.world))
        batches = -(-n // unit)
        q, r = divmod(batches, self.world)
        first = self.rank * q + min(self.rank, r)
        count = q + (1 if self.rank < r else 0)
        return range(min(n, first * unit), min(n, (first + count) * unit))

    def owns_batch(self, index: int) -> bool:
        """Corpus batch ``index`` is this worker's (round robin: the batch count is not known in advance)."""
        return index % self.world == self.rank

    def sum(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Σ over workers of each tensor, in float64, in one all_reduce; new tensors on each input's device."""
        if self.single:
            return tensors
        import torch.distributed as dist

        dev = self.device or torch.device("cpu")
        flat = torch.cat([t.detach().to(device=dev, dtype=torch.float64).reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        out, at = [], 0
        for t in tensors:
            out.append(flat[at:at + t.numel()].reshape(t.shape).to(t.device))
            at += t.numel()
        return out

    def gather_rows(self, n: int, rows: range, values: torch.Tensor) -> torch.Tensor:
        """(n, c) float64 from each worker's ``values`` (len(rows), c) of its own ``rows``: exact (the others add 0)."""
        if self.single:
            return values.to(torch.float64)
        if values.shape[0] != len(rows):
            raise ValueError(f"{values.shape[0]} rows of values for {len(rows)} rows")
        full = torch.zeros(n, values.shape[1], dtype=torch.float64, device=values.device)
        full[rows.start:rows.stop] = values.to(torch.float64)
        return self.sum([full])[0]


SINGLE = Shard()
