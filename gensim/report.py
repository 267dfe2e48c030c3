"""``gensim-report``: on-line studies at several budgets, off-line baselines on the same data, one report.

For a problem and a list of budgets (training simulations per study), ``gensim-report``

1. runs one ``gensim-train`` study per (budget, seed) through :mod:`gensim.compare`; a finished
   study (its ``metrics.json`` exists) is read back instead;
2. re-simulates each study's training and held-out simulations (from its ``simulations.json``)
   and fits the off-line baselines on them: Kriging, polynomial chaos and the same neural
   surrogate trained off-line, each a study of its own with a ``metrics.json``
   (:func:`gensim.compare.cached_study`);
3. writes ``<out_dir>/report.md`` (tables, PNG figures), ``metrics.json`` (every number of the
   tables, with the run directory it comes from) and ``config.yaml`` (the resolved config).

Examples::

    gensim-report                                    # reports/heat2d, the committed report
    gensim-report problem=decaying_wave budgets=[8,16] train.trainer.max_steps=200 out_dir=/tmp/dw
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import hydra
import matplotlib
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gensim.baselines import OfflineSurrogate, SimulationSet, SnapshotLayout, study_config, study_simulations
from gensim.compare import StudyResult, cached_study, markdown_table, run_comparison
from gensim.metrics import relative_l2, summarize_errors
from gensim.report_generative import law_samples, plot_moments, plot_spectra
from gensim.simulations.base import FieldSpec

matplotlib.use("Agg")  # files only: the report runs on machines without a display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

log = logging.getLogger("gensim.report")

ONLINE = "on-line"
OFFLINE_NEURAL = "off-line neural"


@dataclass
class Row:
    """One table row: a method at one budget and seed, and the run directory its numbers come from.

    ``cases`` is the ``cases.npz`` holding its predictions of the figure cases.
    """

    method: str
    budget: int
    seed: int
    run_dir: Path
    metrics: dict
    cases: Path


class StudyData:
    """The simulations of one on-line study, re-simulated on first use only (a cached report needs none)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.config = study_config(run_dir)

    @cached_property
    def simulation(self):
        return instantiate(self.config.simulation)

    @cached_property
    def train(self) -> SimulationSet:
        sims, info = study_simulations(self.run_dir, "train")
        log.info("%s: %d training simulations re-simulated", self.run_dir, info["used"])
        return sims

    @cached_property
    def heldout(self) -> SimulationSet:
        return study_simulations(self.run_dir, "validation")[0]


def flatten_overrides(node: Mapping, prefix: str = "") -> list[str]:
    """Nested mapping -> Hydra overrides: ``{"trainer": {"max_steps": 10}}`` -> ``["trainer.max_steps=10"]``."""
    out = []
    for key, value in node.items():
        if isinstance(value, Mapping):
            out += flatten_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value) if isinstance(value, (list, str)) else value}")
    return out


def score(pred: np.ndarray, sims: SimulationSet, fields: Sequence[FieldSpec], train_mean: np.ndarray) -> dict:
    """Held-out relative L2 (mean, p99) of a prediction and of the trivial predictor.

    Parameters
    ----------
    pred : ndarray, shape (S, T, D)
    sims : SimulationSet
        The truth, fields (S, T, D).
    fields : sequence of FieldSpec
    train_mean : ndarray, shape (D,)
        Mean training field (the trivial predictor).
    """
    true = torch.from_numpy(sims.fields.reshape(-1, sims.fields.shape[-1]))
    ours = summarize_errors(relative_l2(torch.from_numpy(pred.reshape(true.shape)), true, fields))
    trivial = summarize_errors(relative_l2(torch.from_numpy(train_mean).expand_as(true), true, fields))
    return {"val_rel_l2_mean": ours["mean"], "val_rel_l2_p99": ours["p99"],
            "trivial_rel_l2_mean": trivial["mean"], "trivial_rel_l2_p99": trivial["p99"]}


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def best_time(predict: Callable[[], np.ndarray], repeats: int = 3) -> tuple[np.ndarray, float]:
    """Run ``predict`` once to warm up, then ``repeats`` times; return its output and the best time (s).

    The best of a few runs, after a warm-up, measures the inference itself rather than first-call
    allocations or a busy neighbour on a shared machine.
    """
    out = predict()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        predict()
        best = min(best, time.perf_counter() - start)
    return out, best


