"""ParameterSpace: mapping to and from the unit cube, validation, constructor errors."""

import json
import warnings

import numpy as np
import pytest

from sampling import ParameterSpace


@pytest.fixture
def space():
    return ParameterSpace(["T", "D"], [100.0, 1e-4], [500.0, 1e-1], log=[False, True])


def test_dim_and_defaults():
    space = ParameterSpace(["a", "b", "c"], [0, 0, 0], [1, 2, 3])
    assert space.dim == 3
    assert space.log.tolist() == [False, False, False]


def test_log_mapping_endpoints_and_midpoint(space):
    x = space.from_unit([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    np.testing.assert_allclose(x, [[100.0, 1e-4], [300.0, 10**-2.5], [500.0, 1e-1]], rtol=1e-12)


def test_log_mapping_round_trip(space):
    u = np.random.default_rng(0).random((50, 2))
    np.testing.assert_allclose(space.to_unit(space.from_unit(u)), u, rtol=0, atol=1e-12)
    x = np.column_stack([np.linspace(100, 500, 7), np.logspace(-4, -1, 7)])
    np.testing.assert_allclose(space.from_unit(space.to_unit(x)), x, rtol=1e-12)


def test_from_unit_stays_inside_bounds(space):
    u = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert space.contains(space.from_unit(u)).all()


def test_large_linear_values_do_not_overflow():
    # Regression: 10**x used to be evaluated on linear columns too, overflowing for x > 308.
    space = ParameterSpace(["T", "D"], [100.0, 1e-3], [500.0, 1e-1], log=[False, True])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = space.from_unit([[1.0, 1.0]])
    np.testing.assert_allclose(x, [[500.0, 1e-1]])


def test_linear_space_may_include_negative_values():
    space = ParameterSpace(["x"], [-2.0], [2.0])
    np.testing.assert_allclose(space.from_unit([[0.25]]), [[-1.0]])
    np.testing.assert_allclose(space.to_unit([[-1.0]]), [[0.25]])


def test_contains(space):
    x = [[300.0, 1e-2], [600.0, 1e-2], [300.0, 1.0], [np.nan, 1e-2]]
    assert space.contains(x).tolist() == [True, False, False, False]


def test_validate_returns_float_array(space):
    x = space.validate([[300, 0.01]])
    assert x.dtype == np.float64 and x.shape == (1, 2)


@pytest.mark.parametrize(
    "point, message",
    [
        ([[600.0, 1e-2]], r"'T' of point 0 is 600.0.*\[100.0, 500.0\]"),
        ([[300.0, 1.0]], r"'D' of point 0 is 1.0.*\[0.0001, 0.1\]"),
        ([[300.0, np.nan]], r"'D' of point 0 is nan.*finite"),
    ],
)
def test_validate_names_parameter_and_bounds(space, point, message):
    with pytest.raises(ValueError, match=message):
        space.validate(point)


def test_validate_wrong_shape(space):
    with pytest.raises(ValueError, match=r"shape \(n, 2\).*got \(1, 3\)"):
        space.validate([[1.0, 2.0, 3.0]])


@pytest.mark.parametrize(
    "args, error, message",
    [
        (([], [], []), ValueError, "at least one parameter"),
        ((["a", "a"], [0, 0], [1, 1]), ValueError, "unique"),
        (("ab", [0, 0], [1, 1]), TypeError, "sequence of parameter names"),
        ((["a", "b"], [0], [1, 1]), ValueError, "expected 2 lower values"),
        ((["a", "b"], [0, 0], [1, 1], [True]), ValueError, "expected 2 log values"),
        ((["a"], [1], [1]), ValueError, r"'a': expected lower < upper, got \[1.0, 1.0\]"),
        ((["a"], [0], [np.inf]), ValueError, "finite"),
        ((["a", "D"], [0, 0], [1, 1], [False, True]), ValueError, "'D' is on a log scale.*> 0"),
    ],
)
def test_bad_constructor_arguments(args, error, message):
    with pytest.raises(error, match=message):
        ParameterSpace(*args)


def test_state_dict_is_json_and_rebuilds_the_space(space):
    state = json.loads(json.dumps(space.state_dict()))
    rebuilt = ParameterSpace(**state)
    assert rebuilt.state_dict() == space.state_dict()
    np.testing.assert_array_equal(rebuilt.from_unit([[0.3, 0.7]]), space.from_unit([[0.3, 0.7]]))
