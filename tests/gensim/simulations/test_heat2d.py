"""Heat2D and its DST implicit Euler solver, checked against exact and independent solutions.

Tolerances: the solver works in float64, so its identities hold to round-off; ``atol64`` allows
64 ulps of the data's magnitude (each DST adds O(log n) roundings and the steps accumulate them;
up to 10 ulps are seen). ``Heat2D.run`` rounds to float32, so checks on its output allow
``ATOL32``, three float32 ulps of the largest temperature, 500 (ulp 2**-15 there).
"""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import splu, spsolve
from simulation_contract import SimulationContract

from gensim.simulations import Heat2D
from gensim.simulations.heat2d import implicit_euler_heat, node_coordinates

EPS64 = np.finfo(np.float64).eps
# Casting to float32 rounds by at most half an ulp (2**-16 at 500); compared sides differ by at
# most one ulp, and three leave room for the float64 round-off underneath.
ATOL32 = 3 * float(np.spacing(np.float32(500.0)))


def atol64(scale: float) -> float:
    """Round-off allowance for float64 results of magnitude ``scale``: 64 ulps (seen: up to 10)."""
    return 64 * EPS64 * scale


def last(iterator):
    """The last item of an iterator (None when empty), without keeping the others."""
    tail = collections.deque(iterator, maxlen=1)
    return tail[0] if tail else None


# --- independent reference: the same implicit Euler system, assembled and solved sparse -------


def minus_laplacian(n: int) -> sp.csc_matrix:
    """``-L``, the Dirichlet 5-point operator on n x n nodes, for ``u.ravel()`` (C order, j fastest)."""
    h = 1.0 / (n + 1)
    t = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1])
    eye = sp.identity(n)
    # j (x) is the fast index of u.ravel(), so the x-difference acts on the second Kronecker factor.
    return ((sp.kron(eye, t) + sp.kron(t, eye)) / h**2).tocsc()


def boundary_term(n: int, walls) -> np.ndarray:
    """``b / h^2``: wall values seen through the 5-point stencil, from a padded array, shape (n*n,).

    Built differently from the solver on purpose: pad the interior with ghost nodes holding the
    wall values (bottom row i = -1, top row i = n, left column j = -1, right column j = n) and sum
    the four neighbours of every interior node.
    """
    left, right, bottom, top = walls
    h = 1.0 / (n + 1)
    pad = np.zeros((n + 2, n + 2))
    pad[1:-1, 0], pad[1:-1, -1], pad[0, 1:-1], pad[-1, 1:-1] = left, right, bottom, top
    neighbours = pad[1:-1, :-2] + pad[1:-1, 2:] + pad[:-2, 1:-1] + pad[2:, 1:-1]
    return neighbours.ravel() / h**2


def sparse_implicit_euler(u0, walls, diffusivity, dt, n_steps):
    """Reference implicit Euler: LU of ``I - D dt L``, one solve per step; yields (n, n) arrays."""
    n = u0.shape[0]
    lu = splu((sp.identity(n * n, format="csc") + diffusivity * dt * minus_laplacian(n)).tocsc())
    source = diffusivity * dt * boundary_term(n, walls)
    u = u0.ravel().astype(float)
    for _ in range(n_steps):
        u = lu.solve(u + source)
        yield u.reshape(n, n)


def sparse_steady_state(n: int, walls) -> np.ndarray:
    """Discrete Laplace solution ``-L u = b / h^2`` with those walls, shape (n, n)."""
    return spsolve(minus_laplacian(n), boundary_term(n, walls)).reshape(n, n)


# --- 1. exact discrete eigenmode decay --------------------------------------------------------


@pytest.mark.parametrize("p, q", [(1, 1), (2, 5), (16, 3), (17, 17)])
def test_discrete_sine_mode_decays_by_the_exact_factor(p, q):
    n, diffusivity, dt, k = 17, 0.1, 0.01, 20
    h = 1.0 / (n + 1)
    x = node_coordinates(n)
    u0 = np.sin(q * np.pi * x)[:, None] * np.sin(p * np.pi * x)[None, :]  # rows y, columns x
    lam = 4 / h**2 * (np.sin(p * np.pi * h / 2) ** 2 + np.sin(q * np.pi * h / 2) ** 2)
    for step, u in enumerate(implicit_euler_heat(u0, (0, 0, 0, 0), diffusivity, dt, k), start=1):
        # |u0| <= 1: round-off only.
        np.testing.assert_allclose(u, u0 * (1 + diffusivity * dt * lam) ** -step, rtol=0, atol=atol64(1.0))


