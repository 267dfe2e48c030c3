"""Distribution metrics against closed forms, hand computations and their floors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from gensim.metrics import (
    distribution_metrics,
    diversity_ratio,
    energy_distance,
    energy_score,
    pca_basis,
    pixel_moment_errors,
    radial_power_spectrum,
    simulator_samples,
    sliced_wasserstein,
    spectrum_error,
    summarize_distribution,
)
from gensim.simulations import DecayingWave, FieldSpec, StochasticHeat


def test_energy_distance_of_tiny_sets_by_hand():
    x, y = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0]])
    # 2 E|X - Y| = 2 * 1; E|X - X'| over the 4 pairs (diagonal included) = 4 / 4 = 1; E|Y - Y'| = 0.
    assert energy_distance(x, y) == pytest.approx(1.0)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_of_two_gaussians_matches_the_closed_form():
    # X ~ N(0, 1), Y ~ N(mu, 1): X - Y ~ N(-mu, 2), so E|X - Y| is a folded-normal mean, and
    # E|X - X'| = E|Y - Y'| = 2 / sqrt(pi). With n = 4000 the V-statistic's bias (about
    # 2 / sqrt(pi) / n = 3e-4) and its sampling std (~0.01, seen over seeds) stay below the 0.03
    # tolerance, a third of the distance.
    mu, s, n = 1.0, math.sqrt(2.0), 4000
    folded = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (1 - 2 * norm.cdf(-mu / s))
    exact = 2 * folded - 2 * (2 / math.sqrt(math.pi))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, generator=gen), mu + torch.randn(n, 1, generator=gen)
    assert energy_distance(x, y) == pytest.approx(exact, abs=0.03)


def test_sliced_wasserstein_of_a_translation_is_exact():
    # Sorting is shift-equivariant: for y = x + s every projected W2^2 is (theta . s)^2, whose
    # mean over the directions tends to |s|^2 / d (here with the actual directions' spread).
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(300, 4, generator=gen, dtype=torch.float64)
    shift = torch.tensor([3.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + shift, n_projections=4000, seed=2)
    # The mean of theta_1^2 over 4000 random directions is 1/4 within ~3% (its std is ~0.2/63 / 0.25).
    assert sw == pytest.approx(3.0 / 2.0, rel=0.03)
    assert sliced_wasserstein(x, x, seed=3) == 0.0


def test_sliced_wasserstein_handles_unequal_sizes():
    x = torch.arange(10, dtype=torch.float64).reshape(-1, 1)
    y = torch.arange(0, 10, 0.5, dtype=torch.float64).reshape(-1, 1)
    # Same uniform law on [0, 10): the quantiles differ by the grid offsets only (< 0.5).
    assert sliced_wasserstein(x, y, n_projections=8) < 0.5


def test_energy_score_of_a_point_ensemble_is_the_distance():
    obs = torch.tensor([[3.0, 4.0]])
    ens = torch.zeros(5, 2)
    assert energy_score(ens, obs) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="at least 2"):
        energy_score(ens[:1], obs)


def test_energy_score_prefers_the_true_law():
    gen = torch.Generator().manual_seed(4)
    obs = torch.randn(400, 3, generator=gen)
    right, narrow = torch.randn(200, 3, generator=gen), 0.3 * torch.randn(200, 3, generator=gen)
    assert energy_score(right, obs) < energy_score(narrow, obs)


def test_pixel_moment_errors_by_hand():
    samples = torch.tensor([[0.0, 2.0], [2.0, 6.0]])  # means (1, 4), stds (sqrt 2, sqrt 8)
    out = pixel_moment_errors(samples, torch.tensor([1.0, 3.0]), torch.tensor([math.sqrt(2), math.sqrt(2)]))
    assert out["mean_error"] == pytest.approx(1 / 2)  # |(0, 1)| / |(sqrt 2, sqrt 2)|
    assert out["std_rel_error"] == pytest.approx((0 + 1) / 2)  # pixel 2: sqrt 8 / sqrt 2 - 1 = 1
    assert out["std_ratio"] == pytest.approx((math.sqrt(2) + math.sqrt(8)) / (2 * math.sqrt(2)))


def test_radial_spectrum_of_a_single_mode():
    n = 16
    x = np.arange(n) / n
    field = np.cos(2 * np.pi * 3 * x)[None, :].repeat(n, 0)  # wavenumber (0, +-3)
    p = radial_power_spectrum(field[None])
    assert int(torch.argmax(p)) == 3
    # Parseval: bin 3 holds the energy n^2 / 2 spread over the count of |k| ~ 3 wavenumbers.
    ky, kx = np.meshgrid(np.fft.fftfreq(n, 1 / n), np.fft.fftfreq(n, 1 / n), indexing="ij")
    count = np.sum(np.round(np.hypot(ky, kx)) == 3)
    assert float(p[3]) == pytest.approx(n**2 / 2 / count)
    assert float(p.sum() - p[3]) == pytest.approx(0.0, abs=1e-20)


def test_spectrum_error_is_zero_for_equal_sets_and_relative():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(8, 8, 8, generator=gen)
    assert spectrum_error(a, a) == 0.0
    assert spectrum_error(2 * a, a) == pytest.approx(3.0)  # power x4: |4P - P| / P


def test_pca_basis_is_orthonormal_and_ordered():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(100, 5, generator=gen) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1])
    mean, comps = pca_basis(x, 3)
    assert comps.shape == (3, 5)
    torch.testing.assert_close(comps @ comps.T, torch.eye(3, dtype=torch.float64))
    var = (((x.double() - mean) @ comps.T) ** 2).mean(0)
    assert torch.all(var[:-1] >= var[1:])


def test_diversity_ratio_flags_collapse():
    gen = torch.Generator().manual_seed(7)
    obs = torch.randn(64, 10, generator=gen)
    good = torch.randn(64, 16, 10, generator=gen)
    collapsed = torch.zeros(64, 16, 10) + 1e-3 * torch.randn(64, 16, 10, generator=gen)
    # A right law: ratio 1 within its sampling error (640 values per side: a few percent).
    assert diversity_ratio(good, obs) == pytest.approx(1.0, abs=0.1)
    assert diversity_ratio(collapsed, obs) < 0.01


def test_distribution_metrics_of_the_simulator_sit_at_their_floor():
    # Model = a third independent simulator set: every metric is at its floor, within the
    # sampling scatter of three 64-sample sets.
    sim = StochasticHeat(grid=8, n_steps=2)
    params = sim.space.from_unit(np.full((1, 4), 0.5))[0]
    sets = [simulator_samples(sim, params, [1], 64, seed)[0][0] for seed in (0, 1000, 2000)]
    mean, std = sim.exact_moments(params, sim.times[1])
    out = distribution_metrics(sets[0], sets[1], sets[2], sim.fields, mean.reshape(-1), std.reshape(-1), n_components=8)
    summary = summarize_distribution([out])
    assert 0.5 < summary["energy_distance_ratio"] < 2.0
    assert 0.9 < summary["energy_score_ratio"] < 1.1
    assert out["std_rel_error"] < 0.2 and out["std_rel_error_floor"] < 0.2
    assert {"spectrum_error", "spectrum_error_floor", "sliced_wasserstein_ratio"} <= summary.keys()
    # A collapsed model (its mean only) is far above the floor and shows no spread.
    collapsed = torch.from_numpy(mean.reshape(1, -1)).float().expand(64, -1) + 1e-6 * sets[0]
    bad = distribution_metrics(collapsed, sets[1], sets[2], sim.fields, mean.reshape(-1), std.reshape(-1))
    assert bad["energy_distance"] > 5 * bad["energy_distance_floor"]
    assert bad["std_ratio"] < 0.01


def test_simulator_samples_are_seeded_and_in_field_order():
    sim = StochasticHeat(grid=8, n_steps=3)
    params = sim.space.from_unit(np.full((1, 4), 0.5))[0]
    fields, times = simulator_samples(sim, params, [0, 2], 3, seed=10)
    assert fields.shape == (2, 3, 64) and fields.dtype == torch.float32
    np.testing.assert_allclose(times.numpy(), sim.times[[0, 2]], rtol=1e-6)
    again = [f["u"].reshape(-1) for _, _, f in sim.run(params, seed=11)]
    np.testing.assert_array_equal(fields[1, 1].numpy(), again[2])
    with pytest.raises(ValueError, match="steps"):
        simulator_samples(DecayingWave(n_steps=2), [1.5, 0.5], [2], 1, 0)


def test_bad_shapes_are_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match="one shape"):
        distribution_metrics(torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="pass the simulation's fields"):
        distribution_metrics(torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3), [FieldSpec("u", (2, 2))])
