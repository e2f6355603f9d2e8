"""How the two per-layer statistics are laid out as flat float64 vectors on the wire.

    G: the upper triangle (diagonal included) of the symmetric (d_k, d_k) matrix K Kᵀ, in the row-major
       order of ``numpy.triu_indices(d_k)``: d_k (d_k + 1) / 2 values.
    B: R Kᵀ of shape (d_v, d_k), raveled row-major: d_v d_k values.
    N: the party's number of edit requests in the round: one value (protected like the others, so only the
       total reaches the solver, where it bounds what the aggregate may hold).

Chunk i of a statistic with n values and chunk size c covers values [i c, min(n, (i + 1) c)).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from secure_collab.protection.encoding import pack_symmetric, triangle_size, unpack_symmetric
from secure_collab.protocol.messages import ChunkBody, ProtocolError

if TYPE_CHECKING:
    from secure_collab.protection import PublicScheme


def pack_statistics(stats: Mapping[str, np.ndarray | int], d_k: int, d_v: int) -> dict[str, np.ndarray]:
    """Flatten {"G": (d_k, d_k) or packed, "B": (d_v, d_k) or flat, "N": count} to wire vectors."""
    if set(stats) != {"G", "B", "N"}:
        raise ValueError(f"statistics must be exactly G, B and N, got {sorted(stats)}")
    n = stats["N"]
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 0:
        raise ValueError(f"N must be a non-negative integer edit count, got {n!r}")
    g = np.asarray(stats["G"], dtype=np.float64)
    if g.ndim == 2:
        if g.shape != (d_k, d_k):
            raise ValueError(f"G has shape {g.shape}, want ({d_k}, {d_k})")
        g = pack_symmetric(g)
    b = np.asarray(stats["B"], dtype=np.float64).reshape(-1)
    if g.shape != (triangle_size(d_k),) or b.shape != (d_v * d_k,):
        raise ValueError(f"packed sizes G {g.shape} B {b.shape} do not fit d_k={d_k}, d_v={d_v}")
    return {"G": np.ascontiguousarray(g), "B": np.ascontiguousarray(b), "N": np.array([float(n)])}


def unpack_g(flat: np.ndarray, d_k: int) -> np.ndarray:
    """Rebuild the symmetric (d_k, d_k) matrix from its packed upper triangle."""
    return unpack_symmetric(np.asarray(flat, dtype=np.float64), d_k)


def chunk_bounds(n_values: int, chunk_values: int) -> list[tuple[int, int]]:
    """(offset, count) of each chunk."""
    return [(off, min(chunk_values, n_values - off)) for off in range(0, n_values, chunk_values)]


def window_chunks(scheme: PublicScheme, public: bytes, chunk_values: int, n_values: Iterable[int], parties: int,
                  memory_bytes: int) -> tuple[int, int]:
    """(W, largest): how many chunks' running sums fit ``memory_bytes`` (the coordinator's window,
    ``network.coordinator_memory_bytes``), sized by the largest chunk's running sum over ``parties``
    (``PublicScheme.sum_bytes_bound``) among statistics of ``n_values`` values each in chunks of ``chunk_values``.
    W < 1 means not even one chunk's sum fits: the caller refuses."""
    largest = max(scheme.sum_bytes_bound(public, min(chunk_values, n), parties) for n in n_values)
    return memory_bytes // largest, largest


def chunk_body(attempt: int, index: int, bounds: Sequence[tuple[int, int]],
               payload: Mapping[str, Any]) -> ChunkBody:
    """The body of a CONTRIB (and the start of an AGGREGATE's) for chunk ``index`` of ``bounds``
    (``chunk_bounds``): attempt, chunk index, chunk count, offset, value count, protection payload header."""
    offset, count = bounds[index]
    return {"attempt": attempt, "chunk": index, "n_chunks": len(bounds), "offset": offset, "count": count,
            "payload": dict(payload)}


def parse_chunk_body(body: ChunkBody, n_values: int, chunk_values: int) -> int:
    """The chunk index of a received chunk body (schema-checked already), after checking that its index, chunk
    count, offset and value count are those of the configured chunking; ProtocolError else."""
    bounds = chunk_bounds(n_values, chunk_values)
    index = body["chunk"]
    if body["n_chunks"] != len(bounds) or not 0 <= index < len(bounds):
        raise ProtocolError(f"chunk {index}/{body['n_chunks']} does not fit {len(bounds)} chunks")
    if (body["offset"], body["count"]) != bounds[index]:
        raise ProtocolError(f"chunk {index} must cover {bounds[index]}")
    return int(index)