# --- 2. superposition and linearity -----------------------------------------------------------


def test_solution_is_linear_in_initial_field_and_walls():
    rng = np.random.default_rng(0)
    n, diffusivity, dt, k = 12, 0.05, 0.02, 15
    u0_a, u0_b = rng.uniform(100, 500, (2, n, n))
    walls_a, walls_b = rng.uniform(100, 500, (2, 4))
    run = lambda u0, walls: list(implicit_euler_heat(u0, walls, diffusivity, dt, k))  # noqa: E731
    for u_sum, u_a, u_b in zip(run(u0_a + u0_b, walls_a + walls_b), run(u0_a, walls_a), run(u0_b, walls_b)):
        # Values up to 1000: round-off of that size.
        np.testing.assert_allclose(u_sum, u_a + u_b, rtol=0, atol=atol64(1000.0))


def test_heat2d_is_affine_in_the_five_temperatures_for_fixed_diffusivity():
    sim = Heat2D(grid=10, n_steps=8)
    rng = np.random.default_rng(1)
    temperatures = rng.uniform(100, 500, (3, 5))
    weights = np.array([0.2, 0.5, 0.3])  # a convex combination stays inside the bounds
    log10_d = -1.2

    def fields(temps):
        return np.stack([f["temperature"] for _, _, f in sim.run(np.append(temps, log10_d))]).astype(float)

    mixed = fields(weights @ temperatures)
    combined = sum(w * fields(t) for w, t in zip(weights, temperatures))
    # Each run rounds by half an ulp at most and the weights sum to 1: one ulp apart at most.
    np.testing.assert_allclose(mixed, combined, rtol=0, atol=ATOL32)


def test_heat2d_is_not_affine_in_log10_diffusivity():
    # The reason for the log10_D parameter: without it a linear model would be exact.
    sim = Heat2D(grid=10, n_steps=8)
    temps = [400.0, 100.0, 300.0, 200.0, 500.0]
    lo, mid, hi = (last(sim.run(temps + [d]))[2]["temperature"].astype(float) for d in (-2.0, -1.5, -1.0))
    assert np.max(np.abs(mid - (lo + hi) / 2)) > 1.0  # kelvins, far above float32 round-off


# --- 3. independent check against a sparse direct solve ---------------------------------------


def test_dst_solver_matches_sparse_direct_solve():
    rng = np.random.default_rng(2)
    n, walls, diffusivity, dt, k = 9, (100.0, 200.0, 300.0, 450.0), 0.05, 0.02, 10
    u0 = rng.uniform(100, 500, (n, n))
    dst = implicit_euler_heat(u0, walls, diffusivity, dt, k)
    direct = sparse_implicit_euler(u0, walls, diffusivity, dt, k)
    for u, ref in zip(dst, direct, strict=True):
        # Two float64 solvers of a well-conditioned system (I + D dt A): both at round-off of 500.
        np.testing.assert_allclose(u, ref, rtol=0, atol=atol64(500.0))


def test_heat2d_matches_sparse_direct_solve_and_orientation():
    # Unequal walls through Heat2D: parameter order and the documented (y, x) orientation.
    sim = Heat2D(grid=7, n_steps=5, t_final=0.5)
    t_init, walls, log10_d = 250.0, (500.0, 100.0, 200.0, 400.0), -1.0
    out = [f["temperature"] for _, _, f in sim.run([t_init, *walls, log10_d])]
    ref = sparse_implicit_euler(np.full((7, 7), t_init), walls, 10**log10_d, sim.dt, sim.n_steps)
    for u, r in zip(out, ref, strict=True):
        np.testing.assert_allclose(u, r, rtol=0, atol=ATOL32)  # float32 rounding only
    # Hot left wall (j = 0) and hot top wall (i = n-1): check the orientation in plain words.
    u = out[-1]
    assert u[3, 0] > u[3, -1]
    assert u[-1, 3] > u[0, 3]


# --- 4. constant states and the maximum principle ---------------------------------------------


def test_uniform_temperatures_stay_constant():
    sim = Heat2D(grid=16, n_steps=10)
    for _, _, f in sim.run([321.5, 321.5, 321.5, 321.5, 321.5, -0.7]):
        # 321.5 is exact in float32; the float64 round-off is far below half an ulp there.
        np.testing.assert_array_equal(f["temperature"], np.float32(321.5))