#: Fitted attributes of the baselines worth recording in their metrics.json.
_ESTIMATOR_INFO = ("n_components_", "n_samples_seen_", "n_samples_fit_", "subsampled_", "degrees_")


def fit_baseline(estimator, layout, data: StudyData, run_dir: Path, cases: np.ndarray, step: int,
                 eval_set: bool = False) -> dict:
    """Fit a baseline on a study's training simulations and score it on its held-out ones.

    Writes ``cases.npz`` (the predictions of the figure cases at ``step``) to ``run_dir``.

    Returns
    -------
    dict
        The scores of :func:`score`, ``fit_s``, ``predict_s_per_field``, the training-set sizes and
        the estimator's fitted sizes (modes, Gaussian-process rows, degrees).
    """
    train, heldout = data.train, data.heldout
    X, Y = layout.xy(train)
    kwargs = {"eval_set": layout.xy(heldout)} if eval_set else {}
    start = time.perf_counter()
    estimator.fit(X, Y, **kwargs)
    fit_s = time.perf_counter() - start
    pred, predict_s = best_time(lambda: layout.predict(estimator, heldout))
    np.savez_compressed(run_dir / "cases.npz", sim_ids=heldout.sim_ids[cases], step=step,
                        pred=pred[cases, step].astype(np.float32))
    fields = data.simulation.fields
    metrics = score(pred, heldout, fields, train.fields.reshape(-1, train.fields.shape[-1]).mean(0, dtype=np.float64))
    info = {k: _jsonable(getattr(estimator, k)) for k in _ESTIMATOR_INFO if hasattr(estimator, k)}
    return metrics | info | {"fit_s": fit_s, "predict_s_per_field": predict_s / heldout.fields[:, :, 0].size,
                             "n_train_simulations": len(train), "n_train_rows": len(X), "layout": repr(layout)}


