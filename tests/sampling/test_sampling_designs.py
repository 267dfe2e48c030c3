"""Samplers: one contract class subclassed per implementation, then properties of each design."""

import json

import numpy as np
import pytest
from scipy.stats import qmc

from sampling import Halton, LatinHypercube, ParameterSpace, Sampler, Sobol, Uniform


@pytest.fixture
def space():
    """Three parameters, one on a log scale, with linear values past 10**308 overflow range."""
    return ParameterSpace(["T", "D", "x"], [100.0, 1e-4, -1.0], [500.0, 1e-1, 1.0], log=[False, True, False])


def json_round_trip(state):
    return json.loads(json.dumps(state, allow_nan=False))


class SamplerContract:
    """What every :class:`Sampler` guarantees. Subclasses define ``make(space, seed)``."""

    def make(self, space, seed):
        raise NotImplementedError

    def test_is_a_sampler(self, space):
        assert isinstance(self.make(space, 0), Sampler)

    def test_points_inside_bounds_with_right_shape(self, space):
        x = self.make(space, 0).sample(64)
        assert x.shape == (64, space.dim)
        assert x.dtype == np.float64
        assert space.contains(x).all()

    def test_log_parameter_is_spread_on_log_scale(self, space):
        # 64 points spread evenly in log10(D) put about half below the geometric midpoint 10**-2.5;
        # spread linearly they would put about 3%.
        d = self.make(space, 0).sample(64)[:, 1]
        assert 0.3 < np.mean(d < 10**-2.5) < 0.7

    def test_zero_points(self, space):
        assert self.make(space, 0).sample(0).shape == (0, space.dim)

    def test_numpy_int_accepted(self, space):
        assert self.make(space, 0).sample(np.int64(4)).shape == (4, space.dim)

    def test_same_seed_same_points(self, space):
        np.testing.assert_array_equal(self.make(space, 7).sample(16), self.make(space, 7).sample(16))

    def test_different_seeds_differ(self, space):
        assert not np.allclose(self.make(space, 7).sample(16), self.make(space, 8).sample(16))

    def test_seed_none_draws_a_stored_seed(self, space):
        a, b = self.make(space, None), self.make(space, None)
        assert isinstance(a.seed, int) and a.seed >= 0
        assert a.seed != b.seed
        np.testing.assert_array_equal(a.sample(8), self.make(space, a.seed).sample(8))

    def test_successive_calls_draw_new_points(self, space):
        sampler = self.make(space, 0)
        first, second = sampler.sample(8), sampler.sample(8)
        assert not np.any(np.all(np.isclose(first[:, None], second[None]), axis=-1))

    def test_reset_restarts_the_sequence(self, space):
        sampler = self.make(space, 3)
        first = sampler.sample(4)
        sampler.sample(8)
        sampler.reset()
        np.testing.assert_array_equal(sampler.sample(4), first)

    @pytest.mark.parametrize("seed", [5, None])
    def test_state_round_trip_through_json_continues_the_sequence(self, space, seed):
        original = self.make(space, seed)
        original.sample(4)
        state = json_round_trip(original.state_dict())
        restored = self.make(space, 123)
        restored.load_state_dict(state)
        assert restored.seed == original.seed
        np.testing.assert_array_equal(restored.sample(4), original.sample(4))
        np.testing.assert_array_equal(restored.sample(3), original.sample(3))

    def test_state_of_a_sampler_that_drew_nothing_restores(self, space):
        # A study checkpointed before its first training simulation (scipy's Sobol
        # fast_forward(0) raised an OverflowError).
        restored = self.make(space, 9)
        restored.load_state_dict(json_round_trip(self.make(space, 7).state_dict()))
        np.testing.assert_array_equal(restored.sample(4), self.make(space, 7).sample(4))

    def test_state_dict_is_plain_data(self, space):
        sampler = self.make(space, 0)
        sampler.sample(2)
        state = sampler.state_dict()
        assert json_round_trip(state) == state
        assert state["class"] == type(sampler).__name__
        assert state["space"] == space.state_dict()

    def test_state_of_another_class_rejected(self, space):
        sampler = self.make(space, 0)
        other = (Uniform if not isinstance(sampler, Uniform) else Sobol)(space, seed=0)
        name = type(other).__name__
        with pytest.raises(ValueError, match=f"state dict of a {type(sampler).__name__}.*{name}"):
            sampler.load_state_dict(other.state_dict())

    def test_state_of_another_space_rejected(self, space):
        wider = ParameterSpace(space.names, space.lower, space.upper + 1.0, log=space.log)
        state = self.make(wider, 0).state_dict()
        with pytest.raises(ValueError, match="another parameter space"):
            self.make(space, 0).load_state_dict(state)

    def test_not_a_state_dict_rejected(self, space):
        with pytest.raises(ValueError, match="state_dict"):
            self.make(space, 0).load_state_dict([1, 2])

    def test_negative_n_rejected(self, space):
        with pytest.raises(ValueError, match="n >= 0, got n=-1"):
            self.make(space, 0).sample(-1)

    @pytest.mark.parametrize("n", [2.0, "4", True, None])
    def test_non_int_n_rejected(self, space, n):
        with pytest.raises(TypeError, match="expected an int number of points"):
            self.make(space, 0).sample(n)

    @pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), ("0", TypeError)])
    def test_bad_seed_rejected(self, space, seed, error):
        with pytest.raises(error, match="seed"):
            self.make(space, seed)

    def test_space_must_be_a_parameter_space(self):
        with pytest.raises(TypeError, match="ParameterSpace"):
            self.make([[0.0, 1.0]], 0)


