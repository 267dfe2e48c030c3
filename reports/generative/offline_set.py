"""The off-line data set of the conditional-mean diagnostics (``mean_regression.py``, ``mean_ridge.py``,
``flow_offline.py``): one place for the simulations and the exact held-out moments they share.

2 000 stochastic heat simulations (32 x 32, 10 steps) at uniform random parameters, one realization
each (seeds 50 000 + i), then 16 held-out parameter vectors from the same generator, whose exact
mean and std at t = 0.5 and 1 are the reference.
"""

from __future__ import annotations

import numpy as np

from gensim.simulations import StochasticHeat

N_SIMULATIONS = 2000
N_HELDOUT = 16
HELDOUT_TIMES = (0.5, 1.0)


def simulate(sim: StochasticHeat, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the training simulations, then draw the held-out vectors, from ``rng`` in that order.

    Returns
    -------
    P : ndarray, shape (R, 4)
        Parameters of each row (R = 2 000 x 10 time steps).
    T : ndarray, shape (R,)
        Time of each row.
    Y : ndarray, shape (R, 1024)
        The field ``u`` of each row, flattened.
    hp : ndarray, shape (16, 4)
        Held-out parameter vectors.
    """
    lo, hi = np.array(sim.space.lower), np.array(sim.space.upper)
    P, T, Y = [], [], []
    for i in range(N_SIMULATIONS):
        p = lo + (hi - lo) * rng.random(4)
        for _, t, f in sim.run(p, seed=50_000 + i):
            P.append(p)
            T.append(t)
            Y.append(f["u"].reshape(-1))
    hp = lo + (hi - lo) * rng.random((N_HELDOUT, 4))
    return np.array(P), np.array(T), np.array(Y), hp


def exact_moments(sim: StochasticHeat, hp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact mean and std of every held-out vector at :data:`HELDOUT_TIMES`.

    Returns
    -------
    mean, std : ndarray, shape (32, 1024)
        One row per (vector, time), vectors outer.
    conditions : ndarray, shape (32, 5)
        The parameters then the time of each row.
    """
    means, stds, conditions = [], [], []
    for p in hp:
        for t in HELDOUT_TIMES:
            m, s = sim.exact_moments(p, t)
            means.append(m.reshape(-1))
            stds.append(s.reshape(-1))
            conditions.append(np.r_[p, t])
    return np.array(means), np.array(stds), np.array(conditions)
