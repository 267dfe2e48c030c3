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

import logging
import os
import shlex
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gensim.report.markdown import write_report
from gensim.report.rows import build_rows, count_missing
from gensim.report.studies import StudyData, flatten_overrides, load_study

__all__ = ["StudyData", "flatten_overrides", "load_study", "main", "make_report"]

log = logging.getLogger("gensim.report")


def make_report(cfg: DictConfig, command: str) -> Path:
    """Run every study of the report (or read them back) and write the report. Returns report.md's path."""
    start = time.perf_counter()
    computed = count_missing(cfg)
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