class TestSobol(SamplerContract):
    def make(self, space, seed):
        return Sobol(space, seed=seed)


class TestSobolUnscrambled(SamplerContract):
    """Without scrambling the points do not depend on the seed: only the seed contract changes."""

    def make(self, space, seed):
        return Sobol(space, seed=seed, scramble=False)

    def test_different_seeds_differ(self, space):
        np.testing.assert_array_equal(self.make(space, 7).sample(16), self.make(space, 8).sample(16))

    def test_seed_none_draws_a_stored_seed(self, space):
        assert isinstance(self.make(space, None).seed, int)

    def test_starts_at_lower_corner(self, space):
        np.testing.assert_array_equal(self.make(space, 0).sample(1)[0], space.lower)


class TestHalton(SamplerContract):
    def make(self, space, seed):
        return Halton(space, seed=seed)


class TestLatinHypercube(SamplerContract):
    def make(self, space, seed):
        return LatinHypercube(space, seed=seed)


class TestLatinHypercubeOfABudget(SamplerContract):
    def make(self, space, seed):
        return LatinHypercube(space, seed=seed, design_size=10)


class TestUniform(SamplerContract):
    def make(self, space, seed):
        return Uniform(space, seed=seed)


def one_point_per_stratum(u, n):
    """Whether each column of ``u`` (shape (n, d)) has exactly one point in each [k/n, (k+1)/n).

    Unscrambled sequences put points exactly on the left edges k/n, and the round trip through
    a log scale may move them by ~1e-16: the 1e-9 slack keeps them in their stratum.
    """
    strata = np.floor(u * n + 1e-9).astype(int)
    return all(np.array_equal(np.sort(col), np.arange(n)) for col in strata.T)


@pytest.mark.parametrize("cls", [Sobol, Halton, Uniform])
def test_split_calls_continue_one_sequence(space, cls):
    sampler = cls(space, seed=0)
    parts = np.vstack([sampler.sample(4), sampler.sample(3), sampler.sample(1)])
    np.testing.assert_array_equal(parts, cls(space, seed=0).sample(8))


