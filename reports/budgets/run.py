"""A problem at 32 to 2048 training simulations: an on-line neural surrogate against Kriging (issue 13).

A report is a folder of ``reports/budgets/`` (``heat2d``, ``burgers2d``, ``plume2d``) whose ``settings.yaml``
names the problem, the studies' overrides and the steps per simulation at each budget. For each budget N:

- **neural**: one on-line study, ``gensim-train <study> <neural> launcher.max_simulations=N
  schedule.steps_per_simulation=S`` in ``runs/neural_N`` (``gensim.compare.run_study``: skipped when its
  ``metrics.json`` exists). Its wall time is the study's ``wall_s``: simulations (2 worker processes) and
  training together, from start-up to the end.
- **Kriging**: ``conf/baselines/default.yaml``'s Kriging fitted on the same N training simulations (the
  study's ``simulations.json``, re-simulated ``resimulate_parallel`` at a time in the study's kind of
  workers) and scored on the same 16 held-out ones, in ``runs/kriging_N/metrics.json``. Its wall time is
  ``simulate_s + fit_s``: that re-simulation (training and held-out simulations) and the fit.

Then ``results.json``, ``results.md`` and ``error_vs_budget.png`` (held-out error against simulations and
against wall time, training error shown), every number read from those ``metrics.json``::

    OMP_NUM_THREADS=1 python reports/budgets/run.py reports/budgets/heat2d    # run what is missing, then report
    python reports/budgets/run.py reports/budgets/heat2d --report-only        # the report from runs/ only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gensim.compare import run_study
from gensim.report.scoring import fit_baseline, score
from gensim.report.studies import StudyData

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KRIGING_CONF = Path(__file__).resolve().parents[2] / "conf" / "baselines" / "default.yaml"


def neural_overrides(cfg: dict, budget: int) -> list[str]:
    """The ``gensim-train`` overrides of the neural study at ``budget`` training simulations."""
    return [
        *cfg["study"],
        f"launcher.max_simulations={budget}",
        *cfg["neural"],
        f"schedule.steps_per_simulation={cfg['steps_per_simulation'][budget]}",
    ]


def fit_kriging(study_dir: Path, out: Path, n_parallel: int) -> dict:
    """Kriging on a study's training simulations, scored on its held-out ones; writes ``out/metrics.json``.

    Returns the scores of :func:`gensim.report.scoring.fit_baseline` plus ``simulate_s`` (serial
    re-simulation of the study's training and held-out simulations), ``train_rel_l2_mean`` /
    ``train_rel_l2_p99`` (the fitted Kriging on its own training simulations), ``jitter_`` (per mode) and ``wall_s``
    (``simulate_s + fit_s``).
    """
    path = out / "metrics.json"
    if path.exists():
        return json.loads(path.read_text())
    spec = OmegaConf.load(KRIGING_CONF).kriging
    estimator, layout = instantiate(spec.estimator), instantiate(spec.layout)
    data = StudyData(study_dir, n_parallel=n_parallel)
    start = time.perf_counter()
    train, heldout = data.train, data.heldout  # cached: fit_baseline uses these
    simulate_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:  # fit_baseline writes the figure cases, not kept here
        metrics = fit_baseline(estimator, layout, data, Path(tmp), np.arange(1), 0)
    fit_rows = score(
        layout.predict(estimator, train),
        train,
        data.simulation.fields,
        train.fields.reshape(-1, train.fields.shape[-1]).mean(0, dtype=np.float64),
    )
    metrics |= {
        "train_rel_l2_mean": fit_rows["val_rel_l2_mean"],
        "train_rel_l2_p99": fit_rows["val_rel_l2_p99"],
        # Conditioning every row on the subsample's hyperparameters can need a larger diagonal jitter.
        "jitter_": estimator.jitter_,
        "simulate_s": simulate_s,
        "n_heldout_simulations": len(heldout),
        "wall_s": simulate_s + metrics["fit_s"],
        "study_dir": study_dir.name,  # beside out, in runs/
    }
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def curve(metrics_csv: Path) -> dict[str, list[float]]:
    """Every validation of a study's Lightning CSV log: step, elapsed_s, held-out and training mean."""
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get("elapsed_s") and r.get("val_rel_l2_mean")]
    keys = {"step": "step", "elapsed_s": "elapsed_s", "val": "val_rel_l2_mean", "train": "train_rel_l2_mean"}
    return {k: [float(r[col]) for r in rows] for k, col in keys.items()}


