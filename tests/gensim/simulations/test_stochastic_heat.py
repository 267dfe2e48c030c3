"""StochasticHeat: the Monte Carlo law of its realizations against the exact law.

Statistical tolerances: every Monte Carlo check uses M = 400 seeded realizations and compares a
sample statistic with its exact expectation in units of its exact standard error, allowing 5 of
them per compared quantity. For a Gaussian statistic one such check fails with probability
5.7e-7, so the ~300 per test (every Fourier mode) fail together with probability < 2e-4; the
chi-square averages are slightly right-skewed (skewness 2 / sqrt(M) = 0.1 for Exp(1) averages),
which leaves that bound of the same order. The seeds are fixed, so the outcome is reproducible.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from simulation_contract import SimulationContract

from gensim.simulations import StochasticHeat

M = 400  # realizations per Monte Carlo check
Z = 5.0  # allowed standard errors
PARAMS = np.array([-2.3, 0.8, 1.3, 0.12])  # log10_D, damping, noise, corr_length


def realizations(sim: StochasticHeat, params, n: int = M) -> np.ndarray:
    """Fields of ``n`` runs with seeds 0..n-1, shape (n, n_steps, grid, grid), float64."""
    return np.stack([np.stack([f["u"] for _, _, f in sim.run(params, seed=s)]) for s in range(n)]).astype(float)


def coefficients(u: np.ndarray) -> np.ndarray:
    """Orthonormal rfft2 coefficients of fields (..., n, n)."""
    return np.fft.rfft2(u, norm="ortho")


def self_mirrored(n: int) -> np.ndarray:
    """Mask (n, n // 2 + 1) of the rfft2 coefficients that are their own mirror (real)."""
    mask = np.zeros((n, n // 2 + 1), bool)
    for ky in (0, n // 2):
        for kx in (0, n // 2):
            mask[ky, kx] = True
    return mask


class TestStochasticHeatContract(SimulationContract):
    @pytest.fixture
    def simulation(self):
        return StochasticHeat(grid=8, n_steps=3)


# --- the exact law, against independent closed forms ------------------------------------------


def test_exact_mean_is_the_decaying_initial_pattern():
    # u0 holds the modes (+-1, +-1) and +-(1, 2); each decays at a = D lambda + gamma with the
    # 5-point eigenvalue lambda = (4 / h^2)(sin^2(pi kx h) + sin^2(pi ky h)).
    sim = StochasticHeat(grid=12)
    log10_d, gamma = PARAMS[:2]
    d, h, t = 10**log10_d, 1 / 12, 0.37
    lam = lambda kx, ky: 4 / h**2 * (np.sin(np.pi * kx * h) ** 2 + np.sin(np.pi * ky * h) ** 2)  # noqa: E731
    x = np.arange(12) * h
    xx, yy = np.meshgrid(x, x)
    expected = np.exp(-(d * lam(1, 1) + gamma) * t) * np.sin(2 * np.pi * xx) * np.sin(2 * np.pi * yy) + 0.5 * np.exp(
        -(d * lam(1, 2) + gamma) * t
    ) * np.cos(2 * np.pi * (xx + 2 * yy))
    mean, std = sim.exact_moments(PARAMS, t)
    np.testing.assert_allclose(mean, expected, rtol=0, atol=1e-13)  # float64 FFT round-off
    assert np.all(std == std[0, 0]) and std[0, 0] > 0  # homogeneous fluctuations


def test_exact_variance_tends_to_the_stationary_ou_variance():
    sim = StochasticHeat(grid=16)
    _, var_late = sim.mode_moments(PARAMS, 200.0)  # slowest rate >= gamma = 0.8: exp(-320) ~ 0
    a, q = sim._rates(PARAMS)
    np.testing.assert_allclose(var_late, q / (2 * a), rtol=1e-14)
    _, var0 = sim.mode_moments(PARAMS, 0.0)
    assert np.all(var0 == 0)  # a deterministic initial field


def test_forcing_has_the_stated_pointwise_intensity():
    # q is normalized so that the forcing adds sigma^2 dt of pointwise variance per step:
    # for t -> 0 the pointwise variance is sigma^2 t (the drift has no time to act).
    sim = StochasticHeat(grid=16)
    _, std = sim.exact_moments(PARAMS, 1e-7)
    np.testing.assert_allclose(std[0, 0] ** 2, PARAMS[2] ** 2 * 1e-7, rtol=1e-5)


def test_pointwise_std_converges_with_the_grid():
    # Smoothed noise: the pointwise std is resolution-independent up to the spectral tail of the
    # kernel (white noise would make it grow like log(grid)).
    stds = [StochasticHeat(grid=n).exact_moments(PARAMS, 1.0)[1][0, 0] for n in (32, 64, 128)]
    assert abs(stds[1] / stds[0] - 1) < 2e-3
    assert abs(stds[2] / stds[1] - 1) < 1e-3


# --- Monte Carlo against the exact law -------------------------------------------------------


@pytest.mark.parametrize("n_steps", [1, 4])
def test_fourier_mean_and_spectrum_match_the_exact_law(n_steps):
    # With one step or four to the same final time, the law at t = 1 is the same: the OU
    # discretization is exact. Per mode: the standardized mean error, and the fluctuation power
    # |c - m|^2 / v, whose average over M realizations is 1 with standard error 1 / sqrt(M)
    # (Exp(1) per complex mode) or sqrt(2 / M) (chi-square(1) per real, self-mirrored mode).
    sim = StochasticHeat(grid=16, n_steps=n_steps, t_final=1.0)
    c = coefficients(realizations(sim, PARAMS)[:, -1])
    mean, var = sim.mode_moments(PARAMS, 1.0)
    # Modes whose std is below 1e-3 of the pointwise std are left out: the smoothing kernel makes
    # the highest ones ~1e-30, where the float32 rounding of the output (~1e-8 per mode)
    # dominates. The 50 kept rfft2 coefficients hold all but 3e-8 of the variance.
    kept = np.sqrt(var) > 1e-3 * sim.exact_moments(PARAMS, 1.0)[1][0, 0]
    assert kept.sum() >= 50
    real = self_mirrored(16)
    se_mean = np.sqrt(np.where(real, var, var / 2) / M)  # per real or imaginary part
    z_mean = np.concatenate(
        [((c.real.mean(0) - mean.real) / se_mean)[kept], ((c.imag.mean(0) - mean.imag) / se_mean)[kept & ~real]]
    )
    assert np.max(np.abs(z_mean)) < Z, np.max(np.abs(z_mean))
    power = (np.abs(c - mean) ** 2 / var).mean(0)
    se_power = np.where(real, np.sqrt(2 / M), 1 / np.sqrt(M))
    z_power = ((power - 1) / se_power)[kept]
    assert np.max(np.abs(z_power)) < Z, np.max(np.abs(z_power))
    # And the total E|c|^2 (mean plus fluctuations) summed over modes, the field's energy.
    energy = (sim._weight * np.abs(c) ** 2).sum(axis=(1, 2))
    exact = (sim._weight * sim.exact_power_spectrum(PARAMS, 1.0)).sum()
    assert abs(energy.mean() - exact) < Z * energy.std() / np.sqrt(M)


def test_pointwise_mean_and_variance_match_the_exact_moments_at_every_step():
    sim = StochasticHeat(grid=16, n_steps=3, t_final=0.6)
    u = realizations(sim, PARAMS)
    for step, t in enumerate(sim.times):
        mean, std = sim.exact_moments(PARAMS, t)
        # Pixel means: each is N(mean, std^2 / M); the max over 256 correlated pixels stays < Z.
        z = (u[:, step].mean(0) - mean) / (std / np.sqrt(M))
        assert np.max(np.abs(z)) < Z, (step, np.max(np.abs(z)))
        # Pooled pointwise variance S = mean over pixels of (u - mean)^2 = sum_k |c_k - m_k|^2 / N
        # (Parseval); E S = std^2 and Var S = 2 sum_k v_k^2 / N^2 over all N modes.
        _, var = sim.mode_moments(PARAMS, t)
        s = ((u[:, step] - mean) ** 2).mean(axis=(1, 2))
        se = np.sqrt(2 * (sim._weight * var**2).sum() / 16**4 / M)
        assert abs(s.mean() - std[0, 0] ** 2) < Z * se, (step, s.mean(), std[0, 0] ** 2, se)


# --- the role of the seed and of the parameters ----------------------------------------------


def test_seed_sets_the_realization():
    sim = StochasticHeat(grid=8, n_steps=2)
    a, b = (next(iter(sim.run(PARAMS, seed=s)))[2]["u"] for s in (1, 2))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, next(iter(sim.run(PARAMS, seed=1)))[2]["u"])


def test_fluctuations_are_linear_in_the_noise_amplitude():
    # Same seed, same noise: doubling sigma doubles u - mean exactly (up to float32 output).
    sim = StochasticHeat(grid=16, n_steps=3)
    low, high = PARAMS.copy(), PARAMS.copy()
    low[2], high[2] = 0.7, 1.4
    mean = sim.exact_moments(low, sim.times[-1])[0]
    u_low = [f["u"].astype(float) - mean for _, _, f in sim.run(low, seed=3)][-1]
    u_high = [f["u"].astype(float) - mean for _, _, f in sim.run(high, seed=3)][-1]
    np.testing.assert_allclose(u_high, 2 * u_low, rtol=0, atol=4 * np.spacing(np.float32(4.0)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"grid": 3}, ValueError, "grid"),
        ({"grid": 8.0}, TypeError, "grid"),
        ({"n_steps": 0}, ValueError, "n_steps"),
        ({"t_final": -1.0}, ValueError, "t_final"),
        ({"damping_bounds": (0.0, 1.0)}, ValueError, "damping_bounds"),
        ({"noise_bounds": (2.0, 1.0)}, ValueError, "noise_bounds"),
        ({"correlation_length_bounds": (0.1,)}, ValueError, "correlation_length_bounds"),
    ],
)
def test_bad_constructor_arguments_raise_a_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        StochasticHeat(**kwargs)


def test_two_points_at_once_are_refused():
    with pytest.raises(ValueError, match="one parameter vector"):
        StochasticHeat(grid=8).run(np.stack([PARAMS, PARAMS]))


def test_default_run_wall_time(capsys):
    # Reported, not asserted: timings on shared CI machines are noise.
    sim = StochasticHeat()
    start = time.perf_counter()
    n = sum(1 for _ in sim.run(PARAMS, seed=0))
    elapsed = time.perf_counter() - start
    assert n == sim.n_steps
    with capsys.disabled():
        print(f"\nStochasticHeat default run (64x64, {n} steps): {elapsed * 1e3:.1f} ms")
