"""A reduced (POD) basis of flattened fields, fitted by a seeded randomized SVD and refitted as data arrive."""

from __future__ import annotations

import torch
from torch import nn


def randomized_svd(
    x: torch.Tensor, rank: int, oversample: int = 10, power_iterations: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading singular values and right singular vectors of ``x`` (Halko, Martinsson & Tropp, 2011).

    The random test matrix comes from a generator seeded with ``seed`` on the host, so the same
    ``x`` gives the same basis on every rank of a data-parallel study (``torch.svd_lowrank``
    draws from the global generator, which ranks do not share).

    Parameters
    ----------
    x : Tensor, shape (n, D)
    rank : int
        Singular pairs returned, at most ``min(n, D)``.
    oversample : int
        Extra columns of the test matrix (accuracy of the trailing pairs).
    power_iterations : int
        Subspace iterations (accuracy when the spectrum decays slowly).
    seed : int

    Returns
    -------
    s : Tensor, shape (rank,)
        Descending.
    v : Tensor, shape (rank, D)
        Orthonormal rows.
    """
    n, d = x.shape
    rank = min(int(rank), n, d)
    width = min(rank + int(oversample), n, d)
    omega = torch.randn(d, width, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(x.device)
    q = torch.linalg.qr(x @ omega).Q
    for _ in range(int(power_iterations)):
        # Re-orthonormalized at every pass: the powers of x would otherwise lose the trailing directions.
        q = torch.linalg.qr(x @ torch.linalg.qr(x.T @ q).Q).Q
    _, s, vh = torch.linalg.svd(q.T @ x, full_matrices=False)
    return s[:rank], vh[:rank]


class ReducedBasis(nn.Module):
    """``n_modes`` POD modes of a set of snapshots: ``y ~ mean + (c * unit) @ modes``.

    With ``whiten`` (the default) the coefficients' ``unit`` is the standard deviation of each
    mode's coefficients over the snapshots (``scale``), so the coefficients ``c`` a network
    predicts are about unit variance whatever the energy of their mode. Without it ``unit`` is 1:
    ``c`` are the plain projections, and a unit step of a network's output layer moves every mode
    by the same amount in field units (Adam steps each weight by about the learning rate, so
    whitened coefficients move the leading modes by lr x scale: noisier there, late in training;
    measured in ``reports/models/README.md``). The buffers are part of the state dict: a checkpoint restores the
    basis exactly. Before the first :meth:`fit` the basis is empty (``fitted`` is False).

    Parameters
    ----------
    n_features : int
        Flattened field size D.
    n_modes : int
        Modes kept, k.
    seed : int
        Seed of the randomized SVD's test matrix.
    whiten : bool
        Coefficients in units of each mode's standard deviation (True) or plain projections.

    Shapes
    ------
    decode: c (B, k) -> (B, D); project: y (B, D) -> c (B, k)
    """

    def __init__(self, n_features: int, n_modes: int, seed: int = 0, whiten: bool = True) -> None:
        super().__init__()
        self.whiten = bool(whiten)
        if n_modes < 1 or n_modes > n_features:
            raise ValueError(f"n_modes must be in [1, {n_features}] (the field size), got {n_modes}")
        self.n_modes, self.seed = int(n_modes), int(seed)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("modes", torch.zeros(n_modes, n_features))
        self.register_buffer("scale", torch.ones(n_modes))
        self.register_buffer("n_fits", torch.zeros((), dtype=torch.int64))
        # Fits in this process, in Python: ``version`` must not wait for the device at every step.
        self._fits_here = 0

    @property
    def version(self) -> int:
        """Fits taken in this process: it changes whenever the basis does."""
        return self._fits_here

    @property
    def fitted(self) -> bool:
        return bool(self.n_fits > 0)

    @property
    def unit(self) -> torch.Tensor:
        """Field-units size (k,) of a unit coefficient of each mode: ``scale``, or ones without ``whiten``."""
        return self.scale if self.whiten else torch.ones_like(self.scale)

    @torch.no_grad()
    def fit(self, snapshots: torch.Tensor) -> None:
        """Replace the basis by the POD of ``snapshots`` (n, D).

        With fewer than ``n_modes`` independent snapshots the trailing modes carry no energy:
        their scale is floored at 1e-6 of the leading one, so they decode to about nothing.
        """
        x = snapshots.to(self.mean.device, torch.float32)
        mean = x.mean(0)
        s, v = randomized_svd(x - mean, self.n_modes, seed=self.seed)
        scale = s / max(x.shape[0] - 1, 1) ** 0.5
        k = s.shape[0]
        self.mean.copy_(mean)
        self.modes.zero_()
        self.modes[:k] = v
        self.scale.fill_(0.0)
        self.scale[:k] = scale
        self.scale.clamp_(min=float(self.scale[0]) * 1e-6 + 1e-12)
        self.n_fits += 1
        self._fits_here += 1

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        """Fields (B, D) of coefficients (B, k)."""
        return self.mean + (c * self.unit) @ self.modes

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """Coefficients (B, k) of the orthogonal projection of fields (B, D) on the basis."""
        return ((y - self.mean) @ self.modes.T) / self.unit
