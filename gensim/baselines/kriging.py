"""Kriging baseline: POD of the fields plus one Gaussian process per mode coefficient."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Kernel, Matern, WhiteKernel
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, check_X_y

from gensim.baselines.pod import PODRegressionMixin

__all__ = ["KrigingBaseline"]


class KrigingBaseline(PODRegressionMixin, RegressorMixin, BaseEstimator):
    """Gaussian-process regression of the POD coefficients of fields (Kriging with a reduced output).

    The fields are projected on their leading POD modes; each mode coefficient gets its own
    ``GaussianProcessRegressor`` with an anisotropic kernel, ``C * Matern(one length scale per
    input) + White``, whose hyperparameters maximize the marginal likelihood. Inputs are scaled
    to [0, 1] by the training range, so length scales are in units of that range.

    The likelihood of the small, rough modes has a poor local maximum: a white-noise fit that
    predicts zero. Successive modes vary on similar scales, so each mode is also fitted from the
    previous mode's optimum, and the start with the higher likelihood is kept. On heat2d (64x64,
    128 simulations, whole trajectories) this took the held-out error from 2.9e-3 to 2.5e-4.

    Parameters
    ----------
    n_components : int or float
        POD modes kept: an int count, or a float in (0, 1), the explained variance to reach.
    nu : float
        Matern smoothness (0.5, 1.5, 2.5, or ``np.inf`` for the squared-exponential kernel).
    length_scale_bounds : (float, float)
        Bounds of every length scale, in units of the training range of its input. The lower
        bound keeps the small, rough modes from collapsing onto a white-noise fit that predicts
        zero everywhere (on heat2d a bound of 0.01 instead of 0.05 tripled the held-out error).
    noise_level_bounds : (float, float)
        Bounds of the white-noise variance, relative to each mode's variance.
    n_restarts_optimizer : int
        Extra optimizer starts per mode, from random hyperparameters.
    start_from_previous_mode : bool
        Also fit each mode from the previous mode's hyperparameters and keep the better start.
    max_samples : int or None
        Most training rows given to the Gaussian processes (their cost grows as n^3); larger
        training sets are subsampled at random (the POD still uses every row). None: no limit.
    random_state : int, RandomState or None
        Seeds the subsampling and the optimizer restarts.

    Attributes
    ----------
    n_features_in_ : int
    x_offset_, x_scale_ : ndarray, shape (n_features,)
        Input scaling, ``(X - x_offset_) / x_scale_``.
    mean_ : ndarray, shape (D,)
        Mean training field.
    components_ : ndarray, shape (K, D)
        POD modes.
    explained_variance_ratio_ : ndarray, shape (K,)
    n_components_ : int
        K.
    gps_ : list of GaussianProcessRegressor
        One per mode; ``gps_[k].kernel_`` holds the fitted hyperparameters.
    n_samples_seen_ : int
        Training rows given to :meth:`fit`.
    n_samples_fit_ : int
        Rows the Gaussian processes were fitted on.
    subsampled_ : bool
        True when ``n_samples_fit_ < n_samples_seen_``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(0, 1, 12)[:, None]
    >>> Y = np.sin(3 * x) * np.ones((1, 5))  # 12 fields of 5 values
    >>> model = KrigingBaseline(n_components=1).fit(x, Y)
    >>> bool(np.abs(model.predict(x) - Y).max() < 1e-4)
    True
    """

    def __init__(self, n_components: int | float = 0.9999999, nu: float = 2.5,
                 length_scale_bounds: tuple[float, float] = (0.05, 1e5),
                 noise_level_bounds: tuple[float, float] = (1e-12, 1e-1), n_restarts_optimizer: int = 0,
                 start_from_previous_mode: bool = True, max_samples: int | None = 2000, random_state=0) -> None:
        self.n_components = n_components
        self.nu = nu
        self.length_scale_bounds = length_scale_bounds
        self.noise_level_bounds = noise_level_bounds
        self.n_restarts_optimizer = n_restarts_optimizer
        self.start_from_previous_mode = start_from_previous_mode
        self.max_samples = max_samples
        self.random_state = random_state

    def _kernel(self, n_features: int) -> Kernel:
        # The constant's upper bound is large: with near-infinite length scales a mode that is
        # linear in an input needs a large amplitude.
        return (ConstantKernel(1.0, (1e-3, 1e5))
                * Matern(np.ones(n_features), tuple(self.length_scale_bounds), nu=self.nu)
                + WhiteKernel(1e-8, tuple(self.noise_level_bounds)))

    def fit(self, X, Y) -> KrigingBaseline:
        """Fit the POD basis and one Gaussian process per mode.

        Parameters
        ----------
        X : array_like, shape (n, n_features)
            Inputs, e.g. the parameters of each simulation, or (parameters, time) per snapshot.
        Y : array_like, shape (n, D)
            Flattened fields (or whole trajectories), one row per input.

        Returns
        -------
        self
        """
        X, Y = check_X_y(X, Y, multi_output=True, y_numeric=True, dtype=(np.float64, np.float32))
        if Y.ndim == 1:
            Y = Y[:, None]
        if self.max_samples is not None and self.max_samples < 2:
            raise ValueError(f"max_samples: expected None or an int >= 2, got {self.max_samples}")
        rng = check_random_state(self.random_state)
        pod = self._fit_inputs_and_pod(X, Y)

        self.n_samples_seen_ = X.shape[0]
        rows = np.arange(X.shape[0])
        if self.max_samples is not None and X.shape[0] > self.max_samples:
            rows = np.sort(rng.choice(X.shape[0], self.max_samples, replace=False))
        self.n_samples_fit_ = len(rows)
        self.subsampled_ = self.n_samples_fit_ < self.n_samples_seen_
        Z = (X[rows] - self.x_offset_) / self.x_scale_
        coefficients = pod.transform(Y[rows])
        self.gps_ = []
        with warnings.catch_warnings():
            # Small modes routinely end at a bound (a very long length scale: the mode does not
            # depend on that input); the fitted kernels are kept in gps_ for inspection.
            warnings.simplefilter("ignore", ConvergenceWarning)
            for k in range(self.n_components_):
                starts = [self._kernel(X.shape[1])]
                if self.start_from_previous_mode and self.gps_:
                    starts.append(self.gps_[-1].kernel_)  # the optimizer starts from a kernel's values
                seed = rng.randint(2**31)
                fits = [GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed,
                                                 n_restarts_optimizer=self.n_restarts_optimizer)
                        .fit(Z, coefficients[:, k]) for kernel in starts]
                self.gps_.append(max(fits, key=lambda gp: gp.log_marginal_likelihood_value_))
        return self

    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self, "gps_")
        return self._unit_inputs(X)

    def predict_coefficients(self, X, return_std: bool = False):
        """Posterior mean (and std) of every mode coefficient.

        Parameters
        ----------
        X : array_like, shape (n, n_features)
        return_std : bool

        Returns
        -------
        mean : ndarray, shape (n, K)
        std : ndarray, shape (n, K)
            Only when ``return_std``.
        """
        Z = self._check_X(X)
        out = [gp.predict(Z, return_std=return_std) for gp in self.gps_]
        if not return_std:
            return np.column_stack(out)
        return np.column_stack([m for m, _ in out]), np.column_stack([s for _, s in out])

    def predict(self, X, return_std: bool = False):
        """Predict fields.

        Parameters
        ----------
        X : array_like, shape (n, n_features)
        return_std : bool
            Also return the pointwise predictive standard deviation (with the fitted white
            noise, as scikit-learn's). It treats the modes as independent and ignores the
            truncated modes, so it underestimates the error where the POD truncation dominates.

        Returns
        -------
        Y : ndarray, shape (n, D)
        std : ndarray, shape (n, D)
            Only when ``return_std``.
        """
        if not return_std:
            coefficients = self.predict_coefficients(X)  # checks that the model is fitted
            return self.mean_ + coefficients @ self.components_
        mean, std = self.predict_coefficients(X, return_std=True)
        return self.mean_ + mean @ self.components_, np.sqrt(std**2 @ self.components_**2)

    def sample(self, X, n_samples: int = 1, random_state=None) -> np.ndarray:
        """Draw fields from the posterior, jointly over the rows of ``X``.

        Parameters
        ----------
        X : array_like, shape (n, n_features)
        n_samples : int
        random_state : int, RandomState or None

        Returns
        -------
        ndarray, shape (n_samples, n, D)
        """
        Z = self._check_X(X)
        rng = check_random_state(random_state)
        # sample_y returns (n, n_samples) per mode; stack to (n_samples, n, K).
        coefficients = np.stack([gp.sample_y(Z, n_samples, random_state=rng.randint(2**31)) for gp in self.gps_],
                                axis=-1).transpose(1, 0, 2)
        return self.mean_ + coefficients @ self.components_
