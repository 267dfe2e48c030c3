"""Figures of ``gensim-report``: error against budget, held-out maps, training curves, and for
generative surrogates their law (mean and std maps, power spectra).

A generative surrogate is judged by the law it samples, not by one prediction: at a held-out
parameter vector and time, its samples are compared with as many independent realizations of the
simulator (:func:`gensim.report.scoring.law_samples`), through their pointwise mean and standard
deviation and their radially averaged power spectrum.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

from gensim.metrics import radial_power_spectrum, rank_histogram
from gensim.report.scoring import SIMULATOR
from gensim.report.studies import OFFLINE_NEURAL, ONLINE, Row
from gensim.simulations.base import FieldSpec

matplotlib.use("Agg")  # files only: the report runs on machines without a display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

_COLORS = {ONLINE: "tab:blue", OFFLINE_NEURAL: "tab:cyan", "kriging": "tab:red", "polynomial_chaos": "tab:green"}


def _color(method: str, i: int) -> str:
    return _COLORS.get(method, f"C{i + 4}")


def _by_method(rows: Sequence[Row]) -> dict[str, dict[int, list[Row]]]:
    out: dict[str, dict[int, list[Row]]] = {}
    for r in rows:
        out.setdefault(r.method, {}).setdefault(r.budget, []).append(r)
    return out


def plot_error_vs_simulations(rows: Sequence[Row], path: Path, title: str) -> None:
    """Held-out error (mean and p99 over seeds' means) vs training simulations, log-log."""
    fig, ax = plt.subplots(figsize=(8.4, 4.4), layout="constrained")
    methods = _by_method(rows)
    for i, (method, budgets) in enumerate(methods.items()):
        b = sorted(budgets)
        for key, style, label in (("val_rel_l2_mean", "-o", "mean"), ("val_rel_l2_p99", ":", "p99")):
            y = [np.mean([r.metrics[key] for r in budgets[k]]) for k in b]
            ax.plot(b, y, style, color=_color(method, i), label=f"{method} ({label})")
    first = next(iter(methods.values()))
    b = sorted(first)
    ax.plot(
        b,
        [np.mean([r.metrics["trivial_rel_l2_mean"] for r in first[k]]) for k in b],
        "--",
        color="0.5",
        label="trivial: training mean field",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(b)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training simulations (budget)")
    ax.set_ylabel("held-out relative L2 error (dimensionless)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _field_view(flat: np.ndarray, spec: FieldSpec) -> np.ndarray:
    """The first field of a flattened sample, in its own shape (2-D fields as images)."""
    return flat[: spec.size].reshape(spec.shape)


def _is_map(spec: FieldSpec) -> bool:
    """Whether the field is drawn as a colour map: a 2-D grid, or node values on a 2-D triangle mesh."""
    if spec.mesh is not None:
        return spec.mesh.dim == 2 and spec.mesh.cells is not None
    return len(spec.shape) == 2


def _draw_map(ax, values: np.ndarray, spec: FieldSpec, **style):
    """Draw one field as a colour map on ``ax``: an image of a grid, a triangulated plot of a mesh.

    A mesh field is drawn with ``tripcolor`` (Gouraud shading: linear between the nodes, the P1
    interpolation of node values); axes in the mesh's coordinates. Returns the mappable.
    """
    if spec.mesh is None:
        im = ax.imshow(values, origin="lower", **style)
        ax.set_xlabel("x (grid index)", fontsize=7)
        ax.set_ylabel("y (grid index)", fontsize=7)
    else:
        nodes = spec.mesh.nodes
        im = ax.tripcolor(nodes[:, 0], nodes[:, 1], spec.mesh.cells, values, shading="gouraud", **style)
        ax.set_aspect("equal")
        ax.set_xlabel("x", fontsize=7)
        ax.set_ylabel("y", fontsize=7)
    ax.tick_params(labelsize=6)
    return im


def plot_heldout_cases(
    truth: np.ndarray,
    preds: Mapping[str, np.ndarray],
    spec: FieldSpec,
    time: float,
    path_fields: Path,
    path_errors: Path,
    title: str,
) -> None:
    """Truth and predictions of held-out cases, and the prediction errors, at one time step.

    Parameters
    ----------
    truth : ndarray, shape (n_cases, D)
    preds : mapping of str to ndarray, shape (n_cases, D)
        Method -> predictions.
    spec : FieldSpec
        The first field, the one shown.
    """
    n_cases, methods = truth.shape[0], list(preds)
    two_d = _is_map(spec)
    unit = f"{spec.name} (problem units)"
    if two_d:
        fig, axes = plt.subplots(
            1 + len(methods),
            n_cases,
            figsize=(2.6 * n_cases + 1, 2.3 * (1 + len(methods))),
            squeeze=False,
            layout="constrained",
        )
        for c in range(n_cases):
            views = [_field_view(truth[c], spec)] + [_field_view(preds[m][c], spec) for m in methods]
            lo, hi = min(v.min() for v in views), max(v.max() for v in views)
            for r, (name, v) in enumerate(zip(["truth", *methods], views)):
                ax = axes[r, c]
                im = _draw_map(ax, v, spec, vmin=lo, vmax=hi, cmap="inferno")
                ax.set_title(f"{name}, case {c + 1}", fontsize=8)
            fig.colorbar(im, ax=axes[:, c], shrink=0.6).set_label(unit, fontsize=7)
    else:
        fig, axes = plt.subplots(1, n_cases, figsize=(3.6 * n_cases, 3.4), squeeze=False, layout="constrained")
        for c in range(n_cases):
            ax = axes[0, c]
            ax.plot(_field_view(truth[c], spec), "k-", lw=2.5, label="truth")
            for i, m in enumerate(methods):
                ax.plot(_field_view(preds[m][c], spec), "--", color=_color(m, i), label=m)
            ax.set_xlabel("grid index")
            ax.set_ylabel(unit)
            ax.set_title(f"case {c + 1}", fontsize=9)
        axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{title}: held-out fields at t = {time:.3g}", fontsize=10)
    fig.savefig(path_fields, dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(
        len(methods) if two_d else 1,
        n_cases,
        squeeze=False,
        layout="constrained",
        figsize=(2.9 * n_cases + 0.5, 2.4 * len(methods)) if two_d else (3.6 * n_cases, 3.4),
    )
    for c in range(n_cases):
        t_view = _field_view(truth[c], spec)
        for r, m in enumerate(methods):
            err = _field_view(preds[m][c], spec) - t_view
            rel = np.linalg.norm(err) / np.linalg.norm(t_view)
            if two_d:
                ax = axes[r, c]
                bound = float(np.abs(err).max()) or 1.0
                im = _draw_map(ax, err, spec, cmap="RdBu_r", vmin=-bound, vmax=bound)
                ax.set_title(f"{m}, case {c + 1}\nrel. L2 {rel:.2e}", fontsize=7)
                fig.colorbar(im, ax=ax, shrink=0.8).set_label(f"prediction - truth\n({unit})", fontsize=6)
            else:
                axes[0, c].plot(err, color=_color(m, r), label=f"{m} (rel. L2 {rel:.1e})")
        if not two_d:
            axes[0, c].set_xlabel("grid index")
            axes[0, c].set_ylabel(f"prediction - truth ({spec.name}, problem units)")
            axes[0, c].legend(fontsize=6)
    fig.suptitle(f"{title}: prediction errors at t = {time:.3g} (own color scale per panel)", fontsize=10)
    fig.savefig(path_errors, dpi=100)
    plt.close(fig)


def _read_log(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Lightning CSV log -> metric name -> (steps, values), rows where the metric is set."""
    if not path.is_file():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    out = {}
    for key in ("train_loss", "val_rel_l2_mean", "train_rel_l2_mean"):
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            out[key] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    return out


def plot_training_curves(logs: Mapping[tuple[str, int], Path], path: Path, title: str) -> None:
    """Held-out error and training loss vs optimizer step of the neural surrogates (on-line and off-line)."""
    fig, (ax_val, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    budgets = sorted({b for _, b in logs})
    for (method, budget), log_path in logs.items():
        curves = _read_log(log_path)
        style = "-" if method == ONLINE else "--"
        color = plt.cm.viridis(budgets.index(budget) / max(len(budgets) - 1, 1) * 0.85)
        for ax, key in ((ax_val, "val_rel_l2_mean"), (ax_loss, "train_loss")):
            if key in curves:
                ax.plot(
                    *curves[key],
                    style,
                    color=color,
                    label=f"{method}, {budget} sims",
                    marker="o" if key == "val_rel_l2_mean" else None,
                    ms=3,
                )
        # The training error beside the held-out one: curves that meet show under-training.
        if "train_rel_l2_mean" in curves:
            ax_val.plot(*curves["train_rel_l2_mean"], style, color=color, marker="x", ms=3, lw=0.8, alpha=0.6)
    ax_val.set_ylabel("relative L2 error (o held-out, x training rows)")
    ax_loss.set_ylabel("training loss (MSE, normalized units)")
    for ax in (ax_val, ax_loss):
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}: training curves (solid: on-line stream, dashed: off-line epochs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _style(name: str, i: int) -> dict:
    """Line style of a source: the simulator solid black, the models dashed in colour."""
    if name == SIMULATOR:
        return {"color": "k", "linestyle": "-", "linewidth": 2.2}
    return {"color": f"C{i}", "linestyle": "--", "linewidth": 1.4}


def _views(flat: np.ndarray, spec: FieldSpec) -> np.ndarray:
    """The first field of flattened samples (n, D), shape (n, *spec.shape)."""
    return flat[:, : spec.size].reshape(-1, *spec.shape)


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
        fig, axes = plt.subplots(
            len(moments), 2, figsize=(6.4, 2.5 * len(moments)), squeeze=False, layout="constrained"
        )
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


def plot_rank_histograms(
    samples: Mapping[str, np.ndarray], spec: FieldSpec, t: float, path: Path, title: str, n_bins: int = 16
) -> None:
    """Rank histograms of simulator realizations among each source's samples, pixel by pixel.

    The simulator's realizations are split in two halves: the second half is observed, and
    ranked among the first ``n / 2`` samples of each source. The simulator's own first half gives
    the reference histogram (flat up to sampling noise, which it shows); a model's is U-shaped
    when it is under-dispersed, dome-shaped when over-dispersed, sloped when its mean is biased.

    Parameters
    ----------
    samples : mapping of str to ndarray, shape (n, D)
        From :func:`gensim.report.scoring.law_samples`: the simulator first, ``n >= 4``.
    n_bins : int
        Bins over the ranks (fewer when ``n / 2 + 1`` ranks are fewer).
    """
    reference = samples[SIMULATOR]
    half = len(reference) // 2
    observed = reference[half:, : spec.size]
    n_bins = min(n_bins, half + 1)  # no more bins than possible ranks
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    for i, (name, s) in enumerate(samples.items()):
        heights = rank_histogram(s[:half, : spec.size], observed, n_bins=n_bins)
        ax.step(np.arange(n_bins + 1), np.r_[heights, heights[-1]], where="post", label=name, **_style(name, i))
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel(f"rank of a realization among {half} samples ({n_bins} bins, low to high)")
    ax.set_ylabel("count / uniform count")
    ax.set_title(f"{title}: rank histograms at t = {t:.3g}, pixels of {spec.name!r}", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
