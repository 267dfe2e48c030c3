"""Strata of (parameters, time) and the divergence statistics of a buffer's content."""

from __future__ import annotations

import numpy as np
import pytest

from gensim.buffers import Strata, buffer_divergence, chi_square_divergence, unbiased_energy_distance
from gensim.simulations import Heat2D
from sampling import ParameterSpace

SPACE = ParameterSpace(["x", "D", "y"], [0.0, 1e-3, -5.0], [1.0, 1.0, 5.0], log=[False, True, False])


def test_masses_are_a_law_and_match_monte_carlo():
    strata = Strata(SPACE, n_steps=10, n_cells=8, n_time_bins=3)
    assert strata.mass.shape == (24,) and (strata.mass > 0).all()
    np.testing.assert_allclose(strata.mass.sum(), 1.0)
    # Time bins hold 4, 3 and 3 of the 10 steps (equal up to one step).
    np.testing.assert_array_equal(np.bincount(strata.time_bin_of(np.arange(10))), [4, 3, 3])
    # Against 20000 pseudo-random points of the target: the share of a stratum of mass m has
    # standard deviation sqrt(m (1 - m) / 20000) <= 0.0035 here; the quasi-random mass estimate
    # is much closer than that. 5 standard deviations (0.018): fails a correct implementation
    # with probability < 1e-5 over seeds.
    rng = np.random.default_rng(0)
    params = SPACE.from_unit(rng.random((20000, 3)))
    steps = rng.integers(10, size=20000)
    shares = np.bincount(strata.assign(params, steps), minlength=24) / 20000
    assert np.abs(shares - strata.mass).max() < 0.018


def test_fast_path_agrees_with_vectorized_assignment():
    strata = Strata(SPACE, n_steps=7, n_cells=16, n_time_bins=7, seed=4)
    rng = np.random.default_rng(1)
    params = SPACE.from_unit(rng.random((200, 3)))
    steps = rng.integers(-2, 9, size=200)  # out-of-range steps are clipped into the first/last bin
    expected = strata.assign(params, steps)
    assert [strata.stratum_of(p, s) for p, s in zip(params, steps)] == expected.tolist()
    assert set(expected % 7) == set(range(7))


def test_log_parameters_are_partitioned_in_log10():
    # The cells are nearest-center cells in log10(D): computed by hand here, they differ from
    # the linear ones for some D (checked, so that the test can fail).
    space = ParameterSpace(["D"], [1e-3], [1.0], log=[True])
    strata = Strata(space, n_steps=1, n_cells=4, n_time_bins=1)
    d = np.logspace(-3, 0, 61)
    log_unit = (np.log10(d) + 3) / 3
    by_hand = np.abs(log_unit[:, None] - strata.centers[:, 0]).argmin(axis=1)
    linear = np.abs((d[:, None] - 1e-3) / (1 - 1e-3) - strata.centers[:, 0]).argmin(axis=1)
    assert (by_hand != linear).any()
    np.testing.assert_array_equal(strata.assign(d[:, None], np.zeros(61)), by_hand)


def test_reference_lies_on_the_target_support():
    strata = Strata(SPACE, n_steps=5, n_cells=4, n_time_bins=5)
    ref = strata.reference(300, seed=2)
    assert ref.shape == (300, 4) and (ref >= 0).all() and (ref <= 1).all()
    assert set(np.round(ref[:, -1] * 5 - 0.5, 9)) == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_from_simulation_reads_space_and_steps():
    sim = Heat2D(grid=4, n_steps=12)
    strata = Strata.from_simulation(sim, n_cells=4, n_time_bins=3)
    assert strata.space is sim.space and strata.n_steps == 12 and strata.n_strata == 12


def test_from_simulation_caps_time_bins_at_the_steps():
    """The default buffer config asks for 10 time bins; a 4-step simulation gets 4 of one step."""
    strata = Strata.from_simulation(Heat2D(grid=4, n_steps=4), n_cells=4, n_time_bins=10)
    assert strata.n_time_bins == 4
    np.testing.assert_allclose(strata.mass.sum(), 1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"space": [0, 1]}, TypeError, "expected a sampling.ParameterSpace, got list"),
        ({"n_time_bins": 11}, ValueError, r"n_time_bins \(11\) must be <= n_steps \(10\)"),
        ({"n_cells": 0}, ValueError, "n_cells must be an integer >= 1, got 0"),
    ],
    ids=["space", "bins", "cells"],
)
def test_construction_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        Strata(**{"space": SPACE, "n_steps": 10, **kwargs})


def test_energy_distance_separates_laws():
    # Two samples of 500 uniform points in the unit cube: over 200 seeds the statistic has
    # mean 1e-4 and standard deviation 1.2e-3 (measured), so 0.01 is 8 standard deviations.
    # Halving one coordinate of one sample gives about 0.12.
    rng = np.random.default_rng(0)
    x, y = rng.random((500, 3)), rng.random((500, 3))
    assert abs(unbiased_energy_distance(x, y)) < 0.01
    y[:, 0] *= 0.5
    assert unbiased_energy_distance(x, y) > 0.05
    with pytest.raises(ValueError, match=r"expected two samples of shapes"):
        unbiased_energy_distance(x, y[:, :2])


def test_chi_square_divergence_values():
    mass = np.array([0.5, 0.25, 0.25])
    assert chi_square_divergence([50, 25, 25], mass) == 0.0
    # All in the lightest stratum: (1 - q) / q = 3.
    assert chi_square_divergence([0, 0, 7], mass) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="with a positive sum"):
        chi_square_divergence([0, 0, 0], mass)


def test_buffer_divergence_prefers_the_whole_time_range():
    strata = Strata(SPACE, n_steps=10, n_cells=4, n_time_bins=5)
    ref = strata.reference(512, seed=1)
    params = SPACE.from_unit(np.random.default_rng(0).random((400, 3)))
    all_steps = np.tile(np.arange(10), 40)
    early = all_steps % 3  # steps 0, 1, 2 only: what a buffer holds early in an in-order stream
    balanced, skewed = (buffer_divergence(params, s, strata, ref) for s in (all_steps, early))
    assert balanced["energy_distance"] < skewed["energy_distance"]
    assert balanced["chi_square"] < skewed["chi_square"]