@pytest.mark.parametrize("diffusivity_dt", [1e-5, 1e-2, 10.0])
def test_maximum_principle(diffusivity_dt):
    # (I + D dt A) is an M-matrix with unit row sums once the walls are counted, so each step is a
    # convex combination of the previous state and the walls: no new extrema, whatever the step.
    rng = np.random.default_rng(3)
    n = 15
    u0 = rng.uniform(100, 500, (n, n))
    walls = rng.uniform(100, 500, 4)
    lo, hi = min(u0.min(), walls.min()), max(u0.max(), walls.max())
    for u in implicit_euler_heat(u0, walls, 1.0, diffusivity_dt, 10):
        assert u.min() >= lo - atol64(500.0) and u.max() <= hi + atol64(500.0)


def test_heat2d_stays_within_its_temperatures():
    sim = Heat2D(grid=20, n_steps=10)
    rng = np.random.default_rng(4)
    for params in sim.space.from_unit(rng.random((5, sim.space.dim))):
        temps = params[:5]
        # float32 rounding is monotone, so rounded values stay within the rounded extrema.
        lo, hi = np.float32(temps.min()), np.float32(temps.max())
        for _, _, f in sim.run(params):
            assert f["temperature"].min() >= lo and f["temperature"].max() <= hi


# --- 5. convergence to the continuous solution ------------------------------------------------


def test_converges_to_the_continuous_solution_at_second_order_in_h():
    # u0 = sin(pi x) sin(pi y), zero walls: u = exp(-2 pi^2 D t) u0. With dt = h^2 the spatial
    # (O(h^2)) and temporal (O(dt)) errors are both O(h^2), and of the same sign (both schemes
    # decay too slowly), so halving h divides the error by 4.
    diffusivity, t_final = 0.1, 0.1
    errors, hs = [], []
    for n in (7, 15, 31, 63):
        h = 1.0 / (n + 1)
        n_steps = round(t_final / h**2)
        dt = t_final / n_steps
        x = node_coordinates(n)
        u0 = np.sin(np.pi * x)[:, None] * np.sin(np.pi * x)[None, :]
        u = last(implicit_euler_heat(u0, (0, 0, 0, 0), diffusivity, dt, n_steps))
        exact = np.exp(-2 * np.pi**2 * diffusivity * t_final) * u0
        errors.append(np.max(np.abs(u - exact)))
        hs.append(h)
    orders = np.diff(np.log(errors)) / np.diff(np.log(hs))
    # Observed order h -> h/2; the asymptotic value is 2, the coarsest grid is a little off.
    np.testing.assert_allclose(orders, 2.0, atol=0.1)
    assert errors[-1] < 1e-4


# --- 6. steady state --------------------------------------------------------------------------


def test_long_time_limit_is_the_discrete_laplace_solution():
    # Slowest mode: D lambda_11 ~ 0.316 * 19.7; its gain per step (dt = 0.5) is 0.24, to the
    # power 40 ~ 1e-25: the transient is gone, only float32 rounding remains.
    sim = Heat2D(grid=24, n_steps=40, t_final=20.0)
    walls = (500.0, 100.0, 200.0, 400.0)
    u = last(sim.run([300.0, *walls, -0.5]))[2]["temperature"]
    np.testing.assert_allclose(u, sparse_steady_state(24, walls), rtol=0, atol=ATOL32)


