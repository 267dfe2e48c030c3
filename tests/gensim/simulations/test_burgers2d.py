"""Burgers2D and its ETDRK4 pseudo-spectral solver, checked against exact solutions.

Exact solutions: any field ``u = w(s)`` of one direction ``s = p x + q y`` (integers p, q) stays
one, and ``w`` solves the 1-D Burgers equation ``w_t + c w w_s = mu w_ss`` with
``c = d . (p, q)`` and ``mu = nu (p^2 + q^2)``, whose Cole-Hopf solution is
``w = -2 mu phi_s / (c phi)``, ``phi = a + b exp(-mu (2 pi)^2 t) cos(2 pi s)`` (``a > b > 0``).
This checks the nonlinear term, both derivative directions and the time stepping at once. In the
small-amplitude limit the flux vanishes and each Fourier mode decays as
``exp(-nu |2 pi k|^2 t)``: that checks the parameters, the initial field and the times of
``Burgers2D.run``.

Tolerances are stated at each check with the errors measured when the test was written.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
from simulation_contract import SimulationContract

from gensim.simulations import Burgers2D
from gensim.simulations.burgers2d import etdrk4_burgers, etdrk4_coefficients, wave_vectors
from gensim.simulations.plume2d import cell_centres


def last(iterator):
    """The last item of an iterator (None when empty), without keeping the others."""
    tail = collections.deque(iterator, maxlen=1)
    return tail[0] if tail else None


def cole_hopf(n: int, direction, wave, viscosity: float, t: float, a: float = 2.0, b: float = 1.0) -> np.ndarray:
    """The exact plane-wave solution along ``s = p x + q y`` at the cell centres, shape (n, n)."""
    p, q = wave
    c = direction[0] * p + direction[1] * q
    mu = viscosity * (p * p + q * q)
    x = cell_centres(n)
    s = p * x[None, :] + q * x[:, None]  # rows y, columns x
    e = b * math.exp(-mu * (2 * math.pi) ** 2 * t)
    return 2 * mu * 2 * math.pi * e * np.sin(2 * math.pi * s) / (c * (a + e * np.cos(2 * math.pi * s)))


def resample(u: np.ndarray, n: int) -> np.ndarray:
    """The trigonometric interpolant of a field on ``N`` cell centres, at ``n <= N`` cell centres.

    ``u`` is a shape (N, N) field; returns shape (n, n). Fourier coefficients of the continuous
    field carry the half-cell offset of the centres: ``c_k = FFT(u)_k exp(-i pi k / N) / N^2``.
    """
    big = u.shape[0]
    k = np.fft.fftfreq(n, 1.0 / n).astype(int)
    coefficients = np.fft.fft2(u)[np.ix_(k % big, k % big)] / big**2
    shift = np.exp(1j * np.pi * k * (1.0 / n - 1.0 / big))
    return np.real(np.fft.ifft2(coefficients * shift[:, None] * shift[None, :] * n**2))


# --- 1. the ETDRK4 coefficients ---------------------------------------------------------------


def test_contour_coefficients_match_the_closed_forms_and_their_limits():
    z = np.array([-300.0, -20.0, -3.0, -1.0, 1.0])
    E, E2, Q, f1, f2, f3 = etdrk4_coefficients(z)
    # Away from 0 the closed forms lose at most a few digits; 1e-12 relative is far above that.
    np.testing.assert_allclose(E, np.exp(z), rtol=1e-15)
    np.testing.assert_allclose(E2, np.exp(z / 2), rtol=1e-15)
    np.testing.assert_allclose(Q, (np.exp(z / 2) - 1) / z, rtol=1e-12)
    np.testing.assert_allclose(f1, (-4 - z + np.exp(z) * (4 - 3 * z + z**2)) / z**3, rtol=1e-12)
    np.testing.assert_allclose(f2, (2 + z + np.exp(z) * (z - 2)) / z**3, rtol=1e-12)
    np.testing.assert_allclose(f3, (-4 - 3 * z - z**2 + np.exp(z) * (4 - z)) / z**3, rtol=1e-12)
    # At 0, where the closed forms are 0/0: the limits 1/2, 1/6, 1/6, 1/6 (measured to 1e-16).
    _, _, Q0, f10, f20, f30 = etdrk4_coefficients(np.zeros(1))
    np.testing.assert_allclose([Q0[0], f10[0], f20[0], f30[0]], [0.5, 1 / 6, 1 / 6, 1 / 6], rtol=1e-13)


def test_one_step_is_exact_for_a_constant_forcing():
    # du/dt = L u + c: the four stages see the same N = c, and the step is exact when
    # f1 + 4 f2 + f3 = (E - 1) / (h L), the mean of e^{h L s} over one step.
    z = np.array([-1e3, -5.0, -1e-3, -1e-9, 0.0])
    E, _, _, f1, f2, f3 = etdrk4_coefficients(z)
    exact = np.where(z != 0, np.expm1(z) / np.where(z != 0, z, 1.0), 1.0)
    np.testing.assert_allclose(f1 + 4 * f2 + f3, exact, rtol=1e-13)


# --- 2. exact nonlinear solutions -------------------------------------------------------------


@pytest.mark.parametrize(
    "direction, wave, atol",
    [
        ((1.0, 0.0), (1, 0), 1e-9),  # along x; |u| <= 0.22, measured 2e-10
        ((0.0, 1.0), (0, 1), 1e-9),  # along y; measured 2e-10
        ((math.cos(0.5), math.sin(0.5)), (1, 1), 1e-8),  # diagonal; |u| <= 0.33, measured 1.6e-9
        ((0.6, 0.8), (2, -1), 3e-7),  # both signs, c = 0.4, |u| <= 2.8; measured 5e-8
    ],
)
def test_matches_the_cole_hopf_solution(direction, wave, atol):
    # a = 3: the initial field's Fourier coefficients fall by 0.17 per harmonic, so the 2/3 rule
    # at 48 cells (|k| < 16) drops less than 1e-9 of it; the errors are those of the time step.
    n, viscosity, t_final, n_steps = 48, 0.05, 0.5, 80
    u0 = cole_hopf(n, direction, wave, viscosity, 0.0, a=3.0)
    times = t_final * np.arange(1, 5) / 4
    steps = etdrk4_burgers(u0, direction, viscosity, t_final / n_steps, n_steps, every=n_steps // 4)
    for t, u in zip(times, steps, strict=True):
        np.testing.assert_allclose(u, cole_hopf(n, direction, wave, viscosity, t, a=3.0), rtol=0, atol=atol)


def test_spatial_error_decays_exponentially():
    # Cole-Hopf along x with a = 2 (coefficients falling by 0.27 per harmonic) and a step small
    # enough for the time error to be below 1e-12: a spectral method's error falls geometrically
    # with the cells. Measured 2.8e-3 at 12 cells and 6.1e-6 at 24 (a ratio of 450, where a
    # 4th-order method would give 16).
    viscosity, t_final, n_steps = 0.05, 0.1, 400
    errors = []
    for n in (12, 16, 20, 24):
        u0 = cole_hopf(n, (1.0, 0.0), (1, 0), viscosity, 0.0)
        u = last(etdrk4_burgers(u0, (1.0, 0.0), viscosity, t_final / n_steps, n_steps))
        errors.append(np.abs(u - cole_hopf(n, (1.0, 0.0), (1, 0), viscosity, t_final)).max())
    assert np.all(np.diff(errors) < 0)
    assert errors[0] / errors[-1] > 100 and errors[-1] < 1e-5


def test_time_stepping_is_fourth_order():
    # A full 2-D nonlinear run (random initial field, oblique flux) against a 64x finer step.
    # Measured orders 3.98 and 4.05 (steps 10 -> 20 -> 40; errors 1.5e-4, 9.6e-6, 5.8e-7 for
    # |u| <= 1.14); ETDRK4 is 4th order.
    sim = Burgers2D(grid=24, n_steps=1, t_final=0.2, max_wavenumber=2)
    rng = np.random.default_rng(0)
    u0 = sim.initial_field(rng.uniform(-1, 1, 2 * len(sim.wave_vectors)))
    direction, viscosity = (math.cos(0.4), math.sin(0.4)), 0.03
    reference = last(etdrk4_burgers(u0, direction, viscosity, 0.2 / 640, 640))
    errors = [
        np.abs(last(etdrk4_burgers(u0, direction, viscosity, 0.2 / m, m)) - reference).max() for m in (10, 20, 40)
    ]
    orders = np.log2(np.array(errors[:-1]) / errors[1:])
    np.testing.assert_allclose(orders, 4.0, atol=0.3)
    assert errors[-1] < 1e-6


def test_cole_hopf_time_error_is_fourth_order():
    # Against the exact solution (spatial error below 1e-11 at 32 cells): measured orders 3.96, 4.0.
    n, direction, wave, viscosity = 32, (1.0, 0.0), (1, 0), 0.05
    u0 = cole_hopf(n, direction, wave, viscosity, 0.0)
    exact = cole_hopf(n, direction, wave, viscosity, 0.5)
    errors = [np.abs(last(etdrk4_burgers(u0, direction, viscosity, 0.5 / m, m)) - exact).max() for m in (20, 40, 80)]
    np.testing.assert_allclose(np.log2(np.array(errors[:-1]) / errors[1:]), 4.0, atol=0.2)


# --- 3. Burgers2D: parameters, linear limit, resolution ---------------------------------------


def test_wave_vectors_and_parameter_names():
    # Sorted by |k|, then k_x, then k_y; one of each pair +-k.
    np.testing.assert_array_equal(wave_vectors(1.5), [[0, 1], [1, 0], [1, -1], [1, 1]])
    sim = Burgers2D(grid=12, n_steps=2)
    assert len(sim.wave_vectors) == 14 and sim.space.dim == 30  # the default: 28 coefficients
    assert sim.space.names[:4] == ("c_0_1", "s_0_1", "c_1_0", "s_1_0")
    assert "c_2_m1" in sim.space.names
    assert sim.space.names[-2:] == ("log10_nu", "angle")
    np.testing.assert_array_equal(sim.space.lower[-2:], [-1.7, 0.0])
    np.testing.assert_array_equal(sim.space.upper[-2:], [-1.0, 90.0])
    assert [(f.name, f.shape, f.dtype) for f in sim.fields] == [("u", (12, 12), "float32")]


def test_initial_field_orientation_and_scale():
    sim = Burgers2D(grid=16, n_steps=1, max_wavenumber=1, amplitude=2.0)
    x = cell_centres(16)
    # c_1_0 (k = (1, 0)): a cosine along x, i.e. along the columns; scale A / sqrt(M), M = 2.
    np.testing.assert_allclose(
        sim.initial_field([0, 0, 1, 0]), np.tile(np.sqrt(2) * np.cos(2 * np.pi * x), (16, 1)), rtol=0, atol=1e-14
    )
    np.testing.assert_allclose(
        sim.initial_field([0, 1, 0, 0]),
        np.tile(np.sqrt(2) * np.sin(2 * np.pi * x)[:, None], (1, 16)),
        rtol=0,
        atol=1e-14,
    )


def test_small_amplitude_limit_decays_each_mode_exactly():
    # With A = 1e-8 the flux is 1e-8 of the viscous term (|u| |k| / (nu |k|^2) ~ 1e-8 / 0.1):
    # each mode decays by exp(-nu |2 pi k|^2 t). float32 output: 4 ulps of the peak (~1e-8).
    amplitude = 1e-8
    sim = Burgers2D(grid=16, n_steps=4, t_final=0.2, substeps=2, max_wavenumber=2, amplitude=amplitude)
    rng = np.random.default_rng(1)
    coefficients = rng.uniform(-1, 1, 2 * len(sim.wave_vectors))
    log10_nu = -1.3
    decay = (2 * np.pi) ** 2 * 10**log10_nu * (sim.wave_vectors**2).sum(axis=1)
    for _, t, f in sim.run(np.concatenate([coefficients, [log10_nu, 70.0]])):
        expected = sim.initial_field(coefficients.reshape(-1, 2) * np.exp(-decay * t)[:, None])
        np.testing.assert_allclose(f["u"], expected, rtol=0, atol=4 * np.spacing(np.float32(2 * amplitude)))


@pytest.mark.parametrize("point, tolerance", [("corner", 1e-2), ("uniform", 1e-3)])
def test_default_resolution_at_the_lowest_viscosity(point, tolerance):
    # The steepest shocks of the space are at the lowest viscosity with every coefficient at a
    # bound (a corner: twice the typical amplitude). The configured 48 cells and step
    # (dt = 0.0025) are compared over a whole trajectory (relative L2, 10 steps to t = 0.5)
    # with 96 cells (same step) and with a 4x smaller step (same cells). Measured, space: 4.8e-3
    # at this corner, 1.3e-5 to 8e-4 at 4 uniform random points (this one: 1.3e-5); time: 1.2e-6.
    coarse = Burgers2D(grid=48, n_steps=10, t_final=0.5, substeps=20)
    assert coarse.t_final / (coarse.n_steps * coarse.substeps) == Burgers2D().dt / Burgers2D().substeps
    if point == "corner":
        coefficients = np.random.default_rng(1).choice([-1.0, 1.0], 2 * len(coarse.wave_vectors))
    else:
        coefficients = coarse.space.from_unit(np.random.default_rng(0).random((1, coarse.space.dim)))[0, :-2]
    params = np.concatenate([coefficients, [-1.7, 30.0]])

    def trajectory(sim: Burgers2D) -> np.ndarray:
        return np.stack([f["u"] for _, _, f in sim.run(params)]).astype(float)

    u = trajectory(coarse)
    fine = np.stack([resample(f, 48) for f in trajectory(Burgers2D(grid=96, n_steps=10, t_final=0.5, substeps=20))])
    short = trajectory(Burgers2D(grid=48, n_steps=10, t_final=0.5, substeps=80))
    assert np.linalg.norm(u - fine) / np.linalg.norm(fine) < tolerance
    assert np.linalg.norm(u - short) / np.linalg.norm(short) < 1e-5


class TestBurgers2DContract(SimulationContract):
    @pytest.fixture
    def simulation(self):
        return Burgers2D(grid=16, n_steps=3, max_wavenumber=2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"grid": 9}, ValueError, "grid"),  # 3 * max |k_x| = 9: the initial modes would be cut
        ({"grid": 16.0}, TypeError, "grid"),
        ({"substeps": 0}, ValueError, "substeps"),
        ({"max_wavenumber": 0.5}, ValueError, "max_wavenumber"),
        ({"amplitude": 0.0}, ValueError, "amplitude"),
        ({"log10_viscosity_bounds": (-1.0, -2.0)}, ValueError, "log10_viscosity_bounds"),
    ],
)
def test_bad_constructor_arguments_raise_a_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        Burgers2D(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"u0": np.zeros((4, 5))}, "square"),
        ({"u0": np.full((4, 4), np.nan)}, "finite"),
        ({"direction": (1.0,)}, "direction"),
        ({"viscosity": -0.1}, "viscosity"),
        ({"dt": 0.0}, "dt"),
        ({"n_steps": 3, "every": 2}, "multiple"),
    ],
)
def test_solver_rejects_bad_arguments(kwargs, match):
    args = {"u0": np.zeros((4, 4)), "direction": (1.0, 0.0), "viscosity": 0.1, "dt": 0.1, "n_steps": 2}
    with pytest.raises(ValueError, match=match):
        etdrk4_burgers(**{**args, **kwargs})  # raises at the call, before any step
