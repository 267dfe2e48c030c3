"""A tiny stochastic problem with a known conditional law, for the generative-model tests.

``y(x) = a t sin(pi x) + b (e1 cos(pi x) + 0.5 e2 sin(2 pi x))`` on 8 points of (0, 1), with
``(a, b)`` in ``[1, 2] x [0.5, 1]``, ``t`` in ``{0.5, 1}`` and ``e1, e2`` independent N(0, 1):
two latent directions whose amplitude depends on the parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset

from gensim.simulations import FieldSpec

X = (np.arange(8) + 0.5) / 8
FIELDS = (FieldSpec("y", (8,)),)
N_PARAMS = 2


def toy_moments(params: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and std, each shape (n, 8), of the toy at params (n, 2) and t (n,)."""
    a, b = params[:, :1], params[:, 1:]
    mean = a * t[:, None] * np.sin(np.pi * X)
    std = b * np.sqrt(np.cos(np.pi * X) ** 2 + 0.25 * np.sin(2 * np.pi * X) ** 2)
    return mean, std


def toy_batch(n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``n`` rows ``{"params": (n, 2), "t": (n,), "fields": (n, 8)}``, one realization each."""
    params = np.stack([rng.uniform(1, 2, n), rng.uniform(0.5, 1, n)], 1)
    t = rng.choice([0.5, 1.0], n)
    e = rng.standard_normal((n, 2))
    y = params[:, :1] * t[:, None] * np.sin(np.pi * X) + params[:, 1:] * (
        e[:, :1] * np.cos(np.pi * X) + 0.5 * e[:, 1:] * np.sin(2 * np.pi * X)
    )
    return {
        "params": torch.tensor(params, dtype=torch.float32),
        "t": torch.tensor(t, dtype=torch.float32),
        "fields": torch.tensor(y, dtype=torch.float32),
    }


class ToyBatches(IterableDataset):
    """Endless seeded batches of the toy."""

    def __init__(self, batch_size: int = 128, seed: int = 0) -> None:
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        while True:
            yield toy_batch(self.batch_size, rng)