@pytest.mark.parametrize("n", [9, 24])
def test_steady_state_mean_and_centre_equal_the_mean_wall_temperature(n):
    # Rotating the square by 90 degrees maps each wall onto the next one, so the four
    # single-wall steady states sum to the constant 1: each has spatial mean 1/4, and on an odd
    # grid each is 1/4 at the centre node. Hence mean (and centre) = mean of the four walls.
    walls = np.array([500.0, 100.0, 200.0, 400.0])
    u = last(implicit_euler_heat(np.full((n, n), 300.0), walls, 1.0, 10.0, 20))
    ref = sparse_steady_state(n, walls)
    np.testing.assert_allclose(u, ref, rtol=0, atol=atol64(500.0))
    np.testing.assert_allclose(ref.mean(), walls.mean(), rtol=1e-12)
    if n % 2:
        np.testing.assert_allclose(ref[n // 2, n // 2], walls.mean(), rtol=1e-12)


# --- 7. the Simulation interface --------------------------------------------------------------


class TestHeat2DContract(SimulationContract):
    @pytest.fixture
    def simulation(self):
        return Heat2D(grid=8, n_steps=5)


def test_run_yields_float32_fields_at_the_declared_times():
    sim = Heat2D(grid=12, n_steps=6, t_final=0.3)
    assert sim.space.names == ("T_init", "T_left", "T_right", "T_bottom", "T_top", "log10_D")
    np.testing.assert_array_equal(sim.space.lower, [100] * 5 + [-2.5])
    np.testing.assert_array_equal(sim.space.upper, [500] * 5 + [-0.5])
    assert not sim.space.log.any()  # log10_D is already the log: a linear parameter
    assert [(f.name, f.shape, f.dtype) for f in sim.fields] == [("temperature", (12, 12), "float32")]
    out = list(sim.run(np.array([[300.0, 100.0, 500.0, 200.0, 400.0, -1.0]])))
    assert [step for step, _, _ in out] == list(range(6))
    np.testing.assert_array_equal([t for _, t, _ in out], sim.times)
    np.testing.assert_allclose(sim.times, 0.05 * np.arange(1, 7), rtol=1e-15)
    for _, _, f in out:
        assert f["temperature"].dtype == np.float32 and f["temperature"].shape == (12, 12)


def test_first_emitted_state_is_after_one_step():
    sim = Heat2D(grid=6, n_steps=3)
    params = [300.0, 100.0, 500.0, 200.0, 400.0, -1.0]
    first = next(iter(sim.run(params)))[2]["temperature"]
    ref = next(implicit_euler_heat(np.full((6, 6), 300.0), params[1:5], 0.1, sim.dt, 1))
    np.testing.assert_array_equal(first, ref.astype(np.float32))


@pytest.mark.parametrize(
    "params, match",
    [
        ([99.0, 100, 100, 100, 100, -1], "T_init"),
        ([300.0, 100, 100, 100, 501, -1], "T_top"),
        ([300.0, 100, 100, 100, 100, -0.1], "log10_D"),
        ([300.0, 100, 100, 100, 100, np.nan], "log10_D"),
        ([300.0, 100, 100, 100, 100], r"shape \(n, 6\)"),
        ([[300.0, 100, 100, 100, 100, -1]] * 2, "one parameter vector"),
    ],
)
def test_bad_params_raise_a_clear_error(params, match):
    with pytest.raises(ValueError, match=match):
        next(iter(Heat2D(grid=4, n_steps=2).run(params)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"grid": 0}, ValueError, "grid"),
        ({"grid": 8.5}, TypeError, "grid"),
        ({"grid": True}, TypeError, "grid"),
        ({"n_steps": -3}, ValueError, "n_steps"),
        ({"t_final": 0.0}, ValueError, "t_final"),
        ({"t_final": float("inf")}, ValueError, "t_final"),
        ({"temperature_bounds": (500.0, 100.0)}, ValueError, "temperature_bounds"),
        ({"temperature_bounds": (100.0,)}, ValueError, "temperature_bounds"),
        ({"log10_diffusivity_bounds": (-1.0, float("nan"))}, ValueError, "log10_diffusivity_bounds"),
    ],
)
def test_bad_constructor_arguments_raise_a_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        Heat2D(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"u0": np.zeros((3, 4))}, "square"),
        ({"u0": np.full((3, 3), np.inf)}, "finite"),
        ({"walls": (0.0, 0.0, 0.0)}, "walls"),
        ({"diffusivity": -1.0}, "diffusivity"),
        ({"dt": 0.0}, "dt"),
        ({"n_steps": 0}, "n_steps"),
    ],
)
def test_solver_rejects_bad_arguments(kwargs, match):
    args = {"u0": np.zeros((3, 3)), "walls": (0.0,) * 4, "diffusivity": 1.0, "dt": 0.1, "n_steps": 1}
    with pytest.raises(ValueError, match=match):
        implicit_euler_heat(**{**args, **kwargs})  # raises at the call, before any step


def test_default_run_wall_time(capsys):
    # Reported, not asserted: timings on shared CI machines are noise.
    sim = Heat2D()
    start = time.perf_counter()
    n = sum(1 for _ in sim.run([300.0, 100.0, 500.0, 200.0, 400.0, -1.5]))
    elapsed = time.perf_counter() - start
    assert n == 100
    with capsys.disabled():
        print(f"\nHeat2D default run (64x64, 100 steps): {elapsed * 1e3:.1f} ms")
