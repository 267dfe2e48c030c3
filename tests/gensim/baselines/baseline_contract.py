"""Contract every off-line field regressor (``gensim.baselines``) meets, as a test class to subclass.

Usage, in a ``test_<baseline>.py`` next to this file::

    from baseline_contract import BaselineContract

    class TestMyBaselineContract(BaselineContract):
        @pytest.fixture
        def estimator(self):
            return MyBaseline(small settings)

The data are smooth fields of 2 inputs, small enough for every test to fit in well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError


def smooth_fields(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, 2) in [0, 1]^2 and fields (n, 12): 3 smooth functions times 3 fixed random modes."""
    x = np.random.default_rng(seed).uniform(size=(n, 2))
    basis = np.random.default_rng(99).normal(size=(3, 12))
    f = np.column_stack([np.sin(2 * x[:, 0]) + x[:, 1], x[:, 0] * x[:, 1], np.cos(x[:, 1])])
    return x, 10.0 + f @ basis


class BaselineContract:
    """Shared tests; subclasses provide the ``estimator`` fixture (unfitted, small settings)."""

    @pytest.fixture
    def estimator(self):
        raise NotImplementedError("subclasses provide an unfitted estimator")

    @pytest.fixture
    def data(self):
        return smooth_fields(40, seed=0)

    def test_init_only_stores_and_clone_round_trips(self, estimator):
        params = estimator.get_params()
        twin = clone(estimator)
        assert twin is not estimator
        assert twin.get_params() == params
        assert not [k for k in vars(estimator) if k.endswith("_") and not k.startswith("_")]

    def test_set_params_changes_only_that_parameter(self, estimator):
        key = next(iter(estimator.get_params()))
        before = estimator.get_params()
        estimator.set_params(**{key: before[key]})
        assert estimator.get_params() == before

    def test_fit_returns_self_and_sets_learned_attributes(self, estimator, data):
        params = estimator.get_params()
        assert estimator.fit(*data) is estimator
        assert estimator.n_features_in_ == 2
        assert estimator.get_params() == params, "fit must not change the constructor parameters"

    def test_predict_before_fit_raises(self, estimator, data):
        with pytest.raises(NotFittedError):
            estimator.predict(data[0])

    def test_predict_shape_and_generalizes(self, estimator, data):
        estimator.fit(*data)
        x_new, y_new = smooth_fields(20, seed=1)
        pred = estimator.predict(x_new)
        assert pred.shape == y_new.shape
        # Smooth fields of 2 inputs from 40 points: any sound baseline beats 1% of their spread.
        assert np.abs(pred - y_new).max() < 0.01 * np.ptp(y_new)

    def test_rejects_wrong_number_of_features(self, estimator, data):
        estimator.fit(*data)
        with pytest.raises(ValueError, match="features"):
            estimator.predict(np.zeros((3, 5)))

    def test_is_deterministic_given_its_seed(self, estimator, data):
        x_new = smooth_fields(5, seed=2)[0]
        np.testing.assert_array_equal(
            clone(estimator).fit(*data).predict(x_new), clone(estimator).fit(*data).predict(x_new)
        )
