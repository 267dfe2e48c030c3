"""Error metrics of surrogates against simulations: deterministic errors and distribution metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from gensim.simulations.base import FieldSpec


def relative_l2(pred: torch.Tensor, true: torch.Tensor, fields: Sequence[FieldSpec]) -> torch.Tensor:
    """Relative L2 error ``||pred - true||_2 / ||true||_2`` of every field of every sample.

    Parameters
    ----------
    pred, true : Tensor, shape (n, D)
        Flattened fields, concatenated in ``fields`` order (D = sum of field sizes).
    fields : sequence of FieldSpec

    Returns
    -------
    Tensor, shape (n, n_fields)
        One error per sample and field. A field whose truth is all zeros gets the absolute error
        norm instead (its relative error is undefined).
    """
    out = []
    start = 0
    for spec in fields:
        stop = start + spec.size
        diff = torch.linalg.vector_norm((pred[:, start:stop] - true[:, start:stop]).double(), dim=1)
        norm = torch.linalg.vector_norm(true[:, start:stop].double(), dim=1)
        out.append(torch.where(norm > 0, diff / torch.where(norm > 0, norm, 1.0), diff))
        start = stop
    return torch.stack(out, dim=1)


def summarize_errors(errors: torch.Tensor) -> dict[str, float]:
    """Mean and 99th percentile of a set of errors (all samples and fields pooled).

    Parameters
    ----------
    errors : Tensor, any shape

    Returns
    -------
    dict
        ``{"mean": ..., "p99": ...}`` as Python floats.
    """
    flat = errors.reshape(-1).double()
    return {"mean": float(flat.mean()), "p99": float(torch.quantile(flat, 0.99))}


# --- distribution metrics of generative surrogates ----------------------------------------------
#
# Each compares a set of model samples with simulator samples at one condition (parameters, t).
# Finite sample sets make every one of them noisy or biased, so each is reported beside its
# *floor*: the same metric between two independent simulator sample sets of the same size.


def _as_double(x) -> torch.Tensor:
    return torch.as_tensor(x).double()


def pixel_moment_errors(samples, mean_true, std_true) -> dict[str, float]:
    """Per-pixel mean and standard-deviation errors of a sample set against target moments.

    Parameters
    ----------
    samples : Tensor or ndarray, shape (m, D)
        ``m >= 2`` samples at one condition.
    mean_true, std_true : Tensor or ndarray, shape (D,)
        Target pointwise mean and standard deviation (exact, or estimated from a large
        simulator sample set).

    Returns
    -------
    dict
        ``mean_error``: ``||mean - mean_true||_2 / ||std_true||_2``, the mean error in units of
        the typical standard deviation; ``std_rel_error``: mean over pixels of
        ``|std - std_true| / std_true``; ``std_ratio``: ``sum(std) / sum(std_true)``, below 1 when
        the samples are under-dispersed (near 0 under mode collapse). Standard deviations use
        ``ddof=1``. Pixels whose ``std_true`` is below ``1e-12`` times its mean are left out of
        ``std_rel_error`` (their relative error is undefined).
    """
    x, mu, sd = _as_double(samples), _as_double(mean_true), _as_double(std_true)
    if x.ndim != 2 or x.shape[0] < 2 or mu.shape != x.shape[1:] or sd.shape != x.shape[1:]:
        raise ValueError(
            f"expected samples (m >= 2, D) and moments (D,), got {tuple(x.shape)}, "
            f"{tuple(mu.shape)} and {tuple(sd.shape)}"
        )
    std = x.std(0)
    keep = sd > 1e-12 * float(sd.mean())
    return {
        "mean_error": float(torch.linalg.vector_norm(x.mean(0) - mu) / torch.linalg.vector_norm(sd)),
        "std_rel_error": float(((std - sd).abs()[keep] / sd[keep]).mean()) if keep.any() else float("nan"),
        "std_ratio": float(std.sum() / sd.sum()),
    }


def radial_power_spectrum(fields) -> torch.Tensor:
    """Radially averaged power spectrum of 2-D fields, averaged over the samples.

    Parameters
    ----------
    fields : Tensor or ndarray, shape (m, H, W)

    Returns
    -------
    Tensor, shape (n_bins,), float64
        Bin ``r`` averages ``|F_k|^2`` (orthonormal 2-D DFT, so the spectrum sums to the field's
        energy) over the wavenumbers with ``round(|k|) = r``, ``k`` the signed integer wavenumber;
        ``n_bins = floor(sqrt((H/2)^2 + (W/2)^2)) + 1``.
    """
    x = _as_double(fields)
    if x.ndim != 3:
        raise ValueError(f"expected fields of shape (m, H, W), got {tuple(x.shape)}")
    h, w = x.shape[1:]
    power = (torch.fft.fft2(x, norm="ortho").abs() ** 2).mean(0)
    ky = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64)
    kx = torch.fft.fftfreq(w, d=1.0 / w, dtype=torch.float64)
    radius = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round().long().reshape(-1)
    n_bins = int(radius.max()) + 1
    total = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, radius, power.reshape(-1))
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, radius, torch.ones_like(power.reshape(-1)))
    return total / count


def spectrum_error(samples, reference) -> float:
    """Energy-weighted relative error of the radially averaged power spectrum.

    ``sum_r |P(r) - P_ref(r)| / sum_r P_ref(r)``: bins weigh by their energy, so the near-empty
    high wavenumbers of a smooth field cannot dominate, as they would in a log-ratio.

    Parameters
    ----------
    samples, reference : Tensor or ndarray, shape (m, H, W) and (m_ref, H, W)

    Returns
    -------
    float
    """
    p, p_ref = radial_power_spectrum(samples), radial_power_spectrum(reference)
    if p.shape != p_ref.shape:
        raise ValueError(
            f"samples and reference must share the grid, got spectra of {p.shape[0]} and {p_ref.shape[0]} bins"
        )
    return float((p - p_ref).abs().sum() / p_ref.sum())


def pca_basis(reference, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of a sample set.

    Parameters
    ----------
    reference : Tensor or ndarray, shape (m, D)
    n_components : int
        Number of components kept; at most ``min(m - 1, D)`` are returned.

    Returns
    -------
    mean : Tensor, shape (D,), float64
    components : Tensor, shape (k, D), float64
        Orthonormal rows, by decreasing variance.
    """
    x = _as_double(reference)
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    k = max(1, min(int(n_components), x.shape[0] - 1, x.shape[1]))
    return mean, vh[:k]


