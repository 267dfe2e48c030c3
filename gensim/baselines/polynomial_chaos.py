"""Polynomial-chaos baseline: least-squares Legendre expansions of the POD coefficients of fields."""

from __future__ import annotations

from math import comb

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted, check_X_y

from gensim.baselines.pod import PODRegressionMixin

__all__ = ["PolynomialChaosBaseline", "legendre_design", "total_degree_indices"]


def total_degree_indices(n_features: int, degree: int) -> np.ndarray:
    """Multi-indices of total degree at most ``degree``, sorted by total degree.

    Parameters
    ----------
    n_features : int
    degree : int

    Returns
    -------
    ndarray of int, shape (comb(n_features + degree, degree), n_features)
        Row ``a`` is the exponent of each input in the basis polynomial ``prod_j P_{a_j}(x_j)``.
        The indices of degree ``p`` are a prefix of those of any higher degree.
    """
    rows: list[tuple[int, ...]] = []
    for total in range(degree + 1):
        rows.extend(_compositions(total, n_features))
    return np.array(rows, dtype=int).reshape(-1, n_features)


def _compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    """Every tuple of ``parts`` non-negative ints summing to ``total``."""
    if parts == 1:
        return [(total,)]
    return [(first, *rest) for first in range(total, -1, -1) for rest in _compositions(total - first, parts - 1)]


