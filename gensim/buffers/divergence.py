"""How far a buffer's content is from the target distribution over (parameters, time).

Two statistics, both 0 for a buffer that matches the target:

- :func:`unbiased_energy_distance` between the buffer's samples and a quasi-random sample of the target,
  in the unit hypercube of (parameters, time) (:meth:`Strata.unit_points`). It needs no
  partition, so it judges every policy alike, the stratified one included.
- :func:`chi_square_divergence` of the share of each stratum against its target mass: cheap and
  easy to read ("which strata are missing"), but blind inside a stratum.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from gensim.buffers.strata import Strata


def unbiased_energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of the squared energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|``.

    The U-statistic; :func:`gensim.metrics.energy_distance` is the V-statistic (biased upwards,
    never negative) that the generative checks report beside its floor.

    Parameters
    ----------
    x : ndarray, shape (n, d)
        Sample of the first law, n >= 2.
    y : ndarray, shape (m, d)
        Sample of the second law, m >= 2.

    Returns
    -------
    float
        The U-statistic: within-sample means exclude the zero diagonal, so two samples of the
        same law give 0 on average (and a small negative value half of the time).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(f"expected two samples of shapes (n >= 2, d) and (m >= 2, d), got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    xy = cdist(x, y).mean()
    xx = cdist(x, x).sum() / (n * (n - 1))
    yy = cdist(y, y).sum() / (m * (m - 1))
    return float(2.0 * xy - xx - yy)


def chi_square_divergence(counts: np.ndarray, mass: np.ndarray) -> float:
    """Pearson chi-square divergence ``sum_s (p_s - q_s)^2 / q_s`` of stratum shares from the target.

    Parameters
    ----------
    counts : ndarray, shape (n_strata,)
        Samples per stratum (not all zero).
    mass : ndarray, shape (n_strata,)
        Target probability of each stratum, all > 0, summing to 1.

    Returns
    -------
    float
        0 when the shares equal the target; at most ``(1 - q_min) / q_min``, reached when every
        sample is in the stratum of least mass ``q_min`` (``n_strata - 1`` for equal masses).
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if counts.shape != np.shape(mass) or total <= 0:
        raise ValueError(
            f"expected non-negative counts of shape {np.shape(mass)} with a positive sum, got "
            f"shape {counts.shape} summing to {total}"
        )
    return float((((counts / total) - mass) ** 2 / mass).sum())


def buffer_divergence(
    params: np.ndarray,
    steps: np.ndarray,
    strata: Strata,
    reference: np.ndarray,
    max_points: int = 4096,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Both divergences of a buffer's content from the target.

    Parameters
    ----------
    params : ndarray, shape (n, dim)
        Parameters of the stored samples, physical units; n >= 2.
    steps : ndarray, shape (n,)
        Their time-step indices.
    strata : Strata
        Target and partition.
    reference : ndarray, shape (m, dim + 1)
        A sample of the target from :meth:`Strata.reference`; fixed across calls so that
        successive values are comparable.
    max_points : int
        The energy distance uses a random subset of at most this many stored samples (its cost
        is quadratic).
    rng : numpy.random.Generator, optional
        Chooses that subset; default seed 0.

    Returns
    -------
    dict
        ``energy_distance`` and ``chi_square`` (over ``strata``).
    """
    points = strata.unit_points(params, steps)
    if len(points) > max_points:
        rng = rng if rng is not None else np.random.default_rng(0)
        points = points[rng.choice(len(points), size=max_points, replace=False)]
    counts = np.bincount(strata.assign(params, steps), minlength=strata.n_strata)
    return {
        "energy_distance": unbiased_energy_distance(points, reference),
        "chi_square": chi_square_divergence(counts, strata.mass),
    }
