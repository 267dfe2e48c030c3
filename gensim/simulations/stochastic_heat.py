"""Stochastic heat equation on the periodic unit square, driven by spatially smoothed noise.

The problem is the linear stochastic PDE (an Ornstein-Uhlenbeck field)

    du = (D Lap_h u - gamma u) dt + sigma dW_ell,    u(t=0) = u0,

on ``n x n`` nodes ``x_j = j / n`` of the periodic unit square, with ``Lap_h`` the periodic
5-point Laplacian. ``W_ell`` is white noise smoothed by a Gaussian kernel of standard deviation
``ell`` and scaled so that the forcing has pointwise variance ``sigma^2`` per unit time whatever
the grid: the field's pointwise variance converges as the grid is refined (with white noise it
would grow like ``log n``).

The discrete Fourier transform diagonalizes everything. With ``c_k`` the orthonormal DFT
coefficients of ``u`` (``numpy.fft`` with ``norm="ortho"``), each mode is an independent
complex Ornstein-Uhlenbeck process

    dc_k = -a_k c_k dt + sqrt(q_k) dbeta_k,   a_k = D lambda_k + gamma,
    lambda_k = (4 / h^2) (sin^2(pi k_x h) + sin^2(pi k_y h)),   h = 1 / n,
    q_k = sigma^2 N g_k / sum_j g_j,   g_k = exp(-4 pi^2 ell^2 |kappa_k|^2),  N = n^2,

where ``kappa_k`` is the signed integer wavenumber of mode ``k``. Every step uses the exact
discretization of that process,

    c_k(t + dt) = exp(-a_k dt) c_k(t) + sqrt(q_k (1 - exp(-2 a_k dt)) / (2 a_k)) xi_k,

with ``xi`` the orthonormal DFT of a standard normal field (so that ``xi`` has the Hermitian
symmetry of a real field). The law of ``u(t)`` is therefore Gaussian and known exactly at every
emitted time, whatever the time step: the mean has coefficients ``exp(-a_k t) c_k(0)`` and mode
``k`` has variance ``v_k(t) = q_k (1 - exp(-2 a_k t)) / (2 a_k)``. The field is statistically
homogeneous: its pointwise variance is ``sum_k v_k / N`` at every node. See
:meth:`StochasticHeat.mode_moments` and :meth:`StochasticHeat.exact_moments`.

Array orientation: ``u[i, j]`` is the node at ``x = j h``, ``y = i h``.

This module imports numpy only: simulation workers must start fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from gensim.simulations.base import FieldSpec, Simulation
from gensim.simulations.heat2d import _bounds, _positive_finite, _positive_int
from sampling import ParameterSpace

__all__ = ["StochasticHeat"]


class StochasticHeat(Simulation):
    """A periodic stochastic heat (Ornstein-Uhlenbeck) field with an exactly known law.

    The deterministic initial field ``u0 = sin(2 pi x) sin(2 pi y) + 0.5 cos(2 pi (x + 2 y))``
    gives the mean a parameter-dependent pattern that decays in time, while the smoothed noise
    builds up fluctuations; see the module docstring for the equation and its exact solution.

    Parameters
    ----------
    grid : int
        Nodes per direction, ``>= 4``; the field is ``(grid, grid)``.
    n_steps : int
        Exact OU steps per run, ``>= 1``; each one is emitted.
    t_final : float
        Final time, ``> 0``; the time step is ``t_final / n_steps``.
    log10_diffusivity_bounds : (float, float)
        Bounds of ``log10_D``, the base-10 log of the diffusivity (sampled linearly in it).
    damping_bounds : (float, float)
        Bounds of ``damping`` (gamma), ``> 0``: every mode relaxes at a rate of at least gamma.
    noise_bounds : (float, float)
        Bounds of ``noise`` (sigma), ``> 0``: the forcing's pointwise standard deviation per
        square root of unit time.
    correlation_length_bounds : (float, float)
        Bounds of ``corr_length`` (ell), ``> 0``: the standard deviation of the Gaussian kernel
        that smooths the noise, in units of the domain length.

    Attributes
    ----------
    space : sampling.ParameterSpace
        Parameters ``("log10_D", "damping", "noise", "corr_length")``.
    fields : tuple of FieldSpec
        One field, ``"u"``, float32, shape ``(grid, grid)``.
    n_steps : int
    dt : float

    Examples
    --------
    >>> sim = StochasticHeat(grid=8, n_steps=2)
    >>> [(step, t) for step, t, _ in sim.run([-2.5, 1.0, 1.0, 0.1], seed=0)]
    [(0, 0.5), (1, 1.0)]
    """

    def __init__(
        self,
        grid: int = 64,
        n_steps: int = 10,
        t_final: float = 1.0,
        log10_diffusivity_bounds: tuple[float, float] = (-3.0, -2.0),
        damping_bounds: tuple[float, float] = (0.5, 2.0),
        noise_bounds: tuple[float, float] = (0.5, 2.0),
        correlation_length_bounds: tuple[float, float] = (0.1, 0.25),
    ) -> None:
        self.grid = _positive_int("grid", grid)
        if self.grid < 4:
            raise ValueError(f"grid: expected at least 4 nodes per direction, got {self.grid}")
        self.n_steps = _positive_int("n_steps", n_steps)
        self.t_final = _positive_finite("t_final", t_final)
        self.dt = self.t_final / self.n_steps
        bounds = [_bounds("log10_diffusivity_bounds", log10_diffusivity_bounds)]
        for name, value in (
            ("damping_bounds", damping_bounds),
            ("noise_bounds", noise_bounds),
            ("correlation_length_bounds", correlation_length_bounds),
        ):
            lo, hi = _bounds(name, value)
            if lo <= 0:
                raise ValueError(
                    f"{name}: expected a positive lower bound, got {lo}; rates, amplitudes and lengths are positive"
                )
            bounds.append((lo, hi))
        self.space = ParameterSpace(
            ("log10_D", "damping", "noise", "corr_length"), [b[0] for b in bounds], [b[1] for b in bounds]
        )
        self.fields = (FieldSpec("u", (self.grid, self.grid), "float32"),)

        n, h = self.grid, 1.0 / self.grid
        kappa = np.fft.fftfreq(n, d=1.0 / n)  # signed integer wavenumbers, shape (n,)
        kappa_r = np.fft.rfftfreq(n, d=1.0 / n)  # the non-negative half used by rfft2
        # Everything lives in rfft2 layout (n, n // 2 + 1): rows are k_y, columns k_x.
        self._kappa2 = kappa[:, None] ** 2 + kappa_r[None, :] ** 2
        s = 4.0 / h**2
        self._lam = s * (np.sin(np.pi * kappa[:, None] * h) ** 2 + np.sin(np.pi * kappa_r[None, :] * h) ** 2)
        # Multiplicity of each rfft2 coefficient in the full spectrum: the columns that are not
        # their own mirror (0 < k_x < n/2) stand for two modes, k and -k.
        self._weight = np.full(self._lam.shape, 2.0)
        self._weight[:, 0] = 1.0
        if n % 2 == 0:
            self._weight[:, -1] = 1.0
        x = np.arange(n) * h
        xx, yy = np.meshgrid(x, x)  # u[i, j] at x = x[j], y = x[i]
        self.u0 = np.sin(2 * np.pi * xx) * np.sin(2 * np.pi * yy) + 0.5 * np.cos(2 * np.pi * (xx + 2 * yy))
        self._c0 = np.fft.rfft2(self.u0, norm="ortho")

    @property
    def times(self) -> np.ndarray:
        """Times of the emitted steps, ``(step + 1) * dt``: ndarray, shape (n_steps,)."""
        return np.arange(1, self.n_steps + 1) * self.dt

    # -- the exact law ------------------------------------------------------------------------
    def _rates(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Relaxation rates ``a_k`` and noise intensities ``q_k``, each shape (n, n // 2 + 1)."""
        log10_d, damping, noise, ell = params
        a = 10.0**log10_d * self._lam + damping
        g = np.exp(-4.0 * np.pi**2 * ell**2 * self._kappa2)
        q = noise**2 * self.grid**2 * g / float(np.sum(self._weight * g))
        return a, q

    def mode_moments(self, params: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact mean and variance of every Fourier coefficient at time ``t``.

        Parameters
        ----------
        params : array_like, shape (4,)
            A point of :attr:`space`.
        t : float
            Time, ``>= 0``.

        Returns
        -------
        mean : ndarray of complex128, shape (grid, grid // 2 + 1)
            ``E c_k``, the ``numpy.fft.rfft2(u, norm="ortho")`` coefficients of the mean field.
        var : ndarray of float64, shape (grid, grid // 2 + 1)
            ``E |c_k - E c_k|^2``. The real and imaginary parts of a coefficient that is not its
            own mirror each carry half of it; a self-mirrored one (``k = -k``) is real.
        """
        params = self.point(params)
        a, q = self._rates(params)
        return np.exp(-a * t) * self._c0, q * -np.expm1(-2.0 * a * t) / (2.0 * a)

    def exact_moments(self, params: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact pointwise mean and standard deviation of the field at time ``t``.

        Parameters
        ----------
        params : array_like, shape (4,)
        t : float

        Returns
        -------
        mean, std : ndarray of float64, shape (grid, grid)
            The std is the same at every node (the fluctuations are homogeneous).
        """
        mean_c, var = self.mode_moments(params, t)
        mean = np.fft.irfft2(mean_c, s=(self.grid, self.grid), norm="ortho")
        std = math.sqrt(float(np.sum(self._weight * var)) / self.grid**2)
        return mean, np.full((self.grid, self.grid), std)

    def exact_power_spectrum(self, params: np.ndarray, t: float) -> np.ndarray:
        """Exact ``E |c_k|^2`` (mean plus fluctuations) of every rfft2 coefficient at time ``t``.

        Returns
        -------
        ndarray of float64, shape (grid, grid // 2 + 1)
        """
        mean_c, var = self.mode_moments(params, t)
        return np.abs(mean_c) ** 2 + var

    # -- the simulation -----------------------------------------------------------------------
    def run(self, params: np.ndarray, seed: int | None = None) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        """Simulate one realization and yield the field after every step.

        Parameters
        ----------
        params : array_like, shape (4,) or (1, 4)
            ``(log10_D, damping, noise, corr_length)`` inside :attr:`space`.
        seed : int, optional
            Seed of the noise (``numpy.random.default_rng(seed)``): the same seed gives the same
            realization; ``None`` draws fresh entropy.

        Yields
        ------
        step : int
        t : float
            ``(step + 1) * dt``.
        fields : dict
            ``{"u": ndarray of float32, shape (grid, grid)}``.

        Raises
        ------
        ValueError
            At the call when ``params`` is not one point of :attr:`space`.
        """
        params = self.point(params)
        return self._steps(params, np.random.default_rng(seed))

    def _steps(
        self, params: np.ndarray, rng: np.random.Generator
    ) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        # A separate generator so that run() validates when called, not when iterated.
        a, q = self._rates(params)
        decay = np.exp(-a * self.dt)
        kick = np.sqrt(q * -np.expm1(-2.0 * a * self.dt) / (2.0 * a))
        c = self._c0.copy()
        shape = (self.grid, self.grid)
        for step in range(self.n_steps):
            c *= decay
            c += kick * np.fft.rfft2(rng.standard_normal(shape), norm="ortho")
            u = np.fft.irfft2(c, s=shape, norm="ortho")
            yield step, (step + 1) * self.dt, {"u": u.astype(np.float32)}

    def __repr__(self) -> str:
        return f"StochasticHeat(grid={self.grid}, n_steps={self.n_steps}, t_final={self.t_final:g}, space={self.space})"