@pytest.mark.parametrize("scramble", [True, False])
def test_sobol_power_of_two_is_a_net(space, scramble):
    """The first 2**m Sobol' points, m = 4: every 1-D projection is a (0, m, 1)-net (one point in
    each of the 2**m equal intervals), and the first two dimensions form a (0, m, 2)-net (one point
    in each elementary box 2**-a x 2**-(m - a))."""
    m = 4
    u = space.to_unit(Sobol(space, seed=1, scramble=scramble).sample(2**m))
    assert one_point_per_stratum(u, 2**m)
    for a in range(m + 1):
        boxes = np.floor(u[:, 0] * 2**a) * 2 ** (m - a) + np.floor(u[:, 1] * 2 ** (m - a))
        np.testing.assert_array_equal(np.sort(boxes), np.arange(2**m))


def test_sobol_warns_on_first_call_of_non_power_of_two(space):
    with pytest.warns(UserWarning, match="power of 2"):
        Sobol(space, seed=0).sample(5)


def test_uniform_is_not_stratified(space):
    """Control for the stratification tests: 16 i.i.d. points (seed 1) miss some of 16 strata."""
    assert not one_point_per_stratum(space.to_unit(Uniform(space, seed=1).sample(16)), 16)


def test_halton_discrepancy_below_uniform(space):
    """Seeded and deterministic: with n = 128 points in 3 dimensions, the centered L2 discrepancy
    of scrambled Halton (seeds 0-4, about 2e-4) lies below that of every one of 20 i.i.d. uniform
    designs (seeds 0-19, the lowest about 2e-3)."""
    n = 128
    halton = [qmc.discrepancy(space.to_unit(Halton(space, seed=s).sample(n))) for s in range(5)]
    uniform = [qmc.discrepancy(space.to_unit(Uniform(space, seed=s).sample(n))) for s in range(20)]
    assert max(halton) < min(uniform)


@pytest.mark.parametrize("n", [1, 7, 32])
def test_latin_hypercube_one_point_per_stratum(space, n):
    sampler = LatinHypercube(space, seed=2)
    first, second = sampler.sample(n), sampler.sample(n)
    assert one_point_per_stratum(space.to_unit(first), n)
    assert one_point_per_stratum(space.to_unit(second), n)


@pytest.mark.parametrize("design_size", [1, 16, 50])
def test_latin_hypercube_of_a_budget_asked_one_point_at_a_time(space, design_size):
    """As the launcher asks (sample(1) per simulation), each run of design_size points is one
    Latin hypercube; without design_size the same calls would be i.i.d. uniform points."""
    sampler = LatinHypercube(space, seed=3, design_size=design_size)
    points = np.vstack([sampler.sample(1) for _ in range(2 * design_size)])
    assert one_point_per_stratum(space.to_unit(points[:design_size]), design_size)
    assert one_point_per_stratum(space.to_unit(points[design_size:]), design_size)


def test_latin_hypercube_of_a_budget_restores_mid_design(space):
    sampler = LatinHypercube(space, seed=5, design_size=12)
    sampler.sample(5)
    state = json_round_trip(sampler.state_dict())
    expected = sampler.sample(10)
    restored = LatinHypercube(space, seed=0)
    restored.load_state_dict(state)
    assert restored.design_size == 12
    np.testing.assert_array_equal(restored.sample(10), expected)


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "64"])
def test_latin_hypercube_rejects_bad_design_size(space, bad):
    with pytest.raises(ValueError, match="design_size: expected None or an int >= 1"):
        LatinHypercube(space, seed=0, design_size=bad)


@pytest.mark.parametrize("scramble", [True, False])
@pytest.mark.parametrize("column, base", [(0, 2), (1, 3), (2, 5)])
def test_halton_stratified_in_each_prime_base(space, scramble, column, base):
    """Coordinate j of Halton is a van der Corput sequence in the j-th prime base b: its first b**2
    points put one point in each of b**2 equal intervals (a base-2 design like Sobol' does not, for
    b = 3 or 5)."""
    u = space.to_unit(Halton(space, seed=4, scramble=scramble).sample(base**2))
    assert one_point_per_stratum(u[:, [column]], base**2)
