"""Proper orthogonal decomposition (PCA) of flattened fields, shared by the off-line baselines."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = ["POD", "PODRegressionMixin", "fit_pod"]

# Values per float64 working block (64 MiB): the data are reduced block by block, never copied whole.
_BLOCK_VALUES = 8 * 2**20


@dataclass
class POD:
    """A truncated POD basis: ``Y ~ mean + coefficients @ components``.

    Attributes
    ----------
    mean : ndarray, shape (D,)
        Mean field of the training rows.
    components : ndarray, shape (K, D)
        Orthonormal modes, by decreasing energy.
    singular_values : ndarray, shape (K,)
    explained_variance_ratio : ndarray, shape (K,)
        Share of the centered energy carried by each kept mode.
    """

    mean: np.ndarray
    components: np.ndarray
    singular_values: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, Y: np.ndarray) -> np.ndarray:
        """Mode coefficients of fields. Shape (n, D) -> (n, K), float64."""
        Y = np.asarray(Y)
        out = np.empty((Y.shape[0], self.components.shape[0]))
        for rows in _blocks(Y.shape[0], Y.shape[1]):
            out[rows] = (Y[rows].astype(np.float64) - self.mean) @ self.components.T
        return out

    def inverse_transform(self, coefficients: np.ndarray) -> np.ndarray:
        """Fields from mode coefficients. Shape (n, K) -> (n, D), float64."""
        return self.mean + coefficients @ self.components


def fit_pod(Y: np.ndarray, n_components: int | float) -> POD:
    """Fit a POD basis to rows of flattened fields.

    Parameters
    ----------
    Y : array_like, shape (n, D)
        One flattened field (or trajectory) per row; any float dtype, reduced in float64.
    n_components : int or float
        An int ``K >= 1`` keeps ``min(K, rank)`` modes; a float in (0, 1) keeps the fewest modes
        whose cumulated explained variance reaches it.

    Returns
    -------
    POD

    Notes
    -----
    The modes come from the eigenvectors of the smaller of the two Gram matrices, ``n x n``
    (few long rows: whole trajectories, 128 x 409,600 values at 64x64 x 100 steps) or ``D x D``
    (many snapshots), accumulated over blocks so that no float64 copy of ``Y`` is made. Energies
    below 1e-13 of the largest are round-off and are dropped.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] < 2:
        raise ValueError(f"expected fields of shape (n, D) with n >= 2 rows, got shape {Y.shape}")
    n, dim = Y.shape
    mean = np.zeros(dim)
    for cols in _blocks(dim, n):
        mean[cols] = Y[:, cols].mean(axis=0, dtype=np.float64)
    by_rows = n < dim
    gram = np.zeros((n, n) if by_rows else (dim, dim))
    for block in _centered_blocks(Y, mean, by_rows):
        gram += block @ block.T if by_rows else block.T @ block
    eigval, eigvec = np.linalg.eigh(gram)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    energy = np.clip(eigval, 0.0, None)
    if not energy[0] > 0:
        raise ValueError("all training fields are equal: there is no mode to fit; use more varied simulations")
    ratio = energy / energy.sum()
    rank = int(np.sum(energy > energy[0] * 1e-13))
    k = _n_kept(n_components, ratio[:rank])
    s = np.sqrt(energy[:k])
    if by_rows:
        # Right singular vectors from the left ones: V = Yc^T U / s, a block of columns at a time.
        components = np.empty((k, dim))
        start = 0
        for block in _centered_blocks(Y, mean, by_rows):
            components[:, start : start + block.shape[1]] = (eigvec[:, :k].T @ block) / s[:, None]
            start += block.shape[1]
    else:
        components = np.ascontiguousarray(eigvec[:, :k].T)
    return POD(mean, components, s, ratio[:k])


class PODRegressionMixin:
    """What the POD baselines share: inputs scaled by their training range, fields reduced by a POD.

    The estimator has an ``n_components`` parameter (see :func:`fit_pod`); :meth:`_fit_inputs_and_pod`
    sets ``n_features_in_``, ``x_offset_``, ``x_scale_``, ``mean_``, ``components_``,
    ``explained_variance_ratio_`` and ``n_components_``.
    """

    def _fit_inputs_and_pod(self, X: np.ndarray, Y: np.ndarray) -> POD:
        """Record the input range of ``X`` (n, n_features) and fit the POD of ``Y`` (n, D)."""
        self.n_features_in_ = X.shape[1]
        self.x_offset_ = X.min(axis=0)
        span = X.max(axis=0) - self.x_offset_
        self.x_scale_ = np.where(span > 0, span, 1.0)  # a constant input maps to 0
        pod = fit_pod(Y, self.n_components)
        self.mean_, self.components_ = pod.mean, pod.components
        self.explained_variance_ratio_ = pod.explained_variance_ratio
        self.n_components_ = len(pod.singular_values)
        return pod

    def _unit_inputs(self, X) -> np.ndarray:
        """Inputs (n, n_features) of a fitted estimator mapped by the training range to [0, 1]."""
        check_is_fitted(self, "components_")
        X = check_array(X, dtype=(np.float64, np.float32))
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected X with {self.n_features_in_} features (columns) as in fit, got {X.shape[1]}")
        return (X - self.x_offset_) / self.x_scale_


def _blocks(length: int, other: int) -> list[slice]:
    """Slices of ``range(length)`` such that a block times ``other`` holds about _BLOCK_VALUES values."""
    step = max(1, _BLOCK_VALUES // max(other, 1))
    return [slice(i, min(i + step, length)) for i in range(0, length, step)]


def _centered_blocks(Y: np.ndarray, mean: np.ndarray, by_columns: bool):
    """``Y - mean`` in float64, by blocks of columns (all rows) or of rows (all columns)."""
    n, dim = Y.shape
    if by_columns:
        for cols in _blocks(dim, n):
            yield Y[:, cols].astype(np.float64) - mean[cols]
    else:
        for rows in _blocks(n, dim):
            yield Y[rows].astype(np.float64) - mean


def _n_kept(n_components: int | float, ratio: np.ndarray) -> int:
    if isinstance(n_components, Integral) and not isinstance(n_components, bool):
        if n_components < 1:
            raise ValueError(f"n_components: expected an int >= 1 or a float in (0, 1), got {n_components}")
        return int(min(n_components, len(ratio)))
    if isinstance(n_components, Real) and 0 < n_components < 1:
        return int(min(np.searchsorted(np.cumsum(ratio), n_components) + 1, len(ratio)))
    raise ValueError(f"n_components: expected an int >= 1 or a float in (0, 1), got {n_components!r}")
