"""KrigingBaseline: interpolation, a 1-D analytic case, the estimator contract, subsampling, sampling."""

from __future__ import annotations

import numpy as np
import pytest
from baseline_contract import BaselineContract, smooth_fields

from gensim.baselines import KrigingBaseline


class TestKrigingContract(BaselineContract):
    @pytest.fixture
    def estimator(self):
        return KrigingBaseline(n_components=3, random_state=0)


def test_interpolates_noiseless_training_points():
    x, y = smooth_fields(30, seed=3)
    model = KrigingBaseline(n_components=3).fit(x, y)
    pred, std = model.predict(x, return_std=True)
    # Noise-free data: the fitted white noise goes to its 1e-12 floor, so the posterior mean goes
    # through the data up to the conditioning of the kernel matrix.
    np.testing.assert_allclose(pred, y, atol=1e-5 * np.ptp(y))
    assert std.max() < 1e-3 * np.ptp(y)


def test_matches_the_kriging_equations_in_1d():
    """Posterior mean and std equal the closed-form simple-Kriging formulas with the fitted kernel."""
    x = np.linspace(0.0, 2.0, 9)[:, None]
    shape = np.array([1.0, -2.0, 0.5])
    y = np.sin(2.0 * x) * shape  # rank one: a single POD mode
    model = KrigingBaseline(n_components=1).fit(x, y)
    x_new = np.linspace(0.1, 1.9, 7)[:, None]
    pred, std = model.predict(x_new, return_std=True)

    # Closed form on the scaled input z = x / 2 and the standardized coefficient (normalize_y).
    gp, phi = model.gps_[0], model.components_[0]
    a = (y - model.mean_) @ phi
    mu, sd = a.mean(), a.std()
    z, z_new = x / 2.0, x_new / 2.0
    kernel = gp.kernel_
    K = kernel(z)                       # includes the white noise on the diagonal
    k_star = kernel.k1(z_new, z)        # signal part only between test and training points
    w = np.linalg.solve(K, (a - mu) / sd)
    mean_a = mu + sd * k_star @ w
    var_a = sd**2 * (kernel.diag(z_new) - np.einsum("ij,ji->i", k_star, np.linalg.solve(K, k_star.T)))
    np.testing.assert_allclose(pred, model.mean_ + mean_a[:, None] * phi, rtol=1e-7, atol=1e-9)
    # sklearn includes the fitted white noise in the predictive variance. The variance is the
    # difference of two terms about 1e10 times larger (the fitted prior variance is ~1e5), so
    # Cholesky (sklearn) and LU (here) agree on the std to a few 1e-3 only.
    np.testing.assert_allclose(std, np.sqrt(np.clip(var_a, 0, None))[:, None] * np.abs(phi), rtol=1e-2)
    # And it is close to the function itself: 9 points over 0.64 period of a sine of amplitude up
    # to 2 (measured: 6.5e-3 at worst, next to the end of the interval).
    np.testing.assert_allclose(pred, np.sin(2.0 * x_new) * shape, atol=1e-2)
    # The 95% band covers the truth (the posterior std is a sensible error bar here).
    assert np.all(np.abs(pred - np.sin(2.0 * x_new) * shape) <= 2.0 * std + 1e-9)


def test_n_components_by_explained_variance():
    x, y = smooth_fields(30, seed=4)
    assert KrigingBaseline(n_components=0.5).fit(x, y).n_components_ == 1
    model = KrigingBaseline(n_components=0.999999999).fit(x, y)
    assert model.n_components_ == 3  # the fields span 3 modes exactly
    assert model.explained_variance_ratio_.sum() > 0.999999999


def test_subsamples_large_training_sets_and_says_so():
    x, y = smooth_fields(60, seed=5)
    model = KrigingBaseline(n_components=2, max_samples=25, random_state=1).fit(x, y)
    assert (model.n_samples_seen_, model.n_samples_fit_, model.subsampled_) == (60, 25, True)
    assert model.gps_[0].X_train_.shape == (25, 2)
    full = KrigingBaseline(n_components=2, max_samples=None).fit(x, y)
    assert (full.n_samples_fit_, full.subsampled_) == (60, False)
    with pytest.raises(ValueError, match="max_samples"):
        KrigingBaseline(max_samples=1).fit(x, y)


def test_samples_scatter_around_the_mean_with_the_predicted_std():
    x, y = smooth_fields(12, seed=6)
    model = KrigingBaseline(n_components=3).fit(x, y)
    x_new = smooth_fields(4, seed=7)[0]
    draws = model.sample(x_new, n_samples=4000, random_state=0)
    mean, std = model.predict(x_new, return_std=True)
    assert draws.shape == (4000, 4, 12)
    # 4000 draws: the sample mean is within 5 standard errors (std / sqrt(4000)) of the posterior
    # mean, and the sample std within 10% of the predicted one (its relative standard error is 1.1%).
    assert np.all(np.abs(draws.mean(0) - mean) <= 5 * std / np.sqrt(4000) + 1e-9)
    np.testing.assert_allclose(draws.std(0), std, rtol=0.1, atol=1e-9)
    np.testing.assert_array_equal(draws, model.sample(x_new, n_samples=4000, random_state=0))
