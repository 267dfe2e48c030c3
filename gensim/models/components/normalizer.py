"""Normalization statistics learned from a stream, then frozen, and restored exactly from checkpoints."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gensim.data.ranks import world_size


def _chan_merge(
    count: torch.Tensor,
    mean: torch.Tensor,
    m2: torch.Tensor,
    n_b: torch.Tensor,
    mean_b: torch.Tensor,
    m2_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chan et al.'s merge of two sets of (count, mean, sum of squared deviations).

    Parameters
    ----------
    count, n_b : Tensor, shape ()
        Sample counts, float64; either may be 0.
    mean, mean_b, m2, m2_b : Tensor, shape (dim,)
        float64.

    Returns
    -------
    (count, mean, m2) of the union.
    """
    n = count + n_b
    # clamp_min: an empty side (a rank whose batch had no rows) must add nothing, not 0/0.
    safe_n = n.clamp_min(1.0)
    delta = mean_b - mean
    return n, mean + delta * (n_b / safe_n), m2 + (m2_b + delta**2 * (count * n_b / safe_n))


class RunningNormalizer(nn.Module):
    """Per-feature mean and standard deviation accumulated over the first batches, then frozen.

    Statistics are kept in float64 buffers, so a Lightning checkpoint restores them exactly, and
    they stop changing after ``warmup_batches`` updates, so the network's targets stop moving.

    Under ``torch.distributed`` (world size > 1) every :meth:`update` is a collective: each rank's
    batch statistics are all-gathered and merged in rank order, so all ranks hold bit-identical
    statistics, equal (up to float64 round-off) to those of the concatenated batches, and freeze
    at the same update. Every rank must therefore call :meth:`update` the same number of times
    (once per training step, as the surrogates do).

    Nothing here waits on the device once frozen: the update count is mirrored in Python (so
    :attr:`frozen` reads no tensor), and the frozen mean and standard deviation are cached in
    each compute dtype. The cache is dropped when the module moves or changes dtype (``.to()``,
    ``.cuda()``, ...) and when a state dict is loaded.

    Parameters
    ----------
    dim : int
        Number of features.
    warmup_batches : int
        Updates accepted before the statistics freeze.
    rel_floor : float
        Standard deviations are floored at ``rel_floor`` times their mean over features, so that
        a feature that barely varies (a wall value, say) is not blown up.
    """

    def __init__(self, dim: int, warmup_batches: int = 100, rel_floor: float = 1e-2) -> None:
        super().__init__()
        self.warmup_batches = int(warmup_batches)
        self.rel_floor = float(rel_floor)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))
        # Python mirror of the ``updates`` buffer: reading the buffer would wait for the device.
        self._updates = 0
        # Frozen (mean, std) per compute dtype, on the buffers' device.
        self._frozen_cache: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def frozen(self) -> bool:
        """True once ``warmup_batches`` updates were taken."""
        return self._updates >= self.warmup_batches

    @property
    def version(self) -> int:
        """Updates taken: it changes whenever the statistics do (read without a device wait)."""
        return self._updates

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch into the statistics (Chan et al.'s parallel update); no-op once frozen.

        A collective under ``torch.distributed`` with world size > 1 (see the class notes).

        Parameters
        ----------
        x : Tensor, shape (B, dim)
            B may be 0.
        """
        if self.frozen:
            return
        x = x.detach().to(device=self.mean.device, dtype=torch.float64)
        n_b = x.new_tensor(float(x.shape[0]))
        mean_b = x.mean(0) if x.shape[0] else x.new_zeros(x.shape[1])
        m2_b = ((x - mean_b) ** 2).sum(0)
        count, mean, m2 = self.count, self.mean, self.m2
        world = world_size()
        if world == 1:
            count, mean, m2 = _chan_merge(count, mean, m2, n_b, mean_b, m2_b)
        else:
            # Gather every rank's (n, mean, m2) and fold them in rank order on every rank: the
            # same float64 operations in the same order give bit-identical statistics everywhere,
            # whatever the backend's reduction order.
            local = torch.cat([n_b.reshape(1), mean_b, m2_b])
            parts = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(parts, local)
            dim = mean_b.shape[0]
            for part in parts:
                count, mean, m2 = _chan_merge(count, mean, m2, part[0], part[1 : dim + 1], part[dim + 1 :])
        self.count.copy_(count)
        self.mean.copy_(mean)
        self.m2.copy_(m2)
        self.updates += 1
        self._updates += 1
        self._frozen_cache.clear()

    def std(self) -> torch.Tensor:
        """Floored standard deviation, shape (dim,), float64.

        With a single sample seen (count 1) the raw deviation is 0 and the floor applies.
        """
        if self._updates == 0:
            raise RuntimeError("RunningNormalizer has seen no samples yet; call update() first")
        # clamp_min instead of a Python test of the count: no wait on the device.
        std = torch.sqrt(self.m2 / (self.count - 1).clamp_min(1.0))
        return torch.maximum(std, self.rel_floor * std.mean() + 1e-12)

    def _stats(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (dim,), in ``dtype``: cached once frozen, recomputed while learning."""
        cached = self._frozen_cache.get(dtype)
        if cached is not None:
            return cached
        stats = self.mean.to(dtype), self.std().to(dtype)
        if self.frozen:
            self._frozen_cache[dtype] = stats
        return stats

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std, in x's dtype. Shape (B, dim) -> (B, dim)."""
        mean, std = self._stats(x.dtype)
        return (x - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`. Shape (B, dim) -> (B, dim)."""
        mean, std = self._stats(z.dtype)
        return z * std + mean

    # -- cache invalidation ---------------------------------------------------------------------
    def _apply(self, fn, recurse: bool = True):
        # .to(), .cuda(), .double(), ... all go through _apply: the cached copies would stay on
        # the old device.
        self._frozen_cache.clear()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # The checkpoint format is unchanged (the ``updates`` buffer); the mirror is read from it
        # once here, which is the only time it is read.
        if prefix + "updates" in state_dict:
            self._updates = int(state_dict[prefix + "updates"])
        self._frozen_cache.clear()