def load_surrogate(data: StudyData) -> torch.nn.Module:
    """An on-line study's final surrogate, from its config and last checkpoint, in eval mode."""
    model = instantiate(data.config.model)(fields=data.simulation.fields, n_params=data.simulation.space.dim)
    ckpt = torch.load(data.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def evaluate_online(data: StudyData, run_dir: Path, cases: np.ndarray, step: int) -> dict:
    """Reload an on-line study's final surrogate, time it and re-score it on re-simulated held-out data.

    The recomputed error must equal the study's own (same simulations, same metric): it checks that
    the off-line baselines are scored on the held-out set the on-line surrogate was scored on.
    For a generative surrogate the prediction is its mean prediction.
    """
    model = load_surrogate(data)
    heldout = data.heldout
    params, t, fields = heldout.snapshots()
    params_t, t_t = torch.from_numpy(params.astype(np.float32)), torch.from_numpy(t.astype(np.float32))

    @torch.no_grad()
    def predict() -> np.ndarray:
        return torch.cat([model(p, tt) for p, tt in zip(params_t.split(1024), t_t.split(1024))]).numpy()

    pred, predict_s = best_time(predict)
    pred = pred.reshape(heldout.fields.shape)
    np.savez_compressed(run_dir / "cases.npz", sim_ids=heldout.sim_ids[cases], step=step,
                        pred=pred[cases, step].astype(np.float32))
    errors = summarize_errors(relative_l2(torch.from_numpy(pred.reshape(fields.shape)), torch.from_numpy(fields),
                                          data.simulation.fields))
    return {"predict_s_per_field": predict_s / len(params), "val_rel_l2_mean_recomputed": errors["mean"]}


def offline_neural(data: StudyData, seed: int, run_dir: Path) -> OfflineSurrogate:
    """The study's own model and trainer, same steps and batch size, trained by epochs off-line."""
    cfg = data.config
    return OfflineSurrogate(model=instantiate(cfg.model), trainer=instantiate(cfg.trainer),
                            fields=data.simulation.fields, max_steps=int(cfg.trainer.max_steps),
                            batch_size=int(cfg.data.batch_size), val_every_n_steps=int(cfg.data.steps_per_epoch),
                            seed=seed, log_dir=str(run_dir))


# -- figures ------------------------------------------------------------------------------------
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
    ax.plot(b, [np.mean([r.metrics["trivial_rel_l2_mean"] for r in first[k]]) for k in b], "--", color="0.5",
            label="trivial: training mean field")
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
    return flat[:spec.size].reshape(spec.shape)


def plot_heldout_cases(truth: np.ndarray, preds: Mapping[str, np.ndarray], spec: FieldSpec, time: float,
                       path_fields: Path, path_errors: Path, title: str) -> None:
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
    two_d = len(spec.shape) == 2
    unit = f"{spec.name} (problem units)"
    if two_d:
        fig, axes = plt.subplots(1 + len(methods), n_cases, figsize=(2.6 * n_cases + 1, 2.3 * (1 + len(methods))),
                                 squeeze=False, layout="constrained")
        for c in range(n_cases):
            views = [_field_view(truth[c], spec)] + [_field_view(preds[m][c], spec) for m in methods]
            lo, hi = min(v.min() for v in views), max(v.max() for v in views)
            for r, (name, v) in enumerate(zip(["truth", *methods], views)):
                ax = axes[r, c]
                im = ax.imshow(v, origin="lower", vmin=lo, vmax=hi, cmap="inferno")
                ax.set_title(f"{name}, case {c + 1}", fontsize=8)
                ax.set_xlabel("x (grid index)", fontsize=7)
                ax.set_ylabel("y (grid index)", fontsize=7)
                ax.tick_params(labelsize=6)
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

    fig, axes = plt.subplots(len(methods) if two_d else 1, n_cases, squeeze=False, layout="constrained",
                             figsize=(2.9 * n_cases + 0.5, 2.4 * len(methods)) if two_d else (3.6 * n_cases, 3.4))
    for c in range(n_cases):
        t_view = _field_view(truth[c], spec)
        for r, m in enumerate(methods):
            err = _field_view(preds[m][c], spec) - t_view
            rel = np.linalg.norm(err) / np.linalg.norm(t_view)
            if two_d:
                ax = axes[r, c]
                bound = float(np.abs(err).max()) or 1.0
                im = ax.imshow(err, origin="lower", cmap="RdBu_r", vmin=-bound, vmax=bound)
                ax.set_title(f"{m}, case {c + 1}\nrel. L2 {rel:.2e}", fontsize=7)
                ax.set_xlabel("x (grid index)", fontsize=7)
                ax.set_ylabel("y (grid index)", fontsize=7)
                ax.tick_params(labelsize=6)
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
                ax.plot(*curves[key], style, color=color, label=f"{method}, {budget} sims",
                        marker="o" if key == "val_rel_l2_mean" else None, ms=3)
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


# -- the report ---------------------------------------------------------------------------------
def _cases(data: StudyData, n_cases: int, step: int | None) -> tuple[np.ndarray, int]:
    """The held-out simulations (indices) and the time step shown in the maps."""
    records = json.loads((data.run_dir / "simulations.json").read_text())
    n_heldout = sum(r["purpose"] == "validation" and r["state"] == "done" for r in records)
    return np.arange(min(n_cases, n_heldout)), data.simulation.n_steps // 10 if step is None else int(step)


def _timed(compute: Callable[[Path], dict]) -> Callable[[Path], dict]:
    """``compute`` that also records its own duration (``compute_s``, re-simulation included)."""

    def run(run_dir: Path) -> dict:
        start = time.perf_counter()
        return compute(run_dir) | {"compute_s": time.perf_counter() - start}

    return run


def online_variants(cfg: DictConfig) -> dict[str, tuple[str, list[str]]]:
    """Run-directory name -> (method name, extra gensim-train overrides) of every on-line variant.

    The deterministic surrogate of the study config (``online``), then one variant per model config
    named in ``cfg.generative`` (``online_<model>``, trained with ``model=<model>`` plus
    ``cfg.generative_overrides[<model>]``).
    """
    variants = {"online": (ONLINE, [])}
    for name in cfg.generative:
        extra = list(cfg.generative_overrides.get(name) or [])
        variants[f"online_{name}"] = (f"{ONLINE} {name}", [f"model={name}", *extra])
    return variants


def build_rows(cfg: DictConfig) -> tuple[list[Row], dict[int, StudyData], dict]:
    """Run (or read back) every study of the report and return its rows.

    Returns
    -------
    rows : list of Row
    studies : dict
        Budget -> the deterministic on-line study of the first seed (the baselines' data).
    figure : dict
        ``cases`` and ``step`` of the maps; ``generative``: method -> the study at the largest budget.
    """
    runs = Path(cfg.runs_dir)
    common = [f"simulation={cfg.problem}", f"buffer={cfg.buffer}",
              *flatten_overrides(OmegaConf.to_container(cfg.train, resolve=True))]
    rows: list[Row] = []
    studies: dict[int, StudyData] = {}
    figure: dict = {"generative": {}}
    for dirname, (method, extra) in online_variants(cfg).items():
        online = run_comparison(runs / dirname,
                                {f"n{b}": [f"launcher.max_simulations={b}", *extra] for b in cfg.budgets},
                                seeds=list(cfg.seeds), common=common, timeout_s=cfg.study_timeout_s)
        for res in online:
            budget, seed = int(res.variant[1:]), res.seed
            rows_of_study, data = _online_rows(cfg, runs, dirname, method, res, figure)
            rows += rows_of_study
            if dirname == "online":
                studies.setdefault(budget, data)
            elif budget == max(cfg.budgets) and seed == cfg.seeds[0]:
                figure["generative"][method] = data
    rows.sort(key=lambda r: r.budget)  # stable: within a budget, on-line variants then baselines
    return rows, studies, figure


def _online_rows(cfg: DictConfig, runs: Path, dirname: str, method: str, res: StudyResult,
                 figure: dict) -> tuple[list[Row], StudyData]:
    """The row of one on-line study and, for the deterministic variant, the baselines on its simulations."""
    budget, seed = int(res.variant[1:]), res.seed
    data = StudyData(res.run_dir)
    cases, step = _cases(data, cfg.figure_cases, cfg.figure_step)
    figure |= {"cases": cases, "step": step}
    where = f"n{budget}/seed{seed}"
    check = cached_study(runs / f"{dirname}_eval" / where, _timed(lambda d: evaluate_online(data, d, cases, step)))
    rows = [Row(method, budget, seed, res.run_dir,
                res.metrics | check | {"fit_s": res.metrics["wall_s"], "compute_s": res.metrics["wall_s"]
                                       + check.get("compute_s", 0.0),
                                       "n_train_simulations": res.metrics["simulations_finished"]},
                runs / f"{dirname}_eval" / where / "cases.npz")]
    if dirname == "online":
        for name, spec in cfg.baselines.items():
            run_dir = runs / name / where

            def compute(d: Path, spec=spec) -> dict:
                return fit_baseline(instantiate(spec.estimator), instantiate(spec.layout), data, d, cases, step)

            rows.append(Row(name, budget, seed, run_dir, cached_study(run_dir, _timed(compute)),
                            run_dir / "cases.npz"))
        if cfg.offline_neural:
            run_dir = runs / "offline_neural" / where
            metrics = cached_study(run_dir, _timed(lambda d: fit_baseline(
                offline_neural(data, seed, d), SnapshotLayout(), data, d, cases, step, eval_set=True)))
            rows.append(Row(OFFLINE_NEURAL, budget, seed, run_dir, metrics, run_dir / "cases.npz"))
    return rows, data


def _md_config(node) -> str:
    return ", ".join(f"{k}={v}" for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_")


def write_report(cfg: DictConfig, rows: list[Row], studies: dict[int, StudyData], figure: dict, command: str,
                 wall_s: float, computed: int) -> Path:
    """Write report.md, the figures, metrics.json and config.yaml into ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = str(cfg.study)
    largest = max(studies)
    data = studies[largest]
    study_cfg = data.config
    spec = data.simulation.fields[0]

    plot_error_vs_simulations(rows, out / "error_vs_simulations.png", title)
    cases, step = figure["cases"], figure["step"]
    heldout = data.heldout
    preds = {}
    for r in rows:
        if r.budget == largest and r.seed == rows[0].seed:
            preds[r.method] = np.load(r.cases)["pred"]
    plot_heldout_cases(heldout.fields[cases, step], preds, spec, float(heldout.times[step]),
                       out / "heldout_fields.png", out / "heldout_errors.png", f"{title}, {largest} simulations")
    logs = {(r.method, r.budget): r.run_dir / "logs" / "metrics.csv" for r in rows
            if r.method in (ONLINE, OFFLINE_NEURAL) and r.seed == rows[0].seed}
    plot_training_curves(logs, out / "training_curves.png", title)

    results = [StudyResult(f"{r.method}, {r.budget} sims", r.seed, r.run_dir, r.metrics
                           | {"predict_ms_per_field": 1e3 * r.metrics["predict_s_per_field"]}) for r in rows]
    table = markdown_table(results, {"val_rel_l2_mean": "held-out rel. L2 mean", "val_rel_l2_p99": "p99",
                                     "trivial_rel_l2_mean": "trivial mean", "fit_s": "fit / train time (s)",
                                     "predict_ms_per_field": "inference (ms / field, best of 3)"},
                           fmt=".3g", relative_to=out if Path(cfg.runs_dir).is_relative_to(out) else None)
    records = json.loads((data.run_dir / "simulations.json").read_text())
    done = [r for r in records if r["purpose"] == "train" and r["state"] == "done"]
    sim_ms = 1e3 * sum(r["seconds"] for r in done) / max(sum(r["steps"] for r in done), 1)
    drift = max(abs(r.metrics["val_rel_l2_mean_recomputed"] - r.metrics["val_rel_l2_mean"]) for r in rows
                if "val_rel_l2_mean_recomputed" in r.metrics)
    kriging_notes = []
    for r in rows:
        if "n_samples_fit_" in r.metrics:
            seen, fit = r.metrics["n_samples_seen_"], r.metrics["n_samples_fit_"]
            sub = f"**subsampled**: {fit} of {seen} rows" if r.metrics.get("subsampled_") else f"all {seen} rows"
            kriging_notes.append(f"{r.method} at {r.budget} simulations: Gaussian processes fitted on {sub}, "
                                 f"{r.metrics['n_components_']} POD modes ({r.metrics['layout']})")
        if "degrees_" in r.metrics:
            kriging_notes.append(f"{r.method} at {r.budget} simulations: {r.metrics['n_components_']} POD modes, "
                                 f"degrees chosen by cross-validation {sorted(set(r.metrics['degrees_']))} "
                                 f"({r.metrics['layout']})")
    best = []
    for budget in sorted(studies):
        at = [r for r in rows if r.budget == budget]
        winner = min(at, key=lambda r: r.metrics["val_rel_l2_mean"])
        best.append(f"{budget} simulations: **{winner.method}** ({winner.metrics['val_rel_l2_mean']:.3g})")
    n_heldout, n_steps = heldout.fields.shape[:2]
    load = os.getloadavg()[2]
    train_overrides = flatten_overrides(OmegaConf.to_container(cfg.train, resolve=True))
    steps, batch = int(study_cfg.trainer.max_steps), int(study_cfg.data.batch_size)
    buffer = study_cfg.buffer.get("policy", study_cfg.buffer).get("_target_")
    total_s = sum(r.metrics.get("compute_s", 0.0) for r in rows)
    lines = [
        f"# {title}: on-line neural surrogate vs Kriging, polynomial chaos and off-line training",
        "",
        "Regenerate from scratch (from the repository root):",
        "",
        "```bash",
        f"rm -rf {cfg.runs_dir} && {command}",
        "```",
        "",
        f"Regenerating it from scratch takes **{total_s / 60:.0f} min** on this machine ({os.cpu_count()} CPU "
        f"cores): the sum of the recorded times of its studies (re-simulations included). The last "
        f"invocation took {wall_s / 60:.1f} min ({computed} studies computed, the others read back); the 15-minute "
        f"load average at its end was {load:.1f} (above {os.cpu_count()}, other jobs shared the CPUs and every "
        "time below is inflated). Without the `rm`, finished studies are read back and only the report is "
        "rewritten.",
        "",
        "## Setup",
        "",
        f"- Problem `{cfg.problem}`: {_md_config(study_cfg.simulation)}; field `{spec.name}` of shape "
        f"{list(spec.shape)}, {n_steps} time steps per simulation.",
        f"- Budgets (training simulations per study): {', '.join(str(b) for b in sorted(studies))}; seeds: "
        f"{', '.join(str(s) for s in cfg.seeds)}. Training designs: `{study_cfg.sampler._target_}` with the "
        "study seed.",
        f"- Held-out set: the {n_heldout} validation simulations of each study "
        f"({study_cfg.data.validation_sampler._target_}, seed {study_cfg.data.validation_sampler.seed}), all "
        f"{n_steps} steps: the same set for every method. Re-simulating it reproduces the on-line studies' "
        f"held-out error to {drift:.1e}.",
        "- Metric: relative L2 error per field, per held-out (simulation, time step); mean and 99th percentile "
        "(`gensim.metrics.relative_l2`). *Trivial*: the training mean field.",
        f"- **{ONLINE}**: `gensim-train` with `{' '.join(train_overrides)}` ({steps} optimizer steps, batch "
        f"{batch}, buffer of {int(study_cfg.buffer.capacity)} samples, `{buffer}`); its time is the whole "
        "study: simulations stream while it trains.",
    ]
    for dirname, (method, extra) in online_variants(cfg).items():
        if dirname != "online":
            lines.append(f"- **{method}**: the same on-line study with `{' '.join(extra)}`, a generative surrogate; "
                         "its row scores its mean prediction, and the section *Generative surrogates* its law.")
    if cfg.offline_neural:
        lines.append(f"- **{OFFLINE_NEURAL}**: the same model and trainer, the same {steps} steps and batch size, "
                     "on shuffled passes over the stored simulations (re-simulated from the study's "
                     "`simulations.json`); its time is the training only.")
    for name, spec_b in cfg.baselines.items():
        lines.append(f"- **{name}**: `{spec_b.estimator._target_}` ({_md_config(spec_b.estimator)}), "
                     f"layout `{spec_b.layout._target_.rsplit('.', 1)[-1]}`; its time is the fit only.")
    lines += [f"- {n}" for n in kriging_notes]
    lines += [
        f"- One simulation step costs {sim_ms:.3g} ms (mean over the {largest}-simulation study's workers), to "
        "compare with the inference times below.",
        "",
        "## Held-out error and cost",
        "",
        table,
        "",
        "Lowest held-out mean error per budget: " + "; ".join(best) + ".",
        "",
        "## Figures",
        "",
        "Held-out error vs number of training simulations (log-log; solid: mean, dotted: p99):",
        "",
        "![error vs simulations](error_vs_simulations.png)",
        "",
        f"Held-out cases at t = {float(heldout.times[step]):.3g} (step {step}), {largest} training simulations: "
        "fields, then errors (prediction - truth) on their own color scales:",
        "",
        "![held-out fields](heldout_fields.png)",
        "",
        "![held-out errors](heldout_errors.png)",
        "",
        "Training curves of the neural surrogates:",
        "",
        "![training curves](training_curves.png)",
        "",
        *generative_section(cfg, rows, figure, spec, out, title),
        "Every number above comes from the `metrics.json` of the run directory named in its row "
        "(all of them are collected in this folder's `metrics.json`); `config.yaml` is the resolved report config.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    (out / "metrics.json").write_text(json.dumps({
        "command": command, "wall_s": wall_s, "studies_computed": computed, "load_average_15min": load,
        "regenerate_s": total_s,
        "simulation_s_per_field": sim_ms / 1e3, "heldout_recomputation_max_abs_diff": drift,
        "rows": [{"method": r.method, "budget": r.budget, "seed": r.seed, "run_dir": str(r.run_dir),
                  "metrics": r.metrics} for r in rows]}, indent=1))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out / "report.md"


#: Distribution metrics of the generative surrogates' metrics.json (gensim.models.generative), by column.
GENERATIVE_COLUMNS = {
    "energy_distance_ratio": "energy distance / floor",
    "sliced_wasserstein_ratio": "sliced Wasserstein / floor",
    "std_rel_error": "std rel. error",
    "std_rel_error_floor": "(floor)",
    "mean_error": "mean error",
    "mean_error_floor": "(floor)",
    "spectrum_error": "spectrum error",
    "spectrum_error_floor": "(floor)",
    "diversity_ratio": "diversity ratio",
    "mode_collapse": "mode collapse",
}


def generative_section(cfg: DictConfig, rows: Sequence[Row], figure: dict, spec: FieldSpec, out: Path,
                       title: str) -> list[str]:
    """The report's lines on the generative surrogates (their law), and its figures; none without them.

    Parameters
    ----------
    figure : dict
        From :func:`build_rows`: ``cases``, ``step`` and ``generative`` (method -> study data).
    spec : FieldSpec
        The field shown.
    """
    if not figure["generative"]:
        return ["Generative surrogates (mean and std maps, spectra) are not part of this report: none is "
                "configured (`generative` in `conf/report.yaml`).", ""]
    generative = [r for r in rows if r.method in figure["generative"]]
    table = markdown_table([StudyResult(f"{r.method}, {r.budget} sims", r.seed, r.run_dir, r.metrics)
                            for r in generative], GENERATIVE_COLUMNS, fmt=".3g",
                           relative_to=out if Path(cfg.runs_dir).is_relative_to(out) else None)
    data = next(iter(figure["generative"].values()))
    heldout = data.heldout
    case, step = int(figure["cases"][0]), int(figure["step"])
    models = {method: load_surrogate(d) for method, d in figure["generative"].items()}
    samples, t = law_samples(data.simulation, models, heldout.params[case], step, int(cfg.generative_samples),
                             seed=int(cfg.generative_seed))
    budget = max(cfg.budgets)
    plot_moments(samples, spec, t, out / "generative_moments.png", f"{title}, {budget} simulations, held-out case 1")
    lines = [
        "## Generative surrogates",
        "",
        "Their law against the simulator's, on the held-out design (computed by each study, "
        "`gensim.models.generative`): each metric beside its *floor*, the same metric between two independent "
        "sets of simulator realizations of the same size; energy distance and sliced Wasserstein on PCA "
        "coefficients, as ratios to their floors (1 is as good as the simulator's own sampling noise). "
        "*Diversity ratio*: the spread of a model's samples over the simulator's; *mode collapse* is flagged (1) "
        "below the configured threshold. On a stochastic problem the held-out relative L2 of the table above "
        "compares one prediction with one realization: even the exact conditional mean scores the size of the "
        "fluctuations there, and a model that follows the noise of its training samples scores worse than the "
        "trivial predictor. These law metrics are the comparison that counts.",
        "",
        table,
        "",
        f"Pointwise mean and standard deviation at held-out case 1, t = {t:.3g} (step {step}), from "
        f"{int(cfg.generative_samples)} simulator realizations and as many samples of each model trained on "
        f"{budget} simulations:",
        "",
        "![generative moments](generative_moments.png)",
        "",
    ]
    if len(spec.shape) == 2:
        plot_spectra(samples, spec, t, out / "generative_spectra.png", f"{title}, held-out case 1")
        lines += ["Radially averaged power spectrum of the fluctuations (samples minus their mean), same samples:",
                  "", "![generative spectra](generative_spectra.png)", ""]
    return lines


def _count_missing(cfg: DictConfig) -> int:
    """Studies of the report whose metrics.json does not exist yet (computed by this run)."""
    runs = Path(cfg.runs_dir)
    methods = [*cfg.baselines, *(["offline_neural"] if cfg.offline_neural else [])]
    methods += [m for dirname in online_variants(cfg) for m in (dirname, f"{dirname}_eval")]
    return sum(not (runs / m / f"n{b}" / f"seed{s}" / "metrics.json").exists()
               for m in methods for b in cfg.budgets for s in cfg.seeds)


def make_report(cfg: DictConfig, command: str) -> Path:
    """Run every study of the report (or read them back) and write the report. Returns report.md's path."""
    start = time.perf_counter()
    computed = _count_missing(cfg)
    rows, studies, figure = build_rows(cfg)
    path = write_report(cfg, rows, studies, figure, command, time.perf_counter() - start, computed)
    log.info("report written to %s in %.0f s", path, time.perf_counter() - start)
    return path


def _command() -> str:
    """The command line that produced this report, with the thread setting it ran under."""
    overrides = HydraConfig.get().overrides.task
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ]
    return " ".join([*env, "gensim-report", *(shlex.quote(o) for o in overrides)])


@hydra.main(version_base="1.3", config_path="pkg://gensim.conf", config_name="report")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    print(make_report(cfg, _command()), flush=True)


if __name__ == "__main__":
    main()