def collect(cfg: dict, here: Path) -> list[dict]:
    """One entry per budget with both methods' numbers, read from the runs' ``metrics.json`` under ``here``."""
    rows = []
    for budget in sorted(cfg["steps_per_simulation"]):
        neural_dir, kriging_dir = here / "runs" / f"neural_{budget}", here / "runs" / f"kriging_{budget}"
        if not (neural_dir / "metrics.json").exists() or not (kriging_dir / "metrics.json").exists():
            continue
        n = json.loads((neural_dir / "metrics.json").read_text())
        k = json.loads((kriging_dir / "metrics.json").read_text())
        rows.append(
            {
                "budget": budget,
                "neural": {
                    "source": str((neural_dir / "metrics.json").relative_to(here)),
                    "overrides": neural_overrides(cfg, budget),
                    "steps": n["steps_per_rank"][0],
                    "val_rel_l2_mean": n["val_rel_l2_mean"],
                    "val_rel_l2_p99": n["val_rel_l2_p99"],
                    "train_rel_l2_mean": n["train_rel_l2_mean"],
                    "train_rel_l2_p99": n["train_rel_l2_p99"],
                    "wall_s": n["wall_s"],
                    "simulations_finished": n["simulations_finished"],
                    "curve": curve(neural_dir / "logs" / "metrics.csv"),
                },
                "kriging": {"source": str((kriging_dir / "metrics.json").relative_to(here))}
                | {
                    key: k[key]
                    for key in (
                        "val_rel_l2_mean",
                        "val_rel_l2_p99",
                        "train_rel_l2_mean",
                        "train_rel_l2_p99",
                        "n_components_",
                        "n_samples_fit_",
                        "n_samples_hyper_",
                        "restarted_modes_",
                        "collapsed_modes_",
                        "jitter_",
                        "simulate_s",
                        "fit_s",
                        "wall_s",
                        "n_train_simulations",
                    )
                },
            }
        )
    return rows


