"""Two-dimensional heat equation on the unit square: Melissa's heat use case plus a diffusivity.

The problem is

    du/dt = D (d2u/dx2 + d2u/dy2)  on (0, 1)^2,  u = wall temperature on each wall,
    u(t=0) = T_init inside,

discretized with the 5-point Laplacian on ``n x n`` interior nodes (spacing ``h = 1 / (n + 1)``)
and implicit Euler in time. Each step solves ``(I - D dt L) u_new = u_old + D dt / h^2 b`` where
``L`` is the Dirichlet 5-point Laplacian and ``b`` holds the wall values next to each node. The
discrete sine transform (DST-I) diagonalizes ``L``, so every step is an exact solve in
``O(n^2 log n)``.

Array orientation: ``u[i, j]`` is the node at ``x = (j + 1) h``, ``y = (i + 1) h``. Row ``i``
runs along y (``i = 0`` is next to the bottom wall, y = 0), column ``j`` along x (``j = 0`` is
next to the left wall, x = 0). ``plt.imshow(u, origin="lower")`` shows it the right way up.

This module imports numpy and scipy only: simulation workers must start fast.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from scipy.fft import dstn, idstn

from gensim.simulations.base import FieldSpec, Simulation
from sampling import ParameterSpace

__all__ = ["Heat2D", "implicit_euler_heat", "node_coordinates"]


def node_coordinates(n: int) -> np.ndarray:
    """Positions of the interior nodes along x (or y) on the unit interval.

    Parameters
    ----------
    n : int
        Number of interior nodes per direction.

    Returns
    -------
    ndarray, shape (n,)
        ``(k + 1) / (n + 1)`` for ``k = 0 .. n - 1``; index ``j`` of ``u[i, j]`` is at x = that
        value, index ``i`` at y = that value.
    """
    return np.arange(1, n + 1) / (n + 1)


def implicit_euler_heat(
    u0: np.ndarray,
    walls: Sequence[float],
    diffusivity: float,
    dt: float,
    n_steps: int,
) -> Iterator[np.ndarray]:
    """Advance the 2-D heat equation on the unit square by implicit Euler steps, solved exactly.

    Parameters
    ----------
    u0 : array_like, shape (n, n)
        Initial temperature at the interior nodes, ``u0[i, j]`` at ``x = (j + 1) h``,
        ``y = (i + 1) h`` with ``h = 1 / (n + 1)``.
    walls : sequence of 4 float
        Dirichlet temperatures ``(left, right, bottom, top)`` of the walls x = 0, x = 1, y = 0,
        y = 1, held constant in time.
    diffusivity : float
        Diffusivity ``D > 0``.
    dt : float
        Time step, ``> 0``.
    n_steps : int
        Number of steps, ``>= 1``.

    Returns
    -------
    iterator of ndarray of float64, shape (n, n)
        The temperature after 1, 2, ..., ``n_steps`` steps; a new array each time.

    Raises
    ------
    ValueError
        At the call (not at the first step) when an argument is malformed, not finite or out of
        range.
    TypeError
        When ``n_steps`` is not an integer or a number is not a number.

    Notes
    -----
    With ``T = tridiag(-1, 2, -1) / h^2`` the 1-D Dirichlet operator, ``-L = T (x) I + I (x) T``.
    The orthonormal DST-I vectors ``sin(k pi (j + 1) h)`` are the eigenvectors of ``T``, with
    eigenvalues ``(4 / h^2) sin^2(k pi h / 2)``, ``k = 1 .. n``. The step is therefore a diagonal
    scaling in sine space, where the state is kept between steps; only the output is transformed
    back.
    """
    u0 = np.asarray(u0, dtype=np.float64)
    if u0.ndim != 2 or u0.shape[0] != u0.shape[1] or u0.shape[0] == 0:
        raise ValueError(f"u0: expected a square 2-D array (n, n) of interior temperatures, got shape {u0.shape}")
    if not np.all(np.isfinite(u0)):
        raise ValueError("u0: expected finite temperatures, got nan or inf; check the initial field")
    walls = np.asarray(walls, dtype=np.float64)
    if walls.shape != (4,) or not np.all(np.isfinite(walls)):
        raise ValueError(f"walls: expected 4 finite temperatures (left, right, bottom, top), got {walls.tolist()}")
    diffusivity = _positive_finite("diffusivity", diffusivity)
    dt = _positive_finite("dt", dt)
    n_steps = _positive_int("n_steps", n_steps)

    return _dst_steps(u0, walls, diffusivity, dt, n_steps)


def _dst_steps(u0: np.ndarray, walls: np.ndarray, diffusivity: float, dt: float, n_steps: int) -> Iterator[np.ndarray]:
    # A separate generator so that implicit_euler_heat validates when called, not when iterated.
    n = u0.shape[0]
    h = 1.0 / (n + 1)
    c = diffusivity * dt / h**2
    # h^2 times the eigenvalues of the 1-D operator T; the 2-D ones are their pairwise sums.
    s = 4.0 * np.sin(np.arange(1, n + 1) * (np.pi * h / 2)) ** 2
    gain = 1.0 / (1.0 + c * (s[:, None] + s[None, :]))

    # Each wall value enters the stencil of the nodes next to it; corner nodes see two walls.
    left, right, bottom, top = walls
    b = np.zeros((n, n))
    b[:, 0] += left
    b[:, -1] += right
    b[0, :] += bottom
    b[-1, :] += top

    # norm="ortho" makes DST-I symmetric and orthogonal, so idstn is its exact inverse.
    u_hat = dstn(u0, type=1, norm="ortho")
    source_hat = c * dstn(b, type=1, norm="ortho")
    for _ in range(n_steps):
        u_hat += source_hat
        u_hat *= gain
        yield idstn(u_hat, type=1, norm="ortho")


class Heat2D(Simulation):
    """Heat diffusion on the unit square with four fixed wall temperatures and a diffusivity.

    Melissa's heat use case (initial temperature and four wall temperatures) plus
    ``log10_D``: without it the output is exactly affine in the parameters, and a linear model
    would solve the problem. See the module docstring for the discretization and the array
    orientation (``u[i, j]``: row i along y from the bottom wall, column j along x from the left
    wall).

    Parameters
    ----------
    grid : int
        Interior nodes per direction, ``>= 1``; the field is ``(grid, grid)``.
    n_steps : int
        Implicit Euler steps per run, ``>= 1``; each one is emitted.
    t_final : float
        Final time, ``> 0``; the time step is ``t_final / n_steps``.
    temperature_bounds : (float, float)
        ``(lower, upper)`` of the five temperatures ``T_init, T_left, T_right, T_bottom, T_top``.
    log10_diffusivity_bounds : (float, float)
        ``(lower, upper)`` of ``log10_D``, the base-10 log of the diffusivity. The parameter is
        sampled linearly in ``log10_D`` (so log-uniformly in D).

    Raises
    ------
    ValueError
        When a size or time is not positive, or bounds are not finite with lower < upper.
    TypeError
        When ``grid`` or ``n_steps`` is not an integer.

    Attributes
    ----------
    space : sampling.ParameterSpace
        Parameters ``("T_init", "T_left", "T_right", "T_bottom", "T_top", "log10_D")``.
    fields : tuple of FieldSpec
        One field, ``"temperature"``, float32, shape ``(grid, grid)``.
    n_steps : int
    dt : float
        Time step.

    Examples
    --------
    >>> sim = Heat2D(grid=8, n_steps=3)
    >>> [(step, round(t, 3)) for step, t, _ in sim.run([300, 100, 500, 200, 400, -1.5])]
    [(0, 0.333), (1, 0.667), (2, 1.0)]
    """

    def __init__(
        self,
        grid: int = 64,
        n_steps: int = 100,
        t_final: float = 1.0,
        temperature_bounds: tuple[float, float] = (100.0, 500.0),
        log10_diffusivity_bounds: tuple[float, float] = (-2.5, -0.5),
    ) -> None:
        self.grid = _positive_int("grid", grid)
        self.n_steps = _positive_int("n_steps", n_steps)
        self.t_final = _positive_finite("t_final", t_final)
        self.dt = self.t_final / self.n_steps
        t_lo, t_hi = _bounds("temperature_bounds", temperature_bounds)
        d_lo, d_hi = _bounds("log10_diffusivity_bounds", log10_diffusivity_bounds)
        self.space = ParameterSpace(
            ("T_init", "T_left", "T_right", "T_bottom", "T_top", "log10_D"),
            [t_lo] * 5 + [d_lo],
            [t_hi] * 5 + [d_hi],
        )
        self.fields = (FieldSpec("temperature", (self.grid, self.grid), "float32"),)

    @property
    def times(self) -> np.ndarray:
        """Times of the emitted steps, ``(step + 1) * dt``: ndarray, shape (n_steps,)."""
        return np.arange(1, self.n_steps + 1) * self.dt

    def run(self, params: np.ndarray, seed: int | None = None) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        """Simulate one parameter vector and yield the temperature after every step.

        Parameters
        ----------
        params : array_like, shape (6,) or (1, 6)
            ``(T_init, T_left, T_right, T_bottom, T_top, log10_D)`` inside :attr:`space`.
        seed : int, optional
            Ignored: the simulation is deterministic.

        Yields
        ------
        step : int
            ``0 .. n_steps - 1``.
        t : float
            ``(step + 1) * dt``: the state after ``step + 1`` implicit steps (the uniform initial
            state is not emitted).
        fields : dict
            ``{"temperature": ndarray of float32, shape (grid, grid)}``.

        Raises
        ------
        ValueError
            When ``params`` is not one point of :attr:`space` (wrong shape, not finite, out of
            bounds).
        """
        t_init, left, right, bottom, top, log10_d = self.point(params)
        u0 = np.full((self.grid, self.grid), t_init)
        steps = implicit_euler_heat(u0, (left, right, bottom, top), 10.0**log10_d, self.dt, self.n_steps)
        for step, u in enumerate(steps):
            yield step, (step + 1) * self.dt, {"temperature": u.astype(np.float32)}

    def __repr__(self) -> str:
        return f"Heat2D(grid={self.grid}, n_steps={self.n_steps}, t_final={self.t_final:g}, space={self.space})"


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a positive integer, got the bool {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name}: expected a positive integer, got {type(value).__name__} {value!r}; pass an int"
        ) from None
    if result < 1:
        raise ValueError(f"{name}: expected a positive integer, got {result}; pass a value >= 1")
    return result


def _positive_finite(name: str, value: float) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a positive number, got {value!r}") from None
    if not (math.isfinite(result) and result > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {result}; pass a positive value")
    return result


def _bounds(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair (lower, upper) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}: expected finite bounds with lower < upper, got ({lo}, {hi}); swap or fix them")
    return lo, hi
