"""A plume advected and diffused on the periodic unit square: hard only at high Péclet number.

The problem is

    dc/dt + u . grad c = D (d2c/dx2 + d2c/dy2)  on the periodic square [0, 1)^2,
    c(t=0) = exp(-|x - x0|^2 / (2 w^2))  (periodized),

with a uniform velocity ``u = (cos a, sin a)`` of unit speed, so the Péclet number on the domain
length is ``Pe = 1 / D``. Its difficulty for a surrogate is localized in parameter space: at low
Pe the puff spreads into a nearly uniform, slowly varying field within the first step; at high
Pe (and small release width ``w``) a narrow puff travels across the domain, and its position
changes quickly with the flow angle and the time.

Solver: Fourier pseudo-spectral on ``n x n`` cell centres, integrated exactly in time. Each
Fourier mode ``k`` evolves as ``c_k(t) = c_k(0) exp(-(i k . u + D |k|^2) t)``, so the only error
is the sampling of the initial puff on the grid, exponentially small once ``w`` spans a few
cells. On an even grid the Nyquist modes keep their diffusion but not their advection phase
(the standard treatment of odd derivatives there): a real field stays real.

Array orientation, as in heat2d: ``c[i, j]`` is the cell centre ``x = (j + 1/2) / n``,
``y = (i + 1/2) / n``; ``plt.imshow(c, origin="lower")`` shows it the right way up.

This module imports numpy and scipy only: simulation workers must start fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from scipy.fft import irfft2, rfft2

from gensim.simulations.base import FieldSpec, Simulation
from gensim.simulations.heat2d import _bounds, _positive_finite, _positive_int
from sampling import ParameterSpace

__all__ = ["Plume2D", "cell_centres", "periodic_gaussian", "spectral_advection_diffusion"]


def cell_centres(n: int) -> np.ndarray:
    """Cell centres ``(k + 1/2) / n`` of the periodic unit interval, ``k = 0 .. n - 1``: shape (n,)."""
    return (np.arange(n) + 0.5) / n


def periodic_gaussian(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """``exp(-(x - centre)^2 / (2 width^2))`` made 1-periodic by summing its images.

    Parameters
    ----------
    x : ndarray, any shape
        Positions in [0, 1).
    centre : float
        Any real; only its fractional part matters.
    width : float
        Standard deviation, > 0.

    Returns
    -------
    ndarray, shape of ``x``

    Notes
    -----
    Images are summed out to 9 widths beyond the unit interval, where a term is below
    ``exp(-40) ~ 4e-18``: the sum is exact to float64 round-off.
    """
    n_images = 1 + math.ceil(9.0 * width)
    shifts = np.arange(-n_images, n_images + 1)
    d = np.asarray(x, float)[..., None] - (centre % 1.0) - shifts
    return np.exp(-0.5 * (d / width) ** 2).sum(axis=-1)


def spectral_advection_diffusion(
    c0: np.ndarray, velocity: Sequence[float], diffusivity: float, times: Sequence[float]
) -> Iterator[np.ndarray]:
    """Solve ``dc/dt + u . grad c = D lap c`` on the periodic unit square, exactly in time.

    Parameters
    ----------
    c0 : array_like, shape (n, n)
        Initial field at the cell centres, ``c0[i, j]`` at ``x = (j + 1/2) / n``,
        ``y = (i + 1/2) / n``.
    velocity : (float, float)
        ``(u_x, u_y)``, finite.
    diffusivity : float
        ``D >= 0``.
    times : sequence of float
        Output times, ``>= 0``, finite.

    Returns
    -------
    iterator of ndarray of float64, shape (n, n)
        The field at each of ``times``; a new array each time.

    Raises
    ------
    ValueError
        At the call, when an argument is malformed or not finite.
    """
    c0 = np.asarray(c0, dtype=np.float64)
    if c0.ndim != 2 or c0.shape[0] != c0.shape[1] or c0.shape[0] < 2:
        raise ValueError(f"c0: expected a square 2-D array (n, n) with n >= 2, got shape {c0.shape}")
    if not np.all(np.isfinite(c0)):
        raise ValueError("c0: expected a finite field, got nan or inf; check the initial condition")
    u = np.asarray(velocity, dtype=np.float64)
    if u.shape != (2,) or not np.all(np.isfinite(u)):
        raise ValueError(f"velocity: expected 2 finite components (u_x, u_y), got {u.tolist()}")
    diffusivity = float(diffusivity)
    if not (math.isfinite(diffusivity) and diffusivity >= 0):
        raise ValueError(f"diffusivity: expected a finite value >= 0, got {diffusivity}")
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t) & (t >= 0)):
        raise ValueError(f"times: expected finite values >= 0, got {t.tolist()}")
    return _spectral_steps(c0, u, diffusivity, t)


def _spectral_steps(c0: np.ndarray, u: np.ndarray, diffusivity: float, times: np.ndarray) -> Iterator[np.ndarray]:
    # A separate generator so that the validation above runs at the call, not at the first step.
    n = c0.shape[0]
    ky = 2 * np.pi * np.fft.fftfreq(n, d=1.0 / n)[:, None]  # rows: y
    kx = 2 * np.pi * np.fft.rfftfreq(n, d=1.0 / n)[None, :]  # columns: x (the halved rfft axis)
    decay = diffusivity * (kx**2 + ky**2)
    # No advection phase on the Nyquist modes of an even grid, where i k is not a real derivative.
    kx_adv, ky_adv = kx.copy(), ky.copy()
    if n % 2 == 0:
        kx_adv[:, -1] = 0.0
        ky_adv[n // 2, :] = 0.0
    phase = kx_adv * u[0] + ky_adv * u[1]
    c0_hat = rfft2(c0)
    for t in times:
        yield irfft2(c0_hat * np.exp(-(decay + 1j * phase) * t), s=(n, n))


class Plume2D(Simulation):
    """A Gaussian puff advected by a uniform flow and diffused on the periodic unit square.

    The flow has unit speed and angle ``angle`` (degrees from the x axis), the diffusivity is
    ``10 ** -log10_Pe``, and the puff, of unit peak, is released at ``release`` with standard
    deviation ``width``. See the module docstring for the equations, the solver and the array
    orientation. Where the difficulty lies: high ``log10_Pe`` and small ``width`` (a narrow puff
    on the move); low ``log10_Pe`` gives a nearly uniform field after the first step. As in
    heat2d, the parameter is the base-10 log itself, so a surrogate sees it on the scale it
    is sampled on.

    Parameters
    ----------
    grid : int
        Cells per direction, ``>= 4``; the field is ``(grid, grid)``.
    n_steps : int
        Emitted steps per run, ``>= 1``, at ``t = (step + 1) * t_final / n_steps``.
    t_final : float
        Final time, ``> 0``; the puff travels ``t_final`` domain lengths.
    log10_peclet_bounds : (float, float)
        Bounds of ``log10_Pe``, the base-10 log of the Péclet number (default: Pe from 0.1 to
        1000).
    angle_bounds : (float, float)
        Bounds of the flow angle in degrees.
    width_bounds : (float, float)
        Bounds of the release width (domain lengths); both > 0. Keep the lower bound above about
        1.5 cells, ``1.5 / grid``, or the initial puff is under-resolved.
    release : (float, float)
        Release point ``(x0, y0)`` in the unit square.

    Attributes
    ----------
    space : sampling.ParameterSpace
        Parameters ``("log10_Pe", "angle", "width")``, all on a linear scale.
    fields : tuple of FieldSpec
        One field, ``"concentration"``, float32, shape ``(grid, grid)``.
    n_steps : int
    dt : float
        Time between emitted steps.

    Examples
    --------
    >>> sim = Plume2D(grid=16, n_steps=2)
    >>> [(step, t, f["concentration"].shape) for step, t, f in sim.run([2.0, 45.0, 0.1])]
    [(0, 0.25, (16, 16)), (1, 0.5, (16, 16))]
    """

    def __init__(
        self,
        grid: int = 64,
        n_steps: int = 50,
        t_final: float = 0.5,
        log10_peclet_bounds: tuple[float, float] = (-1.0, 3.0),
        angle_bounds: tuple[float, float] = (0.0, 90.0),
        width_bounds: tuple[float, float] = (0.05, 0.2),
        release: tuple[float, float] = (0.25, 0.25),
    ) -> None:
        self.grid = _positive_int("grid", grid)
        if self.grid < 4:
            raise ValueError(f"grid: expected at least 4 cells per direction, got {self.grid}")
        self.n_steps = _positive_int("n_steps", n_steps)
        self.t_final = _positive_finite("t_final", t_final)
        self.dt = self.t_final / self.n_steps
        pe = _bounds("log10_peclet_bounds", log10_peclet_bounds)
        angle = _bounds("angle_bounds", angle_bounds)
        width = _bounds("width_bounds", width_bounds)
        if width[0] <= 0:
            raise ValueError(f"width_bounds must be > 0, got {width}; pass positive widths")
        x0 = np.asarray(release, dtype=float)
        if x0.shape != (2,) or not np.all((x0 >= 0) & (x0 < 1)):
            raise ValueError(f"release: expected a point (x0, y0) in [0, 1)^2, got {release!r}")
        self.release = (float(x0[0]), float(x0[1]))
        self.space = ParameterSpace(
            ("log10_Pe", "angle", "width"), [pe[0], angle[0], width[0]], [pe[1], angle[1], width[1]]
        )
        self.fields = (FieldSpec("concentration", (self.grid, self.grid), "float32"),)

    @property
    def times(self) -> np.ndarray:
        """Times of the emitted steps, ``(step + 1) * dt``: ndarray, shape (n_steps,)."""
        return np.arange(1, self.n_steps + 1) * self.dt

    def initial_field(self, width: float) -> np.ndarray:
        """The released puff on the grid, unit peak: ndarray of float64, shape (grid, grid)."""
        x = cell_centres(self.grid)
        along_y = periodic_gaussian(x, self.release[1], width)
        along_x = periodic_gaussian(x, self.release[0], width)
        return along_y[:, None] * along_x[None, :]  # rows along y, columns along x

    def run(self, params: np.ndarray, seed: int | None = None) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        """Simulate one parameter vector and yield the concentration at every emitted time.

        Parameters
        ----------
        params : array_like, shape (3,) or (1, 3)
            ``(log10_Pe, angle, width)`` inside :attr:`space`.
        seed : int, optional
            Ignored: the simulation is deterministic.

        Yields
        ------
        step : int
            ``0 .. n_steps - 1``.
        t : float
            ``(step + 1) * dt``.
        fields : dict
            ``{"concentration": ndarray of float32, shape (grid, grid)}``.

        Raises
        ------
        ValueError
            When ``params`` is not one point of :attr:`space`.
        """
        log10_pe, angle, width = self.point(params)
        velocity = (math.cos(math.radians(angle)), math.sin(math.radians(angle)))
        steps = spectral_advection_diffusion(self.initial_field(width), velocity, 10.0**-log10_pe, self.times)
        for step, c in enumerate(steps):
            yield step, (step + 1) * self.dt, {"concentration": c.astype(np.float32)}

    def __repr__(self) -> str:
        return (
            f"Plume2D(grid={self.grid}, n_steps={self.n_steps}, t_final={self.t_final:g}, "
            f"release={self.release}, space={self.space})"
        )