def energy_distance(x, y) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two sample sets.

    The V-statistic (the diagonal zeros included): positive, and biased upwards by
    ``O(1 / m)`` for samples of one law, which is why it is reported beside its floor. The
    buffer's divergence uses the U-statistic instead, :func:`gensim.buffers.unbiased_energy_distance`.

    Parameters
    ----------
    x, y : Tensor or ndarray, shape (m, d) and (n, d)

    Returns
    -------
    float
        Zero only when the two empirical distributions are equal.
    """
    x, y = _as_double(x), _as_double(y)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def sliced_wasserstein(x, y, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two sample sets.

    ``sqrt(mean_theta W2^2(theta . X, theta . Y))`` over ``n_projections`` random unit directions
    (seeded). One-dimensional distances compare quantiles at ``min(m, n)`` common levels (sorted
    values when ``m = n``).

    Parameters
    ----------
    x, y : Tensor or ndarray, shape (m, d) and (n, d)
    n_projections : int
    seed : int
        Seed of the directions, so that a metric and its floor use the same ones.

    Returns
    -------
    float
    """
    x, y = _as_double(x), _as_double(y)
    gen = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(x.shape[1], int(n_projections), generator=gen, dtype=torch.float64)
    theta /= torch.linalg.vector_norm(theta, dim=0, keepdim=True)
    px, py = (x @ theta).sort(0).values, (y @ theta).sort(0).values
    if px.shape[0] != py.shape[0]:
        levels = (torch.arange(min(len(px), len(py)), dtype=torch.float64) + 0.5) / min(len(px), len(py))
        px, py = torch.quantile(px, levels, dim=0), torch.quantile(py, levels, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def energy_score(samples, observations) -> float:
    """Energy score of a forecast ensemble, averaged over observations (lower is better).

    ``ES = E|X - y| - 0.5 E|X - X'|`` with the fair (unbiased, ``i != j``) estimate of the second
    term; it is a proper scoring rule, minimal in expectation for the true conditional law, and
    it reduces to the CRPS in one dimension. The estimator is ``scoringrules.es_ensemble``'s
    ``"fair"`` one (a test checks they agree); it is computed here with ``torch.cdist`` because
    scoringrules forms every pairwise difference, ``m x m x D`` values per observation (2 GB for
    256 samples of a 64x64 field).

    Parameters
    ----------
    samples : Tensor or ndarray, shape (m, D)
        Forecast ensemble at one condition, ``m >= 2``.
    observations : Tensor or ndarray, shape (n, D)
        Independent outcomes at the same condition.

    Returns
    -------
    float
    """
    x, y = _as_double(samples), _as_double(observations)
    m = x.shape[0]
    if m < 2:
        raise ValueError(f"the energy score needs an ensemble of at least 2 samples, got {m}")
    spread = torch.cdist(x, x).sum() / (m * (m - 1))
    return float(torch.cdist(y, x).mean() - 0.5 * spread)


def _check_ensemble(samples, observations, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(samples (m, D), observations (n, D))`` as float64 arrays, or a ValueError naming ``what``."""
    x = np.asarray(torch.as_tensor(samples).double())
    y = np.asarray(torch.as_tensor(observations).double())
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or x.shape[0] < 2 or y.shape[0] < 1:
        raise ValueError(
            f"{what}: expected samples (m >= 2, D) and observations (n >= 1, D) of one D, got {x.shape} and {y.shape}"
        )
    return x, y


def _ranks_and_sums_below(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every observed pixel: the samples of its pixel at or below it, and their sum.

    One sort of each pixel's samples and observations together, ``(m + n) log(m + n)`` per pixel,
    instead of comparing every observation with every sample.

    Parameters
    ----------
    x : ndarray, shape (m, D)
        Samples.
    y : ndarray, shape (n, D)
        Observations.

    Returns
    -------
    count, below : ndarray, shape (n, D)
        Number and sum of the samples ``<=`` each observation, in its pixel.
    """
    m, n = x.shape[0], y.shape[0]
    # Pixels as rows (D, m + n), contiguous: each row sorts in place of memory.
    values = np.ascontiguousarray(np.concatenate([x, y]).T)
    order = np.argsort(values, axis=1, kind="stable")  # a tie puts the sample first
    is_sample = order < m
    count = np.cumsum(is_sample, axis=1)
    below = np.cumsum(np.where(is_sample, np.take_along_axis(values, order, axis=1), 0.0), axis=1)
    # The observations' entries, in sorted order within each pixel, and which observation each is.
    rows, cols = np.nonzero(~is_sample)
    observation = order[rows, cols] - m
    out_count, out_below = np.empty((n, values.shape[0])), np.empty((n, values.shape[0]))
    out_count[observation, rows], out_below[observation, rows] = count[rows, cols], below[rows, cols]
    return out_count, out_below


def crps(samples, observations) -> float:
    """Continuous ranked probability score per pixel, averaged over pixels and observations.

    Each pixel's marginal is scored with the fair (unbiased) ensemble estimator
    ``E|X - y| - E|X - X'| / 2`` (``i != j``), the value of ``scoringrules.crps_ensemble`` with
    its ``"fair"`` or ``"pwm"`` estimator (a test checks they agree to round-off). It is computed
    from one sort per pixel (sums of the samples below each observation) because scoringrules
    compares every observation with every sample: 6 s for 256 samples and observations of a
    64x64 field, at every validation of every held-out condition. Lower is better; a perfect
    ensemble of the same size scores the floor (the same call on independent simulator samples).

    Parameters
    ----------
    samples : Tensor or ndarray, shape (m, D)
        Forecast ensemble at one condition, ``m >= 2``.
    observations : Tensor or ndarray, shape (n, D)
        Independent outcomes at the same condition.

    Returns
    -------
    float
        In the units of the field.
    """
    x, y = _check_ensemble(samples, observations, "crps")
    m = x.shape[0]
    count, below = _ranks_and_sums_below(x, y)
    # sum_i |x_i - y| = (c y - S_below) + (S_total - S_below - (m - c) y)
    absolute = ((2 * count - m) * y - 2 * below + x.sum(axis=0)).mean() / m
    # sum_{i != j} |x_i - x_j| = 2 sum_k (2k - m - 1) x_(k), k = 1..m over the sorted samples
    weights = (2 * np.arange(1, m + 1) - m - 1)[:, None]
    spread = 2 * (weights * np.sort(x, axis=0)).sum(axis=0).mean() / (m * (m - 1))
    return float(absolute - 0.5 * spread)


def central_coverage(samples, observations, level: float) -> tuple[float, float]:
    """Fraction of observed pixels inside the ensemble's central interval, and its exact nominal value.

    The interval of each pixel runs from the ``k``-th smallest to the ``k``-th largest of the
    ``m`` samples, ``k = round((m + 1) (1 - level) / 2)`` (at least 1). For an observation drawn
    from the same continuous law as the samples, its rank among them is uniform on ``0..m``, so
    it falls inside with probability exactly ``(m + 1 - 2k) / (m + 1)``: the nominal coverage,
    close to ``level`` (0.899 for 256 samples at 0.9). A calibrated model covers the nominal
    fraction; an under-dispersed one covers less.

    Parameters
    ----------
    samples : Tensor or ndarray, shape (m, D)
    observations : Tensor or ndarray, shape (n, D)
    level : float
        Central probability, in (0, 1).

    Returns
    -------
    coverage : float
        Mean over observations and pixels.
    nominal : float
        ``(m + 1 - 2k) / (m + 1)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level: expected a probability in (0, 1), got {level}")
    x, y = _check_ensemble(samples, observations, "central_coverage")
    m = x.shape[0]
    k = max(1, round((m + 1) * (1 - level) / 2))
    if 2 * k > m:
        raise ValueError(f"{m} samples cannot resolve a central {level:.0%} interval; draw more samples")
    ordered = np.sort(x, axis=0)
    inside = (y >= ordered[k - 1]) & (y <= ordered[m - k])
    return float(inside.mean()), (m + 1 - 2 * k) / (m + 1)


def rank_histogram(samples, observations, n_bins: int = 10) -> np.ndarray:
    """Histogram of the ranks of observed pixels among the ensemble's (a Talagrand diagram).

    The rank of an observed pixel is the number of its pixel's samples at or below it, ``0..m``;
    for a calibrated ensemble it is uniform, so the histogram is flat. A U shape means
    under-dispersion, a dome over-dispersion, a slope a biased mean. Pixels are correlated, so
    the counts are not independent: read the shape, not a chi-square test.

    Parameters
    ----------
    samples : Tensor or ndarray, shape (m, D)
    observations : Tensor or ndarray, shape (n, D)
    n_bins : int
        Bins over the ``m + 1`` ranks, ``1 <= n_bins <= m + 1``.

    Returns
    -------
    ndarray, shape (n_bins,)
        Each bin's count divided by the count a uniform rank would give it: 1 everywhere for a
        flat histogram, whatever the bin widths.
    """
    x, y = _check_ensemble(samples, observations, "rank_histogram")
    m = x.shape[0]
    if not 1 <= n_bins <= m + 1:
        raise ValueError(f"n_bins: expected 1..{m + 1} (the possible ranks of {m} samples), got {n_bins}")
    ranks = _ranks_and_sums_below(x, y)[0].ravel()
    edges = np.linspace(0, m + 1, n_bins + 1).round().astype(int)  # bins over the ranks 0..m
    counts = np.histogram(ranks, bins=edges)[0]
    return counts / (ranks.size * np.diff(edges) / (m + 1))


def diversity_ratio(samples, observations) -> float:
    """Spread of generated samples relative to the model's error on single realizations.

    ``sqrt(S / (R - S / m))`` with ``S`` the mean over conditions and pixels of the sample
    variance of the ``m`` samples, and ``R`` the mean squared difference between each
    observation and the sample mean (``S / m`` removes that mean's own sampling error). For a
    model whose conditional law is right, ``R - S / m`` estimates the true conditional variance
    and the ratio is near 1; under mode collapse it drops towards 0. One realization per
    condition is enough, so it needs no extra simulation. On a deterministic problem it
    compares the spread with the mean error.

    Parameters
    ----------
    samples : Tensor or ndarray, shape (n, m, D)
        ``m >= 2`` model samples at each of ``n`` conditions.
    observations : Tensor or ndarray, shape (n, D)
        One simulator realization at each condition.

    Returns
    -------
    float
    """
    x, y = _as_double(samples), _as_double(observations)
    if x.ndim != 3 or x.shape[1] < 2 or y.shape != (x.shape[0], x.shape[2]):
        raise ValueError(
            f"expected samples (n, m >= 2, D) and observations (n, D), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    spread = float(x.var(1).mean())
    resid = float(((y - x.mean(1)) ** 2).mean()) - spread / x.shape[1]
    return math.sqrt(spread / max(resid, 1e-300))


def distribution_metrics(
    samples,
    reference,
    floor_reference,
    fields: Sequence[FieldSpec] | None = None,
    exact_mean=None,
    exact_std=None,
    n_components: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Every distribution metric at one condition, each beside its floor.

    Parameters
    ----------
    samples : Tensor or ndarray, shape (m, D)
        Model samples.
    reference, floor_reference : Tensor or ndarray, shape (m, D)
        Two independent simulator sample sets of the same size: the model is compared with
        ``reference``, and ``floor_reference`` with ``reference`` gives the floor.
    fields : sequence of FieldSpec, optional
        Layout of ``D``; the power-spectrum error is computed for every 2-D field (and averaged).
    exact_mean, exact_std : Tensor or ndarray, shape (D,), optional
        Exact pointwise moments; when missing, those of ``reference`` stand in (and the pixel
        errors then compare ``samples`` and ``floor_reference`` with ``reference``).
    n_components : int
        PCA components (fitted on ``reference``) on which the energy distance and sliced
        Wasserstein distance are computed.
    seed : int
        Seed of the sliced-Wasserstein directions.

    Returns
    -------
    dict
        For each metric ``name`` in ``energy_distance``, ``sliced_wasserstein``,
        ``energy_score``, ``crps`` (per pixel), ``coverage_50`` and ``coverage_90`` (central
        intervals of the samples, scored on ``reference``;
        ``coverage_<p>_nominal`` is the calibrated value, see :func:`central_coverage`), ``mean_error``, ``std_rel_error``,
        ``std_ratio`` and (with 2-D fields) ``spectrum_error``: ``name`` (model) and
        ``name_floor`` (simulator vs simulator).
    """
    x, ref, ref2 = _as_double(samples), _as_double(reference), _as_double(floor_reference)
    if not (x.ndim == ref.ndim == ref2.ndim == 2 and x.shape == ref.shape == ref2.shape):
        raise ValueError(
            f"expected three sample sets of one shape (m, D), got {tuple(x.shape)}, "
            f"{tuple(ref.shape)} and {tuple(ref2.shape)}; the floor needs equal sizes"
        )
    out: dict[str, float] = {}

    def both(name: str, fn) -> None:
        out[name], out[f"{name}_floor"] = fn(x), fn(ref2)

    mean, comps = pca_basis(ref, n_components)
    ref_pc = (ref - mean) @ comps.T
    both("energy_distance", lambda s: energy_distance((s - mean) @ comps.T, ref_pc))
    both("sliced_wasserstein", lambda s: sliced_wasserstein((s - mean) @ comps.T, ref_pc, seed=seed))
    out["energy_score"], out["energy_score_floor"] = energy_score(x, ref2), energy_score(ref, ref2)
    out["crps"], out["crps_floor"] = crps(x, ref), crps(ref2, ref)
    for level in (0.5, 0.9):
        name = f"coverage_{round(100 * level)}"
        (out[name], out[f"{name}_nominal"]), (out[f"{name}_floor"], _) = (
            central_coverage(x, ref, level),
            central_coverage(ref2, ref, level),
        )
    mu = ref.mean(0) if exact_mean is None else _as_double(exact_mean)
    sd = ref.std(0) if exact_std is None else _as_double(exact_std)
    errs, errs_floor = pixel_moment_errors(x, mu, sd), pixel_moment_errors(ref2, mu, sd)
    for name in errs:
        out[name], out[f"{name}_floor"] = errs[name], errs_floor[name]
    planar = [] if fields is None else _field_slices(fields, x.shape[1])
    if planar:
        both(
            "spectrum_error",
            lambda s: (
                sum(
                    spectrum_error(s[:, sl].reshape(-1, *shape), ref[:, sl].reshape(-1, *shape)) for sl, shape in planar
                )
                / len(planar)
            ),
        )
    return out


def _field_slices(fields: Sequence[FieldSpec], width: int) -> list[tuple[slice, tuple[int, ...]]]:
    """Column slice and shape of every 2-D field in a flattened row of ``width`` values."""
    if sum(f.size for f in fields) != width:
        raise ValueError(
            f"the fields hold {sum(f.size for f in fields)} values per sample, the "
            f"samples {width}; pass the simulation's fields"
        )
    out, start = [], 0
    for f in fields:
        if len(f.shape) == 2:
            out.append((slice(start, start + f.size), f.shape))
        start += f.size
    return out


def summarize_distribution(per_condition: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average per-condition distribution metrics and form model / floor ratios.

    Parameters
    ----------
    per_condition : sequence of dict
        Outputs of :func:`distribution_metrics`, one per condition.

    Returns
    -------
    dict
        The mean of every key, plus ``<name>_ratio = mean(name) / mean(name_floor)`` for the
        energy distance, sliced Wasserstein distance, energy score and CRPS (a ratio of means: a
        condition whose floor is tiny cannot blow it up).
    """
    if not per_condition:
        raise ValueError("no condition to summarize: pass at least one distribution_metrics result")
    keys = per_condition[0].keys()
    out = {k: sum(d[k] for d in per_condition) / len(per_condition) for k in keys}
    for name in ("energy_distance", "sliced_wasserstein", "energy_score", "crps"):
        if name in out:
            out[f"{name}_ratio"] = out[name] / out[f"{name}_floor"]
    return out


def simulator_samples(simulation, params, steps: Sequence[int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent simulator realizations at one parameter vector, at chosen steps.

    Realization ``i`` is ``simulation.run(params, seed=seed + i)``, stopped after the last step
    needed.

    Parameters
    ----------
    simulation : gensim.simulations.Simulation
    params : array_like, shape (n_params,)
    steps : sequence of int
        Step indices (``0 <= step < n_steps``).
    n : int
        Realizations.
    seed : int
        Seed of the first realization.

    Returns
    -------
    fields : Tensor, shape (len(steps), n, D), float32
        Flattened in ``simulation.fields`` order.
    times : Tensor, shape (len(steps),), float32
    """
    steps = [int(s) for s in steps]
    if not steps or min(steps) < 0 or max(steps) >= simulation.n_steps:
        raise ValueError(f"steps must lie in [0, {simulation.n_steps - 1}], got {steps}")
    wanted = {s: i for i, s in enumerate(steps)}
    size = sum(f.size for f in simulation.fields)
    out = torch.empty(len(steps), int(n), size, dtype=torch.float32)
    times = torch.empty(len(steps), dtype=torch.float32)
    for r in range(int(n)):
        for step, t, fields in simulation.run(params, seed=int(seed) + r):
            if step in wanted:
                out[wanted[step], r] = torch.from_numpy(
                    np.concatenate([np.asarray(fields[f.name], np.float32).reshape(-1) for f in simulation.fields])
                )
                times[wanted[step]] = float(t)
            if step >= max(steps):
                break
    return out, times
