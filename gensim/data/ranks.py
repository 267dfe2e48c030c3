"""The collectives gensim needs across trainer ranks: the stream, the models and the callbacks.

Lightning's strategy creates the process group (gloo on CPU, NCCL on GPU); this module only
calls collectives on it, and does nothing when training runs in one process. Every function
here is a collective: all ranks must call it, in the same order, or they wait for each other
until the process group's timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
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
    return broadcast(compute() if world_size() == 1 or dist.get_rank() == 0 else None)


def gather_objects(obj: T) -> list[T]:
    """Every rank's (picklable, small) ``obj``, in rank order, on every rank; ``[obj]`` in a single process."""
    world = world_size()
    if world == 1:
        return [obj]
    out: list[T | None] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T | None, src: int = 0, device: torch.device | None = None) -> T:
    """Rank ``src``'s picklable ``obj`` on every rank; ``obj`` itself in a single process."""
    if world_size() == 1:
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=device)
    return box[0]


@dataclass(frozen=True)
class Ranks:
    """This process's place among the trainer ranks.

    Attributes
    ----------
    rank : int
        Global rank, 0 .. world_size - 1.
    world_size : int
        Number of trainer processes; 1 when training runs in one process.
    device : torch.device
        Device of the tensors used in collectives (NCCL needs them on the GPU).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def of(cls, trainer: Any | None) -> Ranks:
        """The ranks of a Lightning trainer; a single process when there is none or it runs alone."""
        if trainer is None or not (dist.is_available() and dist.is_initialized()):
            return cls()
        device = trainer.strategy.root_device
        if dist.get_backend() == "gloo":
            device = torch.device("cpu")
        return cls(int(trainer.global_rank), int(trainer.world_size), device)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather(self, values: np.ndarray | list[float]) -> np.ndarray:
        """Every rank's ``values`` (k,), stacked by rank: shape (world_size, k), float64."""
        local = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device).reshape(1, -1)
        if not self.distributed:
            return local.cpu().numpy()
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(out, local)
        return torch.cat(out).cpu().numpy()

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order."""
        return gather_objects(obj)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank."""
        return broadcast(obj, src, self.device)
