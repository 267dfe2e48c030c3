"""Proper scores and calibration of ensembles: CRPS, energy score, interval coverage, rank histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scoringrules as sr
from scipy.stats import norm

from gensim.metrics import central_coverage, crps, energy_score, rank_histogram


def test_crps_equals_scoringrules_fair_estimator():
    # Ties included (rounded values): the sort-based sums must handle equal samples and observations.
    rng = np.random.default_rng(0)
    x, y = np.round(rng.normal(size=(37, 20)), 1), np.round(rng.normal(size=(9, 20)), 1)
    ref = sr.crps_ensemble(y, np.broadcast_to(x.T, (9, 20, 37)), m_axis=-1, estimator="fair").mean()
    assert crps(x, y) == pytest.approx(float(ref), rel=1e-12)


def test_energy_score_equals_scoringrules_fair_estimator():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 5)), rng.normal(size=(7, 5))
    ref = sr.es_ensemble(y, np.broadcast_to(x, (7, 16, 5)), estimator="fair").mean()
    assert energy_score(x, y) == pytest.approx(float(ref), rel=1e-12)


def test_crps_of_a_large_standard_normal_ensemble_matches_the_closed_form():
    # CRPS(N(0, 1), y) = y (2 Phi(y) - 1) + 2 phi(y) - 1 / sqrt(pi). The fair estimator is unbiased
    # for it; with 4000 samples its error at a fixed y is ~1/sqrt(4000) of E|X - y| ~ 1e-2, so 0.03.
    rng = np.random.default_rng(2)
    y = np.array([[-1.5, 0.0, 0.7, 2.0]])
    exact = float(np.mean(y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / math.sqrt(math.pi)))
    assert crps(rng.normal(size=(4000, 4)), y) == pytest.approx(exact, abs=0.03)


def test_coverage_is_nominal_for_a_calibrated_ensemble_and_low_for_an_under_dispersed_one():
    # 4000 independent pixels, each with its own ensemble of 64 samples and 5 observations of the
    # same law: the coverage estimate has std below sqrt(0.9 * 0.1 / 4000) ~ 0.005 per pixel
    # batch (observations of one pixel share an ensemble, which widens it; 0.02 is 4 of those).
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(64, 4000)), rng.normal(size=(5, 4000))
    for level in (0.5, 0.9):
        covered, nominal = central_coverage(x, y, level)
        assert abs(nominal - level) < 0.02 and covered == pytest.approx(nominal, abs=0.02)
    # Samples with 0.6 of the true spread: the 90% interval covers P(|Z| < 1.645 * 0.6) = 0.68.
    covered, _ = central_coverage(0.6 * x, y, 0.9)
    assert covered == pytest.approx(2 * norm.cdf(1.645 * 0.6) - 1, abs=0.03)
    with pytest.raises(ValueError, match="cannot resolve"):
        central_coverage(x[:3], y, 0.01)


def test_rank_histogram_is_flat_when_calibrated_and_u_shaped_when_under_dispersed():
    # Same setting: 20 000 ranks in 8 bins of ~2 500, each bin's relative count has std ~0.02
    # (more with shared ensembles); 0.1 leaves room for that.
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(63, 4000)), rng.normal(size=(5, 4000))
    flat = rank_histogram(x, y, n_bins=8)
    assert flat.shape == (8,) and np.abs(flat - 1).max() < 0.1
    u = rank_histogram(0.6 * x, y, n_bins=8)
    assert min(u[0], u[-1]) > 1.5 and u[3:5].max() < 0.9  # mass at the extremes, a hollow middle
    biased = rank_histogram(x - 1.0, y, n_bins=8)  # samples too low: observations rank high
    assert biased[-1] > 2 * biased[0]
    with pytest.raises(ValueError, match="n_bins"):
        rank_histogram(x, y, n_bins=65)
