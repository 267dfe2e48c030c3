"""The few collectives the streaming pipeline needs across trainer ranks.

Lightning's strategy creates the process group (gloo on CPU, NCCL on GPU); this module only
calls collectives on it, and does nothing when training runs in one process. Every function
here is a collective: all ranks must call it, in the same order, or they wait for each other
until the process group's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


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
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, device=self.device)
        return box[0]