def legendre_design(Z: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Orthonormal Legendre polynomials of the inputs.

    Parameters
    ----------
    Z : ndarray, shape (n, n_features)
        Inputs in [-1, 1].
    indices : ndarray of int, shape (n_terms, n_features)
        From :func:`total_degree_indices`.

    Returns
    -------
    ndarray, shape (n, n_terms)
        ``prod_j sqrt(2 a_j + 1) P_{a_j}(Z[:, j])``: orthonormal for inputs uniform on [-1, 1],
        which keeps the least-squares problem well conditioned.
    """
    degree = int(indices.max()) if indices.size else 0
    # P[k] for k = 0..degree by Bonnet's recursion, shape (degree + 1, n, n_features).
    P = np.empty((degree + 1, *Z.shape))
    P[0] = 1.0
    if degree >= 1:
        P[1] = Z
    for k in range(1, degree):
        P[k + 1] = ((2 * k + 1) * Z * P[k] - k * P[k - 1]) / (k + 1)
    P *= np.sqrt(2 * np.arange(degree + 1) + 1)[:, None, None]
    design = np.ones((Z.shape[0], len(indices)))
    for j in range(Z.shape[1]):
        design *= P[indices[:, j], :, j].T
    return design


class PolynomialChaosBaseline(PODRegressionMixin, RegressorMixin, BaseEstimator):
    """Polynomial chaos: the POD coefficients of the fields as Legendre expansions of the inputs.

    Inputs are mapped to [-1, 1] by the training range (the Legendre polynomials are the chaos of
    uniform inputs, as drawn by the space-filling designs). The coefficients of a total-degree
    basis are fitted by least squares; each mode gets the degree with the smallest K-fold
    cross-validated error, among the degrees whose basis is smaller than a training fold.

    Parameters
    ----------
    n_components : int or float
        POD modes kept: an int count, or a float in (0, 1), the explained variance to reach.
    max_degree : int
        Highest total degree tried.
    cv : int
        Folds of the cross-validation, >= 2.
    random_state : int, RandomState or None
        Shuffles the folds.

    Attributes
    ----------
    n_features_in_ : int
    x_offset_, x_scale_ : ndarray, shape (n_features,)
        Input map to [-1, 1]: ``2 (X - x_offset_) / x_scale_ - 1``.
    mean_ : ndarray, shape (D,)
    components_ : ndarray, shape (K, D)
    explained_variance_ratio_ : ndarray, shape (K,)
    n_components_ : int
    indices_ : ndarray of int, shape (n_terms, n_features)
        Basis of the highest degree kept by any mode.
    degrees_ : ndarray of int, shape (K,)
        Degree chosen for each mode.
    cv_errors_ : ndarray, shape (n_degrees_tried, K)
        Cross-validated mean squared error of each mode's coefficient, per degree 0, 1, ...
    coef_ : ndarray, shape (n_terms, K)
        Expansion coefficients (zero beyond each mode's degree).
    """

    def __init__(self, n_components: int | float = 0.9999999, max_degree: int = 6, cv: int = 5, random_state=0) -> None:
        self.n_components = n_components
        self.max_degree = max_degree
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, Y) -> PolynomialChaosBaseline:
        """Fit the POD basis, choose each mode's degree by cross-validation, and fit the expansions.

        Parameters
        ----------
        X : array_like, shape (n, n_features)
        Y : array_like, shape (n, D)

        Returns
        -------
        self
        """
        X, Y = check_X_y(X, Y, multi_output=True, y_numeric=True, dtype=(np.float64, np.float32))
        if Y.ndim == 1:
            Y = Y[:, None]
        if self.cv < 2 or self.cv > X.shape[0]:
            raise ValueError(f"cv: expected 2 <= cv <= n_samples ({X.shape[0]}), got {self.cv}")
        if self.max_degree < 0:
            raise ValueError(f"max_degree: expected an int >= 0, got {self.max_degree}")
        n, d = X.shape
        pod = self._fit_inputs_and_pod(X, Y)
        coefficients = pod.transform(Y)

        folds = list(KFold(self.cv, shuffle=True, random_state=self.random_state).split(X))
        smallest_fold = min(len(train) for train, _ in folds)
        # Degrees whose basis a training fold can determine (fewer terms than rows).
        degrees = [p for p in range(self.max_degree + 1) if comb(d + p, p) < smallest_fold]
        if not degrees:
            raise ValueError(
                f"a training fold holds {smallest_fold} rows, too few for even a constant; "
                "use more simulations or fewer cv folds"
            )
        all_indices = total_degree_indices(d, degrees[-1])
        design = legendre_design(2.0 * (X - self.x_offset_) / self.x_scale_ - 1.0, all_indices)
        self.cv_errors_ = np.empty((len(degrees), self.n_components_))
        for i, p in enumerate(degrees):
            m = comb(d + p, p)
            sq = np.zeros(self.n_components_)
            for train, test in folds:
                beta = np.linalg.lstsq(design[train, :m], coefficients[train], rcond=None)[0]
                sq += ((design[test, :m] @ beta - coefficients[test]) ** 2).sum(axis=0)
            self.cv_errors_[i] = sq / n
        # An exact polynomial ties at round-off with every higher degree: prefer the lowest.
        best = self.cv_errors_.min(axis=0)
        tol = 1e-9 * coefficients.var(axis=0).max()
        self.degrees_ = np.array(
            [
                degrees[int(np.argmax(self.cv_errors_[:, k] <= best[k] * (1 + 1e-6) + tol))]
                for k in range(self.n_components_)
            ]
        )
        m_max = comb(d + int(self.degrees_.max()), int(self.degrees_.max()))
        self.indices_ = all_indices[:m_max]
        self.coef_ = np.zeros((m_max, self.n_components_))
        for p in np.unique(self.degrees_):
            m, modes = comb(d + int(p), int(p)), self.degrees_ == p
            self.coef_[:m, modes] = np.linalg.lstsq(design[:, :m], coefficients[:, modes], rcond=None)[0]
        return self

    def predict(self, X) -> np.ndarray:
        """Predict fields.

        Parameters
        ----------
        X : array_like, shape (n, n_features)

        Returns
        -------
        ndarray, shape (n, D)
        """
        check_is_fitted(self, "coef_")
        # Legendre polynomials live on [-1, 1].
        design = legendre_design(2.0 * self._unit_inputs(X) - 1.0, self.indices_)
        return self.mean_ + design @ self.coef_ @ self.components_
