"""Collectives the models and callbacks share under DDP; each is a no-op in a single process.

Every function here is a collective when ``torch.distributed`` is initialized with more than one
process: every rank must call it, in the same order, or the ranks that did wait forever.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world_size() -> int:
    """Processes of the default process group; 1 when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows, in rank order, on every rank.

    Each rank may hold a different number of rows, zero included (a shard of a held-out set).

    Parameters
    ----------
    rows : Tensor, shape (n_r, *rest)
        This rank's rows, on the device the process group communicates on (CUDA for NCCL);
        ``rest`` and the dtype are the same on every rank.

    Returns
    -------
    Tensor, shape (sum of n_r, *rest)
        On ``rows``' device; identical on every rank. ``rows`` itself in a single process.
    """
    world = world_size()
    if world == 1:
        return rows
    count = torch.tensor([rows.shape[0]], dtype=torch.int64, device=rows.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    if max(sizes) == 0:
        return rows
    # all_gather wants equal shapes: pad every shard to the largest, then cut the padding off.
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def computed_on_rank_zero(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 only, its (picklable) result sent to every rank.

    For work whose result must be the same on every rank and that every rank could do alike
    (a seeded check on the full held-out set): one rank does it, the others wait, so ranks that
    share a machine's cores do not slow each other down with duplicates.
    """
    if world_size() == 1:
        return compute()
    box = [compute() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: T) -> list[T]:
    """Every rank's (picklable, small) ``obj``, in rank order, on every rank; ``[obj]`` in a single process."""
    world = world_size()
    if world == 1:
        return [obj]
    out: list[T | None] = [None] * world
    dist.all_gather_object(out, obj)
    return out
