"""The studies a report is made of: run directories of ``gensim-train`` and what they hold."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from gensim.baselines import SimulationSet, study_config, study_simulations

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
    """The simulations of one on-line study, re-simulated on first use only (a cached report needs none),
    ``n_parallel`` at a time in the study's kind of workers (1: serially, in this process)."""

    def __init__(self, run_dir: Path, n_parallel: int = 1) -> None:
        self.run_dir = run_dir
        self.config = study_config(run_dir)
        self.n_parallel = int(n_parallel)

    @cached_property
    def metrics(self) -> dict:
        """The study's ``metrics.json``."""
        return json.loads((self.run_dir / "metrics.json").read_text())

    @cached_property
    def records(self) -> list[dict]:
        """The study's ledger, ``simulations.json``: one record per simulation."""
        return json.loads((self.run_dir / "simulations.json").read_text())

    @cached_property
    def simulation(self):
        return instantiate(self.config.simulation)

    @cached_property
    def train(self) -> SimulationSet:
        sims, info = study_simulations(self.run_dir, "train", n_parallel=self.n_parallel)
        log.info("%s: %d training simulations re-simulated", self.run_dir, info["used"])
        return sims

    @cached_property
    def heldout(self) -> SimulationSet:
        return study_simulations(self.run_dir, "validation", n_parallel=self.n_parallel)[0]


def load_study(run_dir: str | Path) -> StudyData:
    """A finished ``gensim-train`` study, read from its run directory.

    Parameters
    ----------
    run_dir : str or Path
        The study's run directory: ``metrics.json``, ``simulations.json``, ``.hydra/config.yaml``
        and ``checkpoints/last.ckpt``.

    Raises
    ------
    FileNotFoundError
        If ``metrics.json`` is missing: the study did not finish (or the path is not a run
        directory); run it (``gensim-train``) or pass the directory it wrote.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(
            f"{run_dir / 'metrics.json'} does not exist: {run_dir} is not the run directory of a "
            "finished gensim-train study; pass the directory a study wrote (outputs/<study>/<time>) "
            "or let the study finish"
        )
    return StudyData(run_dir)


def flatten_overrides(node: Mapping, prefix: str = "") -> list[str]:
    """Nested mapping -> Hydra overrides: ``{"trainer": {"max_steps": 10}}`` -> ``["trainer.max_steps=10"]``."""
    out = []
    for key, value in node.items():
        if isinstance(value, Mapping):
            out += flatten_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value) if isinstance(value, (list, str)) else value}")
    return out


def study_cases(data: StudyData, n_cases: int, step: int | None) -> tuple[np.ndarray, int]:
    """The held-out simulations (indices) and the time step shown in the maps."""
    n_heldout = sum(r["purpose"] == "validation" and r["state"] == "done" for r in data.records)
    return np.arange(min(n_cases, n_heldout)), data.simulation.n_steps // 10 if step is None else int(step)


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
