"""Every study of a report, run or read back, as table rows (:class:`~gensim.report.studies.Row`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gensim.baselines import SnapshotLayout
from gensim.compare import StudyResult, cached_study, run_comparison
from gensim.report.scoring import evaluate_online, fit_baseline, offline_neural
from gensim.report.studies import OFFLINE_NEURAL, Row, StudyData, flatten_overrides, online_variants, study_cases


def _timed(compute: Callable[[Path], dict]) -> Callable[[Path], dict]:
    """``compute`` that also records its own duration (``compute_s``, re-simulation included)."""

    def run(run_dir: Path) -> dict:
        start = time.perf_counter()
        return compute(run_dir) | {"compute_s": time.perf_counter() - start}

    return run


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
    common = [
        f"simulation={cfg.problem}",
        f"buffer={cfg.buffer}",
        *flatten_overrides(OmegaConf.to_container(cfg.train, resolve=True)),
    ]
    rows: list[Row] = []
    studies: dict[int, StudyData] = {}
    figure: dict = {"generative": {}}
    for dirname, (method, extra) in online_variants(cfg).items():
        online = run_comparison(
            runs / dirname,
            {f"n{b}": [f"launcher.max_simulations={b}", *extra] for b in cfg.budgets},
            seeds=list(cfg.seeds),
            common=common,
            timeout_s=cfg.study_timeout_s,
        )
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


def _online_rows(
    cfg: DictConfig, runs: Path, dirname: str, method: str, res: StudyResult, figure: dict
) -> tuple[list[Row], StudyData]:
    """The row of one on-line study and, for the deterministic variant, the baselines on its simulations."""
    budget, seed = int(res.variant[1:]), res.seed
    data = StudyData(res.run_dir, cfg.resimulate_parallel)
    cases, step = study_cases(data, cfg.figure_cases, cfg.figure_step)
    figure |= {"cases": cases, "step": step}
    where = f"n{budget}/seed{seed}"
    check = cached_study(runs / f"{dirname}_eval" / where, _timed(lambda d: evaluate_online(data, d, cases, step)))
    rows = [
        Row(
            method,
            budget,
            seed,
            res.run_dir,
            res.metrics
            | check
            | {
                "fit_s": res.metrics["wall_s"],
                "compute_s": res.metrics["wall_s"] + check.get("compute_s", 0.0),
                "n_train_simulations": res.metrics["simulations_finished"],
            },
            runs / f"{dirname}_eval" / where / "cases.npz",
        )
    ]
    if dirname == "online":
        for name, spec in cfg.baselines.items():
            run_dir = runs / name / where

            def compute(d: Path, spec=spec) -> dict:
                return fit_baseline(instantiate(spec.estimator), instantiate(spec.layout), data, d, cases, step)

            rows.append(Row(name, budget, seed, run_dir, cached_study(run_dir, _timed(compute)), run_dir / "cases.npz"))
        if cfg.offline_neural:
            run_dir = runs / "offline_neural" / where
            metrics = cached_study(
                run_dir,
                _timed(
                    lambda d: fit_baseline(
                        offline_neural(data, seed, d),
                        SnapshotLayout(log_time=False),
                        data,
                        d,
                        cases,
                        step,
                        eval_set=True,
                    )
                ),
            )
            rows.append(Row(OFFLINE_NEURAL, budget, seed, run_dir, metrics, run_dir / "cases.npz"))
    return rows, data


def count_missing(cfg: DictConfig) -> int:
    """Studies of the report whose metrics.json does not exist yet (computed by this run)."""
    runs = Path(cfg.runs_dir)
    methods = [*cfg.baselines, *(["offline_neural"] if cfg.offline_neural else [])]
    methods += [m for dirname in online_variants(cfg) for m in (dirname, f"{dirname}_eval")]
    return sum(
        not (runs / m / f"n{b}" / f"seed{s}" / "metrics.json").exists()
        for m in methods
        for b in cfg.budgets
        for s in cfg.seeds
    )
