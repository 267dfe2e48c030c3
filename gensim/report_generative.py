"""Figures of ``gensim-report`` for generative surrogates: mean and std maps and power spectra.

A generative surrogate is judged by the law it samples, not by one prediction: at a held-out
parameter vector and time, its samples are compared with as many independent realizations of the
simulator (:func:`gensim.metrics.simulator_samples`), through their pointwise mean and standard
deviation and their radially averaged power spectrum.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
import torch

from gensim.metrics import radial_power_spectrum, simulator_samples
from gensim.simulations.base import FieldSpec, Simulation

matplotlib.use("Agg")  # files only: the report runs on machines without a display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

SIMULATOR = "simulator"


def law_samples(simulation: Simulation, models: Mapping[str, torch.nn.Module], params: np.ndarray, step: int,
                n: int, seed: int) -> tuple[dict[str, np.ndarray], float]:
    """Simulator realizations and model samples at one parameter vector and time step.

    Parameters
    ----------
    simulation : Simulation
    models : mapping of str to a generative surrogate
        Each has ``sample(params (1, P), t (1,), n) -> (1, n, D)``.
    params : ndarray, shape (P,)
    step : int
        Time step index.
    n : int
        Realizations and samples per source.
    seed : int
        Seed of the first simulator realization (they use consecutive seeds) and of the latents.

    Returns
    -------
    samples : dict of str to ndarray, shape (n, D)
        ``"simulator"`` first, then one entry per model, flattened in field order.
    t : float
        The time of ``step``.
    """
    reference, times = simulator_samples(simulation, params, [step], n, seed)
    samples = {SIMULATOR: reference[0].numpy()}
    t = times[:1]
    p = torch.as_tensor(np.asarray(params, dtype=np.float32))[None]
    for name, model in models.items():
        with torch.no_grad():
            drawn = model.sample(p, t, n, generator=torch.Generator().manual_seed(seed))
        samples[name] = drawn[0].numpy()
    return samples, float(times[0])


def _style(name: str, i: int) -> dict:
    """Line style of a source: the simulator solid black, the models dashed in colour."""
    if name == SIMULATOR:
        return {"color": "k", "linestyle": "-", "linewidth": 2.2}
    return {"color": f"C{i}", "linestyle": "--", "linewidth": 1.4}


def _views(flat: np.ndarray, spec: FieldSpec) -> np.ndarray:
    """The first field of flattened samples (n, D), shape (n, *spec.shape)."""
    return flat[:, :spec.size].reshape(-1, *spec.shape)


def plot_moments(samples: Mapping[str, np.ndarray], spec: FieldSpec, t: float, path: Path, title: str) -> None:
    """Pointwise mean and standard deviation maps of each source, one row per source.

    Parameters
    ----------
    samples : mapping of str to ndarray, shape (n, D)
        From :func:`law_samples`.
    spec : FieldSpec
        The first field, the one shown; 2-D fields are images, 1-D fields curves.
    """
    moments = {name: (_views(s, spec).mean(0), _views(s, spec).std(0, ddof=1)) for name, s in samples.items()}
    n = next(iter(samples.values())).shape[0]
    unit = f"{spec.name} (problem units)"
    if len(spec.shape) == 2:
        fig, axes = plt.subplots(len(moments), 2, figsize=(6.4, 2.5 * len(moments)), squeeze=False,
                                 layout="constrained")
        for col, label in enumerate(("mean", "std")):
            values = [m[col] for m in moments.values()]
            lo, hi = min(v.min() for v in values), max(v.max() for v in values)
            for row, (name, v) in enumerate(zip(moments, values)):
                ax = axes[row, col]
                im = ax.imshow(v, origin="lower", vmin=lo, vmax=hi, cmap="inferno" if col == 0 else "viridis")
                ax.set_title(f"{name}: pointwise {label}", fontsize=8)
                ax.set_xlabel("x (grid index)", fontsize=7)
                ax.set_ylabel("y (grid index)", fontsize=7)
                ax.tick_params(labelsize=6)
            fig.colorbar(im, ax=axes[:, col], shrink=0.6).set_label(f"{label} of {unit}", fontsize=7)
    else:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), squeeze=False, layout="constrained")
        for col, label in enumerate(("mean", "std")):
            for i, (name, m) in enumerate(moments.items()):
                axes[0, col].plot(m[col], label=name, **_style(name, i))
            axes[0, col].set_xlabel("grid index")
            axes[0, col].set_ylabel(f"{label} of {unit}")
        axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{title}: {n} samples per source at t = {t:.3g}", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_spectra(samples: Mapping[str, np.ndarray], spec: FieldSpec, t: float, path: Path, title: str) -> None:
    """Radially averaged power spectrum of the fluctuations (samples minus their mean), log-log.

    The mean is removed so that the curves compare the variability the models generate, which the
    mean maps of :func:`plot_moments` do not show. Only for 2-D fields.
    """
    if len(spec.shape) != 2:
        raise ValueError(f"power spectra need a 2-D field, got {spec.name!r} of shape {spec.shape}")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for i, (name, s) in enumerate(samples.items()):
        fields = _views(s, spec)
        power = radial_power_spectrum(fields - fields.mean(0, keepdims=True)).numpy()
        k = np.arange(len(power))
        ax.plot(k[1:], power[1:], label=name, **_style(name, i))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wavenumber |k| (cycles per domain length)")
    ax.set_ylabel(f"power of the fluctuations ({spec.name} units squared)")
    ax.set_title(f"{title}: power spectrum at t = {t:.3g}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
