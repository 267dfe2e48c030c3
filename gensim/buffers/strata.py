"""Strata of the target distribution over (parameters, time): cells of the design x time bins.

The target of an on-line study is the distribution the surrogate should be good on: the design
distribution of the parameters (uniform in the parameter space's unit coordinates, which is what
the Sobol, Halton, LHS and uniform samplers draw from) times a uniform choice among the time
steps of a simulation. :class:`Strata` partitions it into ``n_cells x n_time_bins`` strata and
knows each stratum's target probability, so a buffer's content can be compared with the target
(:mod:`gensim.buffers.divergence`) or balanced against it
(:class:`~gensim.buffers.DistributionAware`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import qmc

from gensim.simulations.base import Simulation
from sampling import ParameterSpace

#: Entries of the direct-mapped cache of :meth:`Strata.stratum_of` (a power of 2): the cells of
#: up to this many parameter vectors, about 30 KiB. With ``k`` simulations streaming at once,
#: about ``k / CELL_CACHE_SIZE`` of them share an entry and miss.
CELL_CACHE_SIZE = 512


class Strata:
    """Voronoi cells of a space-filling design of the parameter space, times bins of time steps.

    The cell centers are the first ``n_cells`` points of a scrambled Sobol sequence in the unit
    hypercube of ``space`` (log-scaled parameters are partitioned in log10). A sample falls in
    the cell of its nearest center and in the time bin ``step * n_time_bins // n_steps``. Stratum
    ``s = cell * n_time_bins + bin``.

    Parameters
    ----------
    space : sampling.ParameterSpace
        The simulation's parameter space.
    n_steps : int
        Time steps per simulation (steps are ``0 .. n_steps - 1``).
    n_cells : int, default 32
        Cells of the parameter space, >= 1; a power of 2 keeps the Sobol centers balanced.
    n_time_bins : int, default 10
        Bins of time steps, ``1 <= n_time_bins <= n_steps``; bins hold equal numbers of steps
        (up to one) and so equal target mass.
    seed : int, default 0
        Scrambling of the centers. A divergence metric should use another seed than the policy
        it judges, so that it does not measure exactly what that policy balances.
    n_reference : int, default 2**14
        Sobol points (another scrambling) that estimate each cell's target mass; the relative
        error of a mass is about ``1 / sqrt(n_reference / n_cells)`` or less (quasi-random).

    Attributes
    ----------
    centers : ndarray, shape (n_cells, dim)
        Cell centers in unit coordinates.
    mass : ndarray, shape (n_strata,)
        Target probability of each stratum; sums to 1, every entry > 0.
    n_strata : int
        ``n_cells * n_time_bins``.
    """

    def __init__(
        self,
        space: ParameterSpace,
        n_steps: int,
        n_cells: int = 32,
        n_time_bins: int = 10,
        seed: int = 0,
        n_reference: int = 2**14,
    ) -> None:
        if not isinstance(space, ParameterSpace):
            raise TypeError(
                f"expected a sampling.ParameterSpace, got {type(space).__name__}; pass the "
                "simulation's `space` (or build with Strata.from_simulation)"
            )
        for name, value, low in (
            ("n_steps", n_steps, 1),
            ("n_cells", n_cells, 1),
            ("n_time_bins", n_time_bins, 1),
            ("n_reference", n_reference, 1),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if n_time_bins > n_steps:
            raise ValueError(
                f"n_time_bins ({n_time_bins}) must be <= n_steps ({n_steps}): a bin without a "
                "step would have no target mass; lower n_time_bins"
            )
        self.space = space
        self.n_steps, self.n_cells, self.n_time_bins = int(n_steps), int(n_cells), int(n_time_bins)
        self.seed = int(seed)
        self.n_strata = self.n_cells * self.n_time_bins
        self.centers = self._sobol(self.n_cells, self.seed)
        # For the one-sample path of every arrival: the unit map as a scale and shift (after
        # log10 of the log-scaled parameters), and the centers' half squared norms.
        low, high = space.lower.copy(), space.upper.copy()
        low[space.log], high[space.log] = np.log10(low[space.log]), np.log10(high[space.log])
        self._low, self._inv_width, self._log = low, 1.0 / (high - low), space.log.copy()
        self._half_norms = 0.5 * (self.centers**2).sum(axis=1)
        # stratum_of's direct-mapped cache: entry hash(key) % size holds one parameter vector
        # (its float64 bytes) and its cell; a new vector overwrites the entry it maps to.
        self._cache_keys: list[bytes | None] = [None] * CELL_CACHE_SIZE
        self._cache_cells = [0] * CELL_CACHE_SIZE
        # The reference is another scrambling of Sobol: with the centers' own scrambling the
        # masses would be biased toward the first points' cells.
        reference = self._sobol(int(n_reference), self.seed + 1)
        cell_mass = np.bincount(self.cell_of(reference), minlength=self.n_cells).astype(np.float64)
        # Each center lies in its own cell, so every cell has positive mass; one reference
        # point per cell keeps that true for a tiny n_reference too.
        cell_mass = (cell_mass + 1.0) / (cell_mass.sum() + self.n_cells)
        steps_per_bin = np.bincount(self.time_bin_of(np.arange(self.n_steps)), minlength=self.n_time_bins)
        self.mass = np.outer(cell_mass, steps_per_bin / self.n_steps).reshape(-1)

    @classmethod
    def from_simulation(cls, simulation: Simulation, **kwargs: Any) -> Strata:
        """Strata of a simulation's parameter space and time steps.

        Parameters
        ----------
        simulation : Simulation
            Only its ``space`` and ``n_steps`` are read.
        **kwargs
            ``n_cells``, ``n_time_bins``, ``seed``, ``n_reference`` (see :class:`Strata`).
            ``n_time_bins`` is capped at the simulation's ``n_steps``: the buffer config's value
            then suits short simulations too (``simulation.n_steps=5`` gives 5 bins of one step).
        """
        if "n_time_bins" in kwargs:
            kwargs["n_time_bins"] = min(int(kwargs["n_time_bins"]), int(simulation.n_steps))
        return cls(simulation.space, simulation.n_steps, **kwargs)

    def _sobol(self, n: int, seed: int) -> np.ndarray:
        engine = qmc.Sobol(self.space.dim, scramble=True, rng=np.random.default_rng(seed))
        # random_base2 draws 2**m points without scipy's balance warning; keep the first n.
        return engine.random_base2(int(np.ceil(np.log2(max(n, 1)))))[:n]

    # --- coordinates and assignment ------------------------------------------------------------

    def cell_of(self, unit: np.ndarray) -> np.ndarray:
        """Cell of points given in unit coordinates.

        Parameters
        ----------
        unit : ndarray, shape (n, dim)

        Returns
        -------
        ndarray, shape (n,), int64
        """
        # |u - c|^2 = |u|^2 - 2 u.c + |c|^2; |u|^2 does not change the argmin.
        scores = unit @ (-2.0 * self.centers.T) + (self.centers**2).sum(axis=1)
        return np.argmin(scores, axis=1).astype(np.int64, copy=False)

    def time_bin_of(self, steps: np.ndarray) -> np.ndarray:
        """Time bin of step indices (clipped into ``0 .. n_steps - 1``).

        Parameters
        ----------
        steps : array_like of int, shape (n,)

        Returns
        -------
        ndarray, shape (n,), int64
        """
        steps = np.clip(np.asarray(steps, dtype=np.int64), 0, self.n_steps - 1)
        return steps * self.n_time_bins // self.n_steps

    def unit_points(self, params: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Samples as points of the unit hypercube of (parameters, time).

        Parameters
        ----------
        params : ndarray, shape (n, dim)
            Physical units.
        steps : array_like of int, shape (n,)

        Returns
        -------
        ndarray, shape (n, dim + 1)
            Unit parameter coordinates, then ``(step + 0.5) / n_steps``.
        """
        unit = self.space.to_unit(np.asarray(params, dtype=np.float64).reshape(-1, self.space.dim))
        t = (np.asarray(steps, dtype=np.float64).reshape(-1, 1) + 0.5) / self.n_steps
        return np.hstack([unit, t])

    def stratum_of(self, params: np.ndarray, step: int) -> int:
        """Stratum of one sample: the fast path taken for every arrival (no validation).

        The cells of recent parameter vectors are cached (:data:`CELL_CACHE_SIZE` entries,
        bounded memory): every time step of a simulation has the same parameters, so the
        nearest-center search runs about once per simulation, not once per step.

        Parameters
        ----------
        params : ndarray, shape (dim,)
            Physical units.
        step : int

        Returns
        -------
        int
            Same as ``assign(params[None], [step])[0]``.
        """
        key = np.asarray(params, dtype=np.float64).tobytes()
        entry = hash(key) & (CELL_CACHE_SIZE - 1)
        if self._cache_keys[entry] == key:
            cell = self._cache_cells[entry]
        else:
            cell = self._cell_of_one(params)
            self._cache_keys[entry], self._cache_cells[entry] = key, cell
        if type(step) is not int or not 0 <= step < self.n_steps:
            step = min(max(int(step), 0), self.n_steps - 1)
        return cell * self.n_time_bins + step * self.n_time_bins // self.n_steps

    def strata_of(self, params: Sequence[np.ndarray], steps: Sequence[int]) -> list[int]:
        """Strata of consecutive arrivals: :meth:`stratum_of` of each, one cell search per parameter vector.

        The arrivals of one simulation share its parameter array (the receiver gives every
        :class:`~gensim.simulations.base.Sample` of a simulation the same one), so the cell is
        looked up once per distinct array object of the batch.

        Parameters
        ----------
        params : sequence of ndarray, each shape (dim,)
            Physical units.
        steps : sequence of int, same length

        Returns
        -------
        list of int
            ``[stratum_of(p, k) for p, k in zip(params, steps)]``.
        """
        cells: dict[int, int] = {}
        n_bins, n_steps = self.n_time_bins, self.n_steps
        out = []
        for p, step in zip(params, steps):
            cell = cells.get(id(p))
            if cell is None:
                # The time bin of step 0 is 0, so this is the cell times n_bins.
                cell = cells[id(p)] = self.stratum_of(p, 0) // n_bins
            if type(step) is not int or not 0 <= step < n_steps:
                step = min(max(int(step), 0), n_steps - 1)
            out.append(cell * n_bins + step * n_bins // n_steps)
        return out

    def _cell_of_one(self, params: np.ndarray) -> int:
        """Cell of one parameter vector, shape (dim,), in physical units."""
        x = np.array(params, dtype=np.float64)
        if self._log.any():
            x[self._log] = np.log10(x[self._log])
        unit = (x - self._low) * self._inv_width
        # argmin |u - c|^2 = argmin (|c|^2 / 2 - u.c)
        return int(np.argmin(self._half_norms - self.centers @ unit))

    def assign(self, params: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Stratum of each sample.

        Parameters
        ----------
        params : ndarray, shape (n, dim)
            Physical units.
        steps : array_like of int, shape (n,)

        Returns
        -------
        ndarray, shape (n,), int64
            In ``0 .. n_strata - 1``.
        """
        unit = self.space.to_unit(np.asarray(params, dtype=np.float64).reshape(-1, self.space.dim))
        return self.cell_of(unit) * self.n_time_bins + self.time_bin_of(steps)

    def reference(self, n: int, seed: int = 0) -> np.ndarray:
        """A quasi-random sample of the target in the coordinates of :meth:`unit_points`.

        Parameters
        ----------
        n : int
            Number of points.
        seed : int
            Scrambling.

        Returns
        -------
        ndarray, shape (n, dim + 1)
            Unit parameters, then ``(step + 0.5) / n_steps`` with a uniformly chosen step.
        """
        engine = qmc.Sobol(self.space.dim + 1, scramble=True, rng=np.random.default_rng(seed))
        points = engine.random_base2(int(np.ceil(np.log2(max(n, 1)))))[:n]
        steps = np.minimum(np.floor(points[:, -1] * self.n_steps), self.n_steps - 1)
        points[:, -1] = (steps + 0.5) / self.n_steps
        return points

    def describe(self) -> dict[str, Any]:
        """What defines the partition (compared when a checkpoint is restored)."""
        return {
            "n_cells": self.n_cells,
            "n_time_bins": self.n_time_bins,
            "n_steps": self.n_steps,
            "seed": self.seed,
            "space": self.space.state_dict(),
        }

    def __repr__(self) -> str:
        return (
            f"Strata(n_cells={self.n_cells}, n_time_bins={self.n_time_bins}, n_steps={self.n_steps}, seed={self.seed})"
        )
