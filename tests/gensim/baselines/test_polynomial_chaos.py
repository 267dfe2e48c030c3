"""PolynomialChaosBaseline: recovers polynomials, picks degrees by cross-validation, estimator contract."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from baseline_contract import BaselineContract

from gensim.baselines import PolynomialChaosBaseline
from gensim.baselines.polynomial_chaos import legendre_design, total_degree_indices


class TestPolynomialChaosContract(BaselineContract):
    @pytest.fixture
    def estimator(self):
        return PolynomialChaosBaseline(n_components=3, max_degree=5)


def _polynomial_fields(x: np.ndarray) -> np.ndarray:
    """Two polynomials of degree 3 and 2 of 2 inputs, each times a fixed mode: shape (n, 6)."""
    modes = np.array([[1.0, 0.0, -1.0, 2.0, 0.5, 0.0], [0.0, 1.0, 1.0, 0.0, -0.5, 3.0]])
    f = np.column_stack([1 + x[:, 0] ** 3 - 2 * x[:, 0] * x[:, 1], x[:, 1] ** 2 + x[:, 0]])
    return f @ modes


def test_recovers_a_known_polynomial():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 3.0, size=(60, 2))
    model = PolynomialChaosBaseline(max_degree=6).fit(x, _polynomial_fields(x))
    x_new = rng.uniform(-1.0, 3.0, size=(25, 2))
    # Exact up to round-off: the fields lie in the span of the degree-3 basis.
    np.testing.assert_allclose(model.predict(x_new), _polynomial_fields(x_new), atol=1e-9)
    # Both modes mix the cubic and the quadratic: cross-validation finds degree 3 and, the higher
    # degrees tying at round-off, keeps the lowest.
    assert model.degrees_.tolist() == [3, 3]


def test_noisy_data_get_a_lower_degree_than_the_largest():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, size=(40, 1))
    y = np.column_stack([np.sin(3 * x[:, 0]), np.cos(3 * x[:, 0])]) + rng.normal(scale=0.05, size=(40, 2))
    model = PolynomialChaosBaseline(max_degree=12, cv=5).fit(x, y)
    # 5% noise on a smooth curve: degrees past ~5 only fit the noise, and cross-validation sees it.
    assert model.degrees_.max() < 12
    assert model.cv_errors_.shape == (13, model.n_components_)


def test_only_tries_degrees_a_fold_can_determine():
    x = np.random.default_rng(2).uniform(size=(20, 3))
    model = PolynomialChaosBaseline(max_degree=6, cv=4).fit(x, np.column_stack([x.sum(1), x[:, 0] * x[:, 1]]))
    # Training folds hold 15 rows; degree 2 in 3 inputs has 10 terms, degree 3 has 20.
    assert model.cv_errors_.shape[0] == 3
    assert comb(3 + 2, 2) == 10 < 15 < comb(3 + 3, 3)


def test_legendre_basis_is_orthonormal_for_uniform_inputs():
    indices = total_degree_indices(2, 3)
    assert len(indices) == comb(2 + 3, 3)
    assert indices.sum(1).tolist() == sorted(indices.sum(1).tolist())
    # Gauss-Legendre quadrature of order 6 integrates products of degree <= 6 per input exactly.
    nodes, weights = np.polynomial.legendre.leggauss(6)
    z = np.array([[a, b] for a in nodes for b in nodes])
    w = np.array([wa * wb for wa in weights for wb in weights]) / 4.0  # uniform density on [-1, 1]^2
    design = legendre_design(z, indices)
    np.testing.assert_allclose(design.T @ (w[:, None] * design), np.eye(len(indices)), atol=1e-12)


def test_rejects_too_few_rows():
    with pytest.raises(ValueError, match="too few"):
        PolynomialChaosBaseline(cv=2).fit(np.arange(2.0)[:, None], np.ones((2, 3)) * np.arange(2.0)[:, None])
