"""Viscous Burgers equation on the periodic unit square, from a random initial field: a nonlinear
problem with a high-dimensional parameter space.

The problem is

    du/dt + (cos a d/dx + sin a d/dy)(u^2 / 2) = nu (d2u/dx2 + d2u/dy2)  on the periodic [0, 1)^2,
    u(t=0) = A / sqrt(M) * sum_m (c_m cos(2 pi k_m . x) + s_m sin(2 pi k_m . x)),

a scalar conservation law whose flux points along the angle ``a``: along that direction the
initial bumps steepen into moving shocks of width about ``nu / |jump of u|``. The parameters are
the ``2 M`` initial Fourier coefficients ``(c_m, s_m)`` of the ``M`` lowest wave vectors ``k_m``
(one of each pair ``+-k``, ``0 < |k| <= max_wavenumber``; M = 14 for the default 3, 28
coefficients), ``log10_nu`` and the angle ``a``. Shock positions move with every coefficient, so
a linear reduced basis (POD) of the fields converges slowly: the kind of problem on-line neural
surrogates are meant for.

Solver: Fourier pseudo-spectral on ``n x n`` cell centres, ETDRK4 in time (Cox & Matthews 2002),
its coefficients by the contour integrals of Kassam & Trefethen (2005) so that they stay accurate
where ``h L`` is near 0 (cancellation in the closed forms). The viscous term ``L = -nu |2 pi k|^2``
is diagonal and integrated exactly; the flux is evaluated on the grid and dealiased by the 2/3
rule: the state and the flux keep only the modes with ``|k_x|, |k_y| < n / 3``, so the product of
two kept fields aliases only onto discarded modes.

Array orientation, as in plume2d: ``u[i, j]`` is the cell centre ``x = (j + 1/2) / n``,
``y = (i + 1/2) / n``; ``plt.imshow(u, origin="lower")`` shows it the right way up.

This module imports numpy and scipy only: simulation workers must start fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from scipy.fft import irfft2, rfft2

from gensim.simulations.base import FieldSpec, Simulation
from gensim.simulations.heat2d import _bounds, _positive_finite, _positive_int
from gensim.simulations.plume2d import cell_centres
from sampling import ParameterSpace

__all__ = ["Burgers2D", "etdrk4_burgers", "etdrk4_coefficients", "wave_vectors"]

# Points on each contour of the Kassam-Trefethen integrals: 32 give the coefficients to float64
# round-off for any |h L| (their test, and ours in tests/gensim/simulations/test_burgers2d.py).
_CONTOUR_POINTS = 32


def wave_vectors(max_wavenumber: float) -> np.ndarray:
    """The wave vectors of the initial field: one of each pair ``+-k``, ``0 < |k| <= max_wavenumber``.

    Parameters
    ----------
    max_wavenumber : float
        Largest ``|k| = sqrt(k_x^2 + k_y^2)`` kept, ``>= 1``.

    Returns
    -------
    ndarray of int, shape (M, 2)
        ``(k_x, k_y)`` rows with ``k_x > 0``, or ``k_x = 0`` and ``k_y > 0`` (the half plane),
        sorted by ``|k|``, then ``k_x``, then ``k_y``: a fixed order, the order of the parameters.
    """
    if not (math.isfinite(max_wavenumber) and max_wavenumber >= 1):
        raise ValueError(f"max_wavenumber: expected a finite number >= 1, got {max_wavenumber}")
    top = math.floor(max_wavenumber)
    k = np.array(
        [
            (kx, ky)
            for kx in range(0, top + 1)
            for ky in range(-top, top + 1)
            if (kx > 0 or ky > 0) and kx * kx + ky * ky <= max_wavenumber**2
        ]
    )
    order = np.lexsort((k[:, 1], k[:, 0], (k**2).sum(axis=1)))
    return k[order]


def etdrk4_coefficients(hL: np.ndarray) -> tuple[np.ndarray, ...]:
    """ETDRK4 coefficients of a diagonal linear operator, by Kassam & Trefethen's contour integrals.

    Parameters
    ----------
    hL : ndarray of float, any shape
        Time step times the (real) eigenvalues of the linear operator.

    Returns
    -------
    E, E2, Q, f1, f2, f3 : ndarray, shape of ``hL``
        ``E = exp(hL)``, ``E2 = exp(hL / 2)``, and, divided by the time step ``h`` (multiply by
        it to step), ``Q = (E2 - 1) / hL``, ``f1 = (-4 - hL + E (4 - 3 hL + hL^2)) / hL^3``,
        ``f2 = (2 + hL + E (hL - 2)) / hL^3``, ``f3 = (-4 - 3 hL - hL^2 + E (4 - hL)) / hL^3``,
        each the mean of its analytic continuation over a circle of radius 1 around ``hL``:
        exact where the closed forms lose every digit to cancellation (``hL`` near 0, where
        they tend to 1/2, 1/6, 1/6, 1/6).
    """
    hL = np.asarray(hL, dtype=np.float64)
    # Full circle: the integrands are real on the real axis, so the mean is real up to round-off.
    r = np.exp(1j * np.pi * (np.arange(1, _CONTOUR_POINTS + 1) - 0.5) / (_CONTOUR_POINTS / 2))
    z = hL[..., None] + r
    ez = np.exp(z)
    q = np.mean((np.exp(z / 2) - 1) / z, axis=-1).real
    f1 = np.mean((-4 - z + ez * (4 - 3 * z + z**2)) / z**3, axis=-1).real
    f2 = np.mean((2 + z + ez * (z - 2)) / z**3, axis=-1).real
    f3 = np.mean((-4 - 3 * z - z**2 + ez * (4 - z)) / z**3, axis=-1).real
    return np.exp(hL), np.exp(hL / 2), q, f1, f2, f3


def etdrk4_burgers(
    u0: np.ndarray, direction: Sequence[float], viscosity: float, dt: float, n_steps: int, every: int = 1
) -> Iterator[np.ndarray]:
    """Solve ``du/dt + (d . grad)(u^2 / 2) = nu lap u`` on the periodic unit square by ETDRK4.

    Parameters
    ----------
    u0 : array_like, shape (n, n)
        Initial field at the cell centres, ``u0[i, j]`` at ``x = (j + 1/2) / n``,
        ``y = (i + 1/2) / n``; its modes beyond the 2/3 rule (``|k_x|`` or ``|k_y| >= n / 3``)
        are dropped.
    direction : (float, float)
        ``d = (d_x, d_y)``, finite: the flux direction (times a speed factor).
    viscosity : float
        ``nu >= 0``.
    dt : float
        ETDRK4 step, ``> 0``.
    n_steps : int
        Number of steps, ``>= 1``, a multiple of ``every``.
    every : int
        Emit the field every ``every`` steps.

    Returns
    -------
    iterator of ndarray of float64, shape (n, n)
        The field after ``every``, ``2 every``, ..., ``n_steps`` steps; a new array each time.

    Raises
    ------
    ValueError
        At the call (not at the first step) when an argument is malformed, out of range or not
        finite.
    """
    u0 = np.asarray(u0, dtype=np.float64)
    if u0.ndim != 2 or u0.shape[0] != u0.shape[1] or u0.shape[0] < 4:
        raise ValueError(f"u0: expected a square 2-D array (n, n) with n >= 4, got shape {u0.shape}")
    if not np.all(np.isfinite(u0)):
        raise ValueError("u0: expected a finite field, got nan or inf; check the initial condition")
    d = np.asarray(direction, dtype=np.float64)
    if d.shape != (2,) or not np.all(np.isfinite(d)):
        raise ValueError(f"direction: expected 2 finite components (d_x, d_y), got {d.tolist()}")
    viscosity = float(viscosity)
    if not (math.isfinite(viscosity) and viscosity >= 0):
        raise ValueError(f"viscosity: expected a finite value >= 0, got {viscosity}")
    dt = _positive_finite("dt", dt)
    n_steps = _positive_int("n_steps", n_steps)
    every = _positive_int("every", every)
    if n_steps % every:
        raise ValueError(f"n_steps ({n_steps}) must be a multiple of every ({every}); adjust either")
    return _etdrk4_steps(u0, d, viscosity, dt, n_steps, every)


def _etdrk4_steps(
    u0: np.ndarray, d: np.ndarray, viscosity: float, dt: float, n_steps: int, every: int
) -> Iterator[np.ndarray]:
    # A separate generator so that etdrk4_burgers validates when called, not when iterated.
    n = u0.shape[0]
    ky = np.fft.fftfreq(n, d=1.0 / n)[:, None]  # rows: y
    kx = np.fft.rfftfreq(n, d=1.0 / n)[None, :]  # columns: x (the halved rfft axis)
    keep = (np.abs(kx) < n / 3) & (np.abs(ky) < n / 3)  # 2/3 rule; also drops the Nyquist modes
    E, E2, Q, f1, f2, f3 = etdrk4_coefficients(-viscosity * dt * (2 * np.pi) ** 2 * (kx**2 + ky**2))
    Q, f1, f2, f3 = dt * Q, dt * f1, dt * f2, dt * f3
    # Flux derivative d . grad in spectral space, masked: N(v) = -i 2 pi (d . k) FFT(u^2 / 2).
    flux = np.where(keep, -1j * np.pi * (d[0] * kx + d[1] * ky), 0.0)  # -2 pi i (d . k) / 2, times FFT(u^2)

    def nonlinear(v: np.ndarray) -> np.ndarray:
        u = irfft2(v, s=(n, n))
        return flux * rfft2(u * u)

    v = np.where(keep, rfft2(u0), 0.0)
    for step in range(1, n_steps + 1):
        nv = nonlinear(v)
        a = E2 * v + Q * nv
        na = nonlinear(a)
        b = E2 * v + Q * na
        nb = nonlinear(b)
        c = E2 * a + Q * (2 * nb - nv)
        nc = nonlinear(c)
        v = E * v + f1 * nv + 2 * f2 * (na + nb) + f3 * nc
        if step % every == 0:
            yield irfft2(v, s=(n, n))


class Burgers2D(Simulation):
    """Viscous Burgers flow on the periodic unit square from a random low-mode initial field.

    See the module docstring for the equation, the parameters, the solver and the array
    orientation. Each emitted step is ``substeps`` ETDRK4 steps.

    Parameters
    ----------
    grid : int
        Cells per direction; the field is ``(grid, grid)``. It must exceed ``3 max_wavenumber``,
        so that the initial modes survive the 2/3 rule; resolving the shocks needs more: at the
        lowest default viscosity, 48 cells are within 8e-4 (relative L2 of a trajectory) of 96
        cells at uniform random points, 5e-3 at a corner of the space (every coefficient at a
        bound), and 4 substeps within 2e-6 of 16 (tests/gensim/simulations/test_burgers2d.py).
    n_steps : int
        Emitted steps per run, ``>= 1``, at ``t = (step + 1) * t_final / n_steps``.
    t_final : float
        Final time, ``> 0``.
    substeps : int
        ETDRK4 steps per emitted step, ``>= 1``.
    max_wavenumber : float
        Largest ``|k|`` of the initial field's wave vectors, ``>= 1`` (3: 14 wave vectors, 28
        coefficients).
    amplitude : float
        ``A > 0``: the initial field's root-mean-square is ``A / sqrt(3)`` for uniform
        coefficients in [-1, 1]; with ``|c_m|, |s_m| <= 1`` it is at most ``A sqrt(2)`` anywhere.
    coefficient_bound : float
        The coefficients ``c_m, s_m`` lie in ``[-coefficient_bound, coefficient_bound]``.
    log10_viscosity_bounds : (float, float)
        Bounds of ``log10_nu``.
    angle_bounds : (float, float)
        Bounds of the flux angle ``a`` in degrees from the x axis.

    Raises
    ------
    ValueError
        When a size or time is not positive, bounds are malformed, or the grid is too coarse for
        the initial modes.
    TypeError
        When ``grid``, ``n_steps`` or ``substeps`` is not an integer.

    Attributes
    ----------
    space : sampling.ParameterSpace
        Parameters ``c_<kx>_<ky>`` and ``s_<kx>_<ky>`` for each wave vector of
        :attr:`wave_vectors` (a negative ``ky`` is written ``m<|ky|>``), interleaved, then
        ``log10_nu`` and ``angle``; all on a linear scale.
    fields : tuple of FieldSpec
        One field, ``"u"``, float32, shape ``(grid, grid)``.
    n_steps : int
    dt : float
        Time between emitted steps.
    wave_vectors : ndarray of int, shape (M, 2)

    Examples
    --------
    >>> sim = Burgers2D(grid=16, n_steps=2, max_wavenumber=1)
    >>> sim.space.names
    ('c_0_1', 's_0_1', 'c_1_0', 's_1_0', 'log10_nu', 'angle')
    >>> [(step, t, f["u"].shape) for step, t, f in sim.run([0.5, 0, 0, -0.5, -1.5, 45.0])]
    [(0, 0.25, (16, 16)), (1, 0.5, (16, 16))]
    """

    def __init__(
        self,
        grid: int = 48,
        n_steps: int = 50,
        t_final: float = 0.5,
        substeps: int = 4,
        max_wavenumber: float = 3.0,
        amplitude: float = 1.0,
        coefficient_bound: float = 1.0,
        log10_viscosity_bounds: tuple[float, float] = (-1.7, -1.0),
        angle_bounds: tuple[float, float] = (0.0, 90.0),
    ) -> None:
        self.grid = _positive_int("grid", grid)
        self.n_steps = _positive_int("n_steps", n_steps)
        self.t_final = _positive_finite("t_final", t_final)
        self.substeps = _positive_int("substeps", substeps)
        self.dt = self.t_final / self.n_steps
        self.amplitude = _positive_finite("amplitude", amplitude)
        bound = _positive_finite("coefficient_bound", coefficient_bound)
        self.wave_vectors = wave_vectors(float(max_wavenumber))
        if self.grid <= 3 * np.abs(self.wave_vectors).max():
            raise ValueError(
                f"grid: {self.grid} cells keep only |k| < {self.grid / 3:.1f} under the 2/3 rule, but the "
                f"initial field has |k_x| or |k_y| up to {np.abs(self.wave_vectors).max()}; use grid > "
                f"{3 * np.abs(self.wave_vectors).max()} or a smaller max_wavenumber"
            )
        nu = _bounds("log10_viscosity_bounds", log10_viscosity_bounds)
        angle = _bounds("angle_bounds", angle_bounds)
        names = []
        for kx, ky in self.wave_vectors:
            tag = f"{kx}_{ky}" if ky >= 0 else f"{kx}_m{-ky}"
            names += [f"c_{tag}", f"s_{tag}"]
        n_coef = len(names)
        self.space = ParameterSpace(
            tuple(names) + ("log10_nu", "angle"),
            [-bound] * n_coef + [nu[0], angle[0]],
            [bound] * n_coef + [nu[1], angle[1]],
        )
        self.fields = (FieldSpec("u", (self.grid, self.grid), "float32"),)

    @property
    def times(self) -> np.ndarray:
        """Times of the emitted steps, ``(step + 1) * dt``: ndarray, shape (n_steps,)."""
        return np.arange(1, self.n_steps + 1) * self.dt

    def initial_field(self, coefficients: np.ndarray) -> np.ndarray:
        """The initial field of interleaved coefficients ``(c_1, s_1, c_2, s_2, ...)``.

        Parameters
        ----------
        coefficients : array_like, shape (2 M,)

        Returns
        -------
        ndarray of float64, shape (grid, grid)
            Rows along y, columns along x.
        """
        coefficients = np.asarray(coefficients, dtype=np.float64).reshape(-1, 2)
        x = cell_centres(self.grid)
        # phase[m, i, j] = 2 pi (k_x x_j + k_y y_i)
        phase = (
            2
            * np.pi
            * (
                self.wave_vectors[:, 0, None, None] * x[None, None, :]
                + self.wave_vectors[:, 1, None, None] * x[None, :, None]
            )
        )
        total = np.einsum("m,mij->ij", coefficients[:, 0], np.cos(phase))
        total += np.einsum("m,mij->ij", coefficients[:, 1], np.sin(phase))
        return self.amplitude / math.sqrt(len(self.wave_vectors)) * total

    def run(self, params: np.ndarray, seed: int | None = None) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        """Simulate one parameter vector and yield the field at every emitted time.

        Parameters
        ----------
        params : array_like, shape (2 M + 2,) or (1, 2 M + 2)
            The initial coefficients, ``log10_nu`` and ``angle``, inside :attr:`space`.
        seed : int, optional
            Ignored: the simulation is deterministic.

        Yields
        ------
        step : int
            ``0 .. n_steps - 1``.
        t : float
            ``(step + 1) * dt`` (the initial field is not emitted).
        fields : dict
            ``{"u": ndarray of float32, shape (grid, grid)}``.

        Raises
        ------
        ValueError
            When ``params`` is not one point of :attr:`space`.
        """
        *coefficients, log10_nu, angle = self.point(params)
        direction = (math.cos(math.radians(angle)), math.sin(math.radians(angle)))
        steps = etdrk4_burgers(
            self.initial_field(coefficients),
            direction,
            10.0**log10_nu,
            self.dt / self.substeps,
            self.n_steps * self.substeps,
            every=self.substeps,
        )
        for step, u in enumerate(steps):
            yield step, (step + 1) * self.dt, {"u": u.astype(np.float32)}

    def __repr__(self) -> str:
        return (
            f"Burgers2D(grid={self.grid}, n_steps={self.n_steps}, t_final={self.t_final:g}, "
            f"substeps={self.substeps}, wave_vectors={len(self.wave_vectors)}, "
            f"amplitude={self.amplitude:g}, space={self.space})"
        )
