"""Plume2D and its spectral solver, checked against exact solutions of the continuous problem.

Tolerances: the solver is exact in time and works in float64; against a single Fourier mode it is
exact up to round-off, ``atol64`` = 64 ulps of the field's magnitude (FFTs add O(log n) roundings;
about 4 are seen). Against the analytic puff, the only other error is the sampling of the initial
puff on the grid (aliasing), of the order of ``exp(-(pi n w)^2 / 2)``: below 1e-20 for the grids
and widths used. ``Plume2D.run`` rounds to float32: ``ATOL32`` = 2 float32 ulps of the unit peak.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from simulation_contract import SimulationContract

from gensim.simulations import Plume2D
from gensim.simulations.plume2d import cell_centres, periodic_gaussian, spectral_advection_diffusion

EPS64 = np.finfo(np.float64).eps
ATOL32 = 2 * float(np.spacing(np.float32(1.0)))


def atol64(scale: float) -> float:
    return 64 * EPS64 * scale


def exact_puff(n, release, width, velocity, diffusivity, t):
    """The continuous solution at the cell centres: a periodized Gaussian of variance ``w^2 + 2 D t``,
    centred at ``release + u t``, peak ``w^2 / (w^2 + 2 D t)`` (mass is conserved). Shape (n, n)."""
    s2 = width**2 + 2 * diffusivity * t
    x = cell_centres(n)
    gx = periodic_gaussian(x, release[0] + velocity[0] * t, math.sqrt(s2))
    gy = periodic_gaussian(x, release[1] + velocity[1] * t, math.sqrt(s2))
    return width**2 / s2 * gy[:, None] * gx[None, :]


# --- 1. one Fourier mode: exact decay and phase ---------------------------------------------


@pytest.mark.parametrize("n, p, q", [(16, 1, 0), (16, 0, 3), (17, 2, -5), (32, 7, 4)])
def test_fourier_mode_decays_and_travels_exactly(n, p, q):
    # c0 = cos(2 pi (p x + q y)): c = exp(-4 pi^2 D (p^2 + q^2) t) cos(2 pi (p (x - u_x t) + q (y - u_y t))).
    x = cell_centres(n)
    X, Y = np.meshgrid(x, x)  # X[i, j] = x_j, Y[i, j] = y_i: the documented orientation
    velocity, diffusivity, times = (0.7, -0.3), 0.01, [0.0, 0.1, 0.45, 2.0]
    c0 = np.cos(2 * np.pi * (p * X + q * Y))
    for t, c in zip(times, spectral_advection_diffusion(c0, velocity, diffusivity, times), strict=True):
        exact = np.exp(-4 * np.pi**2 * diffusivity * (p**2 + q**2) * t) * np.cos(
            2 * np.pi * (p * (X - velocity[0] * t) + q * (Y - velocity[1] * t))
        )
        np.testing.assert_allclose(c, exact, rtol=0, atol=atol64(1.0))


def test_linear_in_the_initial_field():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 12, 12))
    run = lambda c0: list(spectral_advection_diffusion(c0, (0.3, 0.9), 0.02, [0.1, 0.7]))  # noqa: E731
    for s, ra, rb in zip(run(2 * a - b), run(a), run(b)):
        np.testing.assert_allclose(s, 2 * ra - rb, rtol=0, atol=atol64(10.0))


@pytest.mark.parametrize("centre, width", [(0.3, 0.05), (-0.35, 0.36), (2.7, 1.0)])
def test_periodic_gaussian_has_the_mass_of_the_gaussian(centre, width):
    # The periodized Gaussian integrates to sqrt(2 pi) w over one period, and the midpoint rule is
    # spectrally accurate for smooth periodic functions: missing images would show up here.
    x = cell_centres(128)
    np.testing.assert_allclose(periodic_gaussian(x, centre, width).mean(), math.sqrt(2 * math.pi) * width, rtol=1e-13)


# --- 2. the analytic puff ---------------------------------------------------------------------


@pytest.mark.parametrize("diffusivity, velocity", [(1e-3, (1.0, 0.0)), (0.02, (0.6, 0.8)), (0.05, (-0.5, 0.2))])
def test_puff_matches_the_continuous_solution(diffusivity, velocity):
    n, release, width = 64, (0.3, 0.6), 0.05  # 3.2 cells: aliasing ~ exp(-(pi 64 0.05)^2 / 2) ~ 1e-22
    c0 = exact_puff(n, release, width, velocity, diffusivity, 0.0)
    times = [0.1, 0.5, 1.3]  # 1.3 lengths: the puff wraps around the periodic domain
    for t, c in zip(times, spectral_advection_diffusion(c0, velocity, diffusivity, times), strict=True):
        np.testing.assert_allclose(c, exact_puff(n, release, width, velocity, diffusivity, t), rtol=0, atol=atol64(1.0))


def test_mass_is_conserved_and_pure_diffusion_is_symmetric():
    sim = Plume2D(grid=32, n_steps=4)
    c0 = sim.initial_field(0.08)
    for c in spectral_advection_diffusion(c0, (0.0, 0.0), 0.05, [0.2, 1.0]):
        np.testing.assert_allclose(c.mean(), c0.mean(), rtol=1e-13)
    # Without flow a puff released at a cell centre stays symmetric about it.
    centre = Plume2D(grid=33, n_steps=1, release=(cell_centres(33)[16],) * 2)
    c = next(spectral_advection_diffusion(centre.initial_field(0.1), (0.0, 0.0), 0.01, [0.3]))
    np.testing.assert_allclose(c, c[::-1, ::-1], rtol=0, atol=atol64(1.0))
    np.testing.assert_allclose(c, c.T, rtol=0, atol=atol64(1.0))


# --- 3. Plume2D: parameters, orientation, where the difficulty lies -----------------------------


def test_run_matches_the_continuous_solution_with_its_parameters():
    sim = Plume2D(grid=48, n_steps=5, t_final=0.5, release=(0.25, 0.25))
    log10_pe, angle, width = 2.3, 60.0, 0.07  # 3.4 cells
    velocity = (math.cos(math.radians(angle)), math.sin(math.radians(angle)))
    out = list(sim.run([log10_pe, angle, width]))
    assert [step for step, _, _ in out] == list(range(5))
    np.testing.assert_allclose([t for _, t, _ in out], sim.times, rtol=1e-15)
    for _, t, f in out:
        exact = exact_puff(48, sim.release, width, velocity, 10**-log10_pe, t)
        np.testing.assert_allclose(f["concentration"], exact, rtol=0, atol=ATOL32)


def test_orientation_flow_along_x_moves_the_peak_along_columns():
    sim = Plume2D(grid=32, n_steps=1, t_final=0.5, release=(0.25, 0.25))
    c = next(iter(sim.run([3.0, 0.0, 0.05])))[2]["concentration"]
    i, j = np.unravel_index(np.argmax(c), c.shape)
    x = cell_centres(32)
    assert abs(x[j] - 0.75) <= 1 / 32 and abs(x[i] - 0.25) <= 1 / 32  # moved 0.5 along x only


def test_difficulty_is_localized_at_high_peclet():
    # The reason for this problem: spatial contrast (std / mean) of the last field is tiny at low
    # Pe and large at high Pe, so a surrogate's error concentrates there.
    sim = Plume2D(grid=32, n_steps=2)
    contrast = {}
    for log10_pe in (-1.0, 0.0, 1.0, 3.0):
        c = list(sim.run([log10_pe, 45.0, 0.05]))[-1][2]["concentration"].astype(float)
        contrast[log10_pe] = c.std() / c.mean()
    assert contrast[-1.0] < 1e-4 and contrast[0.0] < 1e-4  # uniform to float32 round-off
    assert contrast[1.0] < 0.5 < 3.0 < contrast[3.0]


def test_space_and_fields():
    sim = Plume2D(grid=12, n_steps=3)
    assert sim.space.names == ("log10_Pe", "angle", "width")
    np.testing.assert_array_equal(sim.space.lower, [-1.0, 0.0, 0.05])
    np.testing.assert_array_equal(sim.space.upper, [3.0, 90.0, 0.2])
    assert not sim.space.log.any()  # log10_Pe is already the log
    assert [(f.name, f.shape, f.dtype) for f in sim.fields] == [("concentration", (12, 12), "float32")]


class TestPlume2DContract(SimulationContract):
    @pytest.fixture
    def simulation(self):
        return Plume2D(grid=8, n_steps=4)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"grid": 3}, ValueError, "grid"),
        ({"grid": 8.0}, TypeError, "grid"),
        ({"n_steps": 0}, ValueError, "n_steps"),
        ({"t_final": -1.0}, ValueError, "t_final"),
        ({"log10_peclet_bounds": (1.0, float("inf"))}, ValueError, "log10_peclet_bounds"),
        ({"width_bounds": (0.0, 0.1)}, ValueError, "width_bounds"),
        ({"width_bounds": (0.2, 0.1)}, ValueError, "width_bounds"),
        ({"angle_bounds": (0.0,)}, ValueError, "angle_bounds"),
        ({"release": (1.0, 0.5)}, ValueError, "release"),
    ],
)
def test_bad_constructor_arguments_raise_a_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        Plume2D(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c0": np.zeros((4, 5))}, "square"),
        ({"c0": np.full((4, 4), np.nan)}, "finite"),
        ({"velocity": (1.0,)}, "velocity"),
        ({"diffusivity": -0.1}, "diffusivity"),
        ({"times": [0.1, -1.0]}, "times"),
    ],
)
def test_solver_rejects_bad_arguments(kwargs, match):
    args = {"c0": np.zeros((4, 4)), "velocity": (1.0, 0.0), "diffusivity": 0.1, "times": [0.1]}
    with pytest.raises(ValueError, match=match):
        spectral_advection_diffusion(**{**args, **kwargs})  # raises at the call, before any step