def figure(rows: list[dict], title: str, path: Path) -> None:
    """Held-out (and training) relative L2 against simulations, and held-out against wall time."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13.5, 4.2))
    budgets = [r["budget"] for r in rows]
    ax1.loglog(budgets, [r["neural"]["val_rel_l2_mean"] for r in rows], "o-", c="C0", label="neural, held-out")
    ax1.loglog(budgets, [r["neural"]["train_rel_l2_mean"] for r in rows], "o--", c="C0", mfc="none",
               label="neural, training")  # fmt: skip
    ax1.loglog(budgets, [r["kriging"]["val_rel_l2_mean"] for r in rows], "s-", c="C3", label="Kriging, held-out")
    ax1.loglog(budgets, [r["kriging"]["train_rel_l2_mean"] for r in rows], "s--", c="C3", mfc="none",
               label="Kriging, training")  # fmt: skip
    ax1.set_xticks(budgets, [str(b) for b in budgets])
    ax1.minorticks_off()
    ax1.set_xlabel("training simulations")
    ax1.set_ylabel("relative L2 error (mean over fields)")
    ax1.legend()
    ax1.grid(alpha=0.3, which="both")
    for i, r in enumerate(rows):
        c = r["neural"]["curve"]
        ax2.loglog(c["elapsed_s"], c["val"], "-", c=f"C{i}", alpha=0.6, lw=1)
        ax2.loglog(r["neural"]["wall_s"], r["neural"]["val_rel_l2_mean"], "o", c=f"C{i}",
                   label=f"neural {r['budget']} (curve: during training)")  # fmt: skip
        ax2.loglog(r["kriging"]["wall_s"], r["kriging"]["val_rel_l2_mean"], "s", c=f"C{i}", mec="k",
                   label=f"Kriging {r['budget']}")  # fmt: skip
    ax2.set_xlabel("wall time (s): simulation + training, or simulation + fit")
    ax2.set_ylabel("held-out relative L2 (mean)")
    ax2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside: the plot has no empty corner
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict], cfg: dict, info: dict, here: Path) -> str:
    """results.md: the tables, generated from ``rows``; each number's ``metrics.json`` is named."""
    budgets = sorted(cfg["steps_per_simulation"])
    lines = [
        f"# {cfg['title']} at {budgets[0]} to {budgets[-1]} simulations: on-line neural surrogate against Kriging",
        "",
        f"Generated by `OMP_NUM_THREADS=1 python reports/budgets/run.py reports/budgets/{here.name}` (settings:",
        "`settings.yaml`);",
        "every number is read from `runs/neural_N/metrics.json` (the on-line study, its training curve in",
        "`runs/neural_N/logs/metrics.csv`) or `runs/kriging_N/metrics.json`, collected in `results.json`.",
        f"Machine: {info['machine']}, `OMP_NUM_THREADS=1`, shared with other jobs (wall times carry that load).",
        "",
        f"Neural: `gensim-train {' '.join(cfg['study'])} {' '.join(cfg['neural'])} launcher.max_simulations=N "
        "schedule.steps_per_simulation=S`; its wall time is the whole study (2 simulation workers and",
        "training at once). Kriging: `conf/baselines/default.yaml` on the same N training simulations (one",
        "row per simulation, every step's field as output, POD then one Gaussian process per mode),",
        "scored on the same 16 held-out simulations; its wall time is the re-simulation of the study's",
        f"simulations ({cfg['resimulate_parallel']} process(es) at a time) plus the fit.",
        "",
        "| N | neural steps | neural held-out mean | p99 | training mean | training / held-out | study wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = r["neural"]
        lines.append(
            f"| {r['budget']} | {n['steps']} | {n['val_rel_l2_mean']:.6f} | {n['val_rel_l2_p99']:.6f} | "
            f"{n['train_rel_l2_mean']:.6f} | {n['train_rel_l2_mean'] / n['val_rel_l2_mean']:.2f} | {n['wall_s']:.0f} |"
        )
    lines += [
        "",
        "| N | Kriging held-out mean | p99 | training mean | POD modes | hyperparameter rows / rows | "
        "restarted modes | collapsed modes | largest jitter | simulate (s) | fit (s) | wall (s) | "
        "neural / Kriging (held-out mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        k, n = r["kriging"], r["neural"]
        lines.append(
            f"| {r['budget']} | {k['val_rel_l2_mean']:.6f} | {k['val_rel_l2_p99']:.6f} | "
            f"{k['train_rel_l2_mean']:.2e} | {k['n_components_']} | {k['n_samples_hyper_']} / {k['n_samples_fit_']} | "
            f"{k['restarted_modes_'] or '-'} | {k['collapsed_modes_'] or '-'} | {max(k['jitter_']):.0e} | "
            f"{k['simulate_s']:.1f} | {k['fit_s']:.1f} | {k['wall_s']:.1f} | "
            f"{n['val_rel_l2_mean'] / k['val_rel_l2_mean']:.1f} |"
        )
    lines.append("")
    for r in rows:
        ratio = r["neural"]["val_rel_l2_mean"] / r["kriging"]["val_rel_l2_mean"]
        lower = f"Kriging is {ratio:.1f}x lower" if ratio > 1 else f"the neural surrogate is {1 / ratio:.1f}x lower"
        lines.append(
            f"- {r['budget']} simulations: {lower} on the held-out mean "
            f"(neural {r['neural']['val_rel_l2_mean']:.2e} in a {r['neural']['wall_s']:.0f} s study, "
            f"Kriging {r['kriging']['val_rel_l2_mean']:.2e} fitted in {r['kriging']['fit_s']:.0f} s)."
        )
    total = sum(r["neural"]["wall_s"] + r["kriging"]["wall_s"] for r in rows)
    lines += [
        "",
        f"Sum of the studies' and fits' wall times: {total / 60:.1f} min (`results.json`: `total_wall_s`).",
        "",
        "![held-out error against simulations and wall time](error_vs_budget.png)",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="the report's folder, holding settings.yaml (reports/budgets/heat2d)")
    parser.add_argument("--report-only", action="store_true", help="no study or fit: report what runs/ holds")
    args = parser.parse_args()
    here = args.report.resolve()
    if not (here / "settings.yaml").is_file():
        parser.error(f"{here / 'settings.yaml'} does not exist: pass a report folder of reports/budgets/ (heat2d)")
    cfg = yaml.safe_load((here / "settings.yaml").read_text())
    start = time.perf_counter()
    if not args.report_only:
        for budget in cfg["steps_per_simulation"]:  # in the config's order
            study_dir = here / "runs" / f"neural_{budget}"
            run_study(neural_overrides(cfg, budget), study_dir, timeout_s=cfg["study_timeout_s"])
            fit_kriging(study_dir, here / "runs" / f"kriging_{budget}", cfg["resimulate_parallel"])
            print(f"{budget}: done at {time.perf_counter() - start:.0f} s", flush=True)
    rows = collect(cfg, here)
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    results = {
        "config": cfg,
        "rows": rows,
        "total_wall_s": sum(r["neural"]["wall_s"] + r["kriging"]["wall_s"] for r in rows),
    }
    (here / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    figure(rows, f"{cfg['title']}: on-line {cfg['neural_name']} against Kriging", here / "error_vs_budget.png")
    (here / "results.md").write_text(markdown(rows, cfg, info, here))
    print((here / "results.md").read_text())


if __name__ == "__main__":
    main()
