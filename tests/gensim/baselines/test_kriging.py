"""KrigingBaseline: interpolation, a 1-D analytic case, the estimator contract, subsampling, sampling,
collapsed-mode restarts, the hyperparameter subsample and the mode cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from baseline_contract import BaselineContract, smooth_fields
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.gaussian_process import GaussianProcessRegressor

from gensim.baselines import KrigingBaseline, kriging


def make_kriging(**kwargs) -> KrigingBaseline:
    """A Kriging baseline with these tests' defaults for the values only the configs set."""
    return KrigingBaseline(
        **{"n_components": 0.9999999, "max_components": None, "hyperparameter_samples": None, "max_samples": 2000}
        | kwargs
    )


class TestKrigingContract(BaselineContract):
    @pytest.fixture
    def estimator(self):
        return make_kriging(n_components=3, random_state=0)


def test_interpolates_noiseless_training_points():
    x, y = smooth_fields(30, seed=3)
    model = make_kriging(n_components=3).fit(x, y)
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
    model = make_kriging(n_components=1).fit(x, y)
    x_new = np.linspace(0.1, 1.9, 7)[:, None]
    pred, std = model.predict(x_new, return_std=True)

    # Closed form on the scaled input z = x / 2 and the standardized coefficient (normalize_y).
    gp, phi = model.gps_[0], model.components_[0]
    a = (y - model.mean_) @ phi
    mu, sd = a.mean(), a.std()
    z, z_new = x / 2.0, x_new / 2.0
    kernel = gp.kernel_
    K = kernel(z)  # includes the white noise on the diagonal
    k_star = kernel.k1(z_new, z)  # signal part only between test and training points
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
    assert make_kriging(n_components=0.5).fit(x, y).n_components_ == 1
    model = make_kriging(n_components=0.999999999).fit(x, y)
    assert model.n_components_ == 3  # the fields span 3 modes exactly
    assert model.explained_variance_ratio_.sum() > 0.999999999


def test_subsamples_large_training_sets_and_says_so():
    x, y = smooth_fields(60, seed=5)
    model = make_kriging(n_components=2, max_samples=25, random_state=1).fit(x, y)
    assert (model.n_samples_seen_, model.n_samples_fit_, model.subsampled_) == (60, 25, True)
    assert model.gps_[0].X_train_.shape == (25, 2)
    full = make_kriging(n_components=2, max_samples=None).fit(x, y)
    assert (full.n_samples_fit_, full.subsampled_) == (60, False)
    with pytest.raises(ValueError, match="max_samples"):
        make_kriging(max_samples=1).fit(x, y)


def test_samples_scatter_around_the_mean_with_the_predicted_std():
    x, y = smooth_fields(12, seed=6)
    model = make_kriging(n_components=3).fit(x, y)
    x_new = smooth_fields(4, seed=7)[0]
    draws = model.sample(x_new, n_samples=4000, random_state=0)
    mean, std = model.predict(x_new, return_std=True)
    assert draws.shape == (4000, 4, 12)
    # 4000 draws: the sample mean is within 5 standard errors (std / sqrt(4000)) of the posterior
    # mean, and the sample std within 10% of the predicted one (its relative standard error is 1.1%).
    assert np.all(np.abs(draws.mean(0) - mean) <= 5 * std / np.sqrt(4000) + 1e-9)
    np.testing.assert_allclose(draws.std(0), std, rtol=0.1, atol=1e-9)
    np.testing.assert_array_equal(draws, model.sample(x_new, n_samples=4000, random_state=0))


# --- collapsed modes, the hyperparameter subsample, the mode cap --------------------------------


