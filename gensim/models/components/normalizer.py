"""Normalization statistics learned from a stream, then frozen, and restored exactly from checkpoints."""

from __future__ import annotations

import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """Per-feature mean and standard deviation accumulated over the first batches, then frozen.

    Statistics are kept in float64 buffers, so a Lightning checkpoint restores them exactly, and
    they stop changing after ``warmup_batches`` updates, so the network's targets stop moving.

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

    @property
    def frozen(self) -> bool:
        """True once ``warmup_batches`` updates were taken."""
        return int(self.updates) >= self.warmup_batches

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch into the statistics (Chan et al.'s parallel update); no-op once frozen.

        Parameters
        ----------
        x : Tensor, shape (B, dim)
        """
        if self.frozen:
            return
        x = x.detach().double()
        n_b = x.shape[0]
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / n)
        self.m2 += m2_b + delta**2 * (self.count * n_b / n)
        self.count.copy_(n)
        self.updates += 1

    def std(self) -> torch.Tensor:
        """Floored standard deviation, shape (dim,), float64."""
        if self.count < 2:
            raise RuntimeError("RunningNormalizer has seen fewer than 2 samples; call update() first")
        std = torch.sqrt(self.m2 / (self.count - 1))
        return torch.clamp(std, min=self.rel_floor * float(std.mean()) + 1e-12)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std, in x's dtype. Shape (B, dim) -> (B, dim)."""
        return ((x - self.mean.to(x.dtype)) / self.std().to(x.dtype))

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`. Shape (B, dim) -> (B, dim)."""
        return z * self.std().to(z.dtype) + self.mean.to(z.dtype)