def noisy_mode(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, callable]:
    """Inputs (n, 2), fields (n, 3) of one smooth mode plus white noise of std ``noise``, and the
    noise-free field function."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 2))
    basis = np.array([1.0, -2.0, 0.5])

    def field(x):
        return (np.sin(3 * x[:, 0]) + x[:, 1])[:, None] * basis

    return x, field(x) + noise * rng.normal(size=(n, 1)) * basis, field


def test_collapsed_mode_is_detected_and_restarting_improves_the_likelihood():
    # A smooth mode with noise of 30% of its std: from the usual start (almost no noise) the
    # optimizer fits the noise with the shortest length scale allowed, and the likelihood is
    # below that of a plane. Measured: log-likelihood -73.2 -> -55.7 after the restarts, error of
    # the noise-free field 0.59 -> 0.17 (RMS over 500 new points).
    x, Y, field = noisy_mode(60, 0.3, seed=0)
    x_new = np.random.default_rng(1).uniform(size=(500, 2))
    stuck = make_kriging(n_components=1, restart_length_scales=()).fit(x, Y)
    assert stuck.restarted_modes_ == [] and stuck.collapsed_modes_ == [0]
    assert np.isclose(stuck.gps_[0].kernel_.k1.k2.length_scale.min(), 0.05)  # at the lower bound
    assert stuck.gps_[0].log_marginal_likelihood_value_ < kriging.linear_trend_log_likelihood(
        stuck.gps_[0].X_train_, stuck.gps_[0].y_train_
    )  # worse than a plane
    restarted = make_kriging(n_components=1).fit(x, Y)
    assert restarted.restarted_modes_ == [0] and restarted.collapsed_modes_ == []
    gain = restarted.gps_[0].log_marginal_likelihood_value_ - stuck.gps_[0].log_marginal_likelihood_value_
    assert gain > 10.0
    rmse = [np.sqrt(np.mean((m.predict(x_new) - field(x_new)) ** 2)) for m in (stuck, restarted)]
    assert rmse[1] < 0.5 * rmse[0]


def test_a_rough_mode_at_the_bound_with_a_likelihood_gain_is_not_collapsed():
    # sin(25 x) wants a length scale below the bound of 1, but explains the data far better than
    # a plane (measured: log-likelihood 184 against -112): restarted, as every mode at the bound,
    # but a genuine fit there, not a collapse. Smooth noiseless modes are left alone.
    x = np.linspace(0, 1, 80)[:, None]
    model = make_kriging(n_components=1, length_scale_bounds=(1.0, 1e5)).fit(x, np.sin(25 * x) * [1.0, 2.0])
    assert np.isclose(model.gps_[0].kernel_.k1.k2.length_scale, 1.0)
    assert model.restarted_modes_ == [0] and model.collapsed_modes_ == []
    smooth = make_kriging(n_components=3).fit(*smooth_fields(30, seed=3))
    assert smooth.restarted_modes_ == [] and smooth.collapsed_modes_ == []
    # Near the bound, not only at it: under a bound of 0.3 the fit stops at 0.43 (measured), so a
    # factor of 2 restarts it and a factor of 1.01 does not. A factor below 1 is refused.
    for factor, restarted in ((2.0, [0]), (1.01, [])):
        near = make_kriging(n_components=1, length_scale_bounds=(0.3, 1e5), restart_near_bound=factor)
        assert near.fit(x, np.sin(25 * x) * [1.0, 2.0]).restarted_modes_ == restarted
        assert 0.303 < near.gps_[0].kernel_.k1.k2.length_scale < 0.6
    with pytest.raises(ValueError, match="restart_near_bound"):
        make_kriging(restart_near_bound=0.5).fit(x, np.sin(25 * x) * [1.0, 2.0])


class RecordingGP(GaussianProcessRegressor):
    """A GaussianProcessRegressor that records the rows of every successful fit and whether it
    optimized (a fit that raised, e.g. a jitter too small, is not counted)."""

    fits: list[tuple[int, bool]] = []

    def fit(self, X, y):
        result = super().fit(X, y)
        RecordingGP.fits.append((len(X), self.optimizer is not None))
        return result


@pytest.mark.parametrize("n", [60, 240])
def test_hyperparameters_are_optimized_on_a_fixed_subsample(monkeypatch, n):
    # Above hyperparameter_samples rows, every optimizing fit (hundreds of O(m^3) likelihood
    # evaluations) sees m = 30 rows whatever n; the n rows enter once per mode, in one O(n^3)
    # factorization. So the optimizer's cost does not grow with n: counted, not timed.
    monkeypatch.setattr(kriging, "GaussianProcessRegressor", RecordingGP)
    RecordingGP.fits = []
    x, y = smooth_fields(n, seed=8)
    model = make_kriging(n_components=3, hyperparameter_samples=30, max_samples=None).fit(x, y)
    assert (model.n_samples_seen_, model.n_samples_fit_, model.n_samples_hyper_) == (n, n, 30)
    assert {rows for rows, optimized in RecordingGP.fits if optimized} == {30}
    assert [rows for rows, optimized in RecordingGP.fits if not optimized] == [n] * model.n_components_
    assert all(gp.X_train_.shape == (n, 2) for gp in model.gps_)  # predictions use every row
    # Smooth noiseless modes: the subsample's kernel may need a jitter on every row (it is kept).
    assert all(jitter in kriging._JITTERS for jitter in model.jitter_)
    np.testing.assert_allclose(model.predict(x), y, atol=1e-3 * np.ptp(y))


def test_no_hyperparameter_subsample_below_the_threshold(monkeypatch):
    monkeypatch.setattr(kriging, "GaussianProcessRegressor", RecordingGP)
    RecordingGP.fits = []
    x, y = smooth_fields(30, seed=9)
    model = make_kriging(n_components=2, hyperparameter_samples=30).fit(x, y)
    assert model.n_samples_hyper_ == model.n_samples_fit_ == 30
    assert all(optimized and rows == 30 for rows, optimized in RecordingGP.fits)
    with pytest.raises(ValueError, match="hyperparameter_samples"):
        make_kriging(hyperparameter_samples=1).fit(x, y)


def test_max_components_caps_the_modes():
    x, y = smooth_fields(30, seed=10)
    model = make_kriging(n_components=0.999999999, max_components=2).fit(x, y)
    assert model.n_components_ == 2 == len(model.gps_) == model.components_.shape[0]
    assert model.explained_variance_ratio_.shape == (2,)
    assert model.predict(x).shape == y.shape
    with pytest.raises(ValueError, match="max_components"):
        make_kriging(max_components=0).fit(x, y)


def test_the_default_config_sets_every_tunable():
    # conf/baselines/default.yaml is the one source of truth of the report's Kriging: every
    # tunable of the estimator is set there, none left to the constructor's defaults.
    config = OmegaConf.load(Path(__file__).resolve().parents[3] / "conf" / "baselines" / "default.yaml")
    model = instantiate(config.kriging.estimator)
    assert isinstance(model, KrigingBaseline)
    assert set(model.get_params()) == set(config.kriging.estimator) - {"_target_"}
