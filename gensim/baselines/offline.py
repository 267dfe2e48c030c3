"""Off-line baselines on the simulations of an on-line study: re-simulate, lay out, fit, predict.

An on-line study stores no fields, only the parameters and seed of every simulation
(``<run_dir>/simulations.json``) and its resolved config (``<run_dir>/.hydra/config.yaml``). The
off-line baselines re-simulate exactly that list, so they train on the simulations the on-line
surrogate saw and are scored on the same held-out simulations.

A *layout* turns simulations into an estimator's ``(X, Y)``:

- :class:`TrajectoryLayout`: one row per simulation, ``X`` = parameters, ``Y`` = every time step
  of every field (a POD of whole trajectories; a time-dependent simulator with a fixed time grid);
- :class:`SnapshotLayout`: one row per time step, ``X`` = (parameters, t or log t), ``Y`` = the
  fields of that step (what the on-line surrogate regresses).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y
from torch.utils.data import DataLoader, RandomSampler, StackDataset

from gensim.callbacks.wall_clock import WallClock
from gensim.simulations.base import FieldSpec, Simulation

__all__ = [
    "SimulationSet",
    "SnapshotLayout",
    "TrajectoryLayout",
    "OfflineSurrogate",
    "simulate",
    "study_config",
    "study_simulations",
]

log = logging.getLogger("gensim.baselines")


@dataclass
class SimulationSet:
    """Every time step of a set of simulations, in memory.

    Attributes
    ----------
    params : ndarray, shape (S, P)
    times : ndarray, shape (T,)
        Times of the steps, the same for every simulation.
    fields : ndarray of float32, shape (S, T, D)
        Flattened fields of every step, concatenated in the simulation's field order.
    sim_ids : ndarray of int, shape (S,)
        Ids in the study's ``simulations.json``.
    """

    params: np.ndarray
    times: np.ndarray
    fields: np.ndarray
    sim_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.params)

    def snapshots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One row per (simulation, step): params (S*T, P), t (S*T,), fields (S*T, D)."""
        n_sims, n_steps, _ = self.fields.shape
        return (
            np.repeat(self.params, n_steps, axis=0),
            np.tile(self.times, n_sims),
            self.fields.reshape(n_sims * n_steps, -1),
        )


def simulate(
    simulation: Simulation,
    params: np.ndarray,
    seeds: Sequence[int | None],
    sim_ids: Sequence[int],
    runs: Sequence[list] | None = None,
) -> SimulationSet:
    """Run simulations in this process and keep every step.

    Parameters
    ----------
    simulation : Simulation
    params : ndarray, shape (S, P)
    seeds : sequence of int or None, length S
    sim_ids : sequence of int, length S
    runs : sequence of list, optional
        The steps of each simulation, already run elsewhere (in parallel workers:
        :func:`gensim.launch.resimulate.run_in_parallel`), as ``simulation.run`` yields them;
        None: run them here, one after the other.

    Returns
    -------
    SimulationSet
    """
    fields, times = [], None
    for k, (p, seed, sim_id) in enumerate(zip(params, seeds, sim_ids)):
        steps = runs[k] if runs is not None else list(simulation.run(np.asarray(p, float), seed=seed))
        t = np.array([s[1] for s in steps])
        if times is None:
            times = t
        elif t.shape != times.shape or not np.allclose(t, times):
            raise ValueError(
                f"simulation {sim_id} emitted times {t[:3]}... ({len(t)} steps), the first one "
                f"{times[:3]}... ({len(times)} steps); off-line baselines need one time grid"
            )
        fields.append(
            np.stack(
                [
                    np.concatenate([np.asarray(f[spec.name], np.float32).reshape(-1) for spec in simulation.fields])
                    for _, _, f in steps
                ]
            )
        )
    return SimulationSet(np.asarray(params, float), times, np.stack(fields), np.asarray(sim_ids))


def study_config(run_dir: str | Path) -> DictConfig:
    """The resolved config of a finished ``gensim-train`` study (``<run_dir>/.hydra/config.yaml``)."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected the run directory of a gensim-train study")
    return OmegaConf.load(path)


def study_simulations(
    run_dir: str | Path, purpose: str, max_simulations: int | None = None, seed: int = 0, n_parallel: int = 1
) -> tuple[SimulationSet, dict]:
    """Re-simulate the finished simulations of a study.

    With ``n_parallel > 1`` the simulations run ``n_parallel`` at a time in the study's own
    kind of workers (its ``launcher.executor``: local processes, SLURM jobs), streaming to a
    private receiver bound like the study's (``transport.address``); else one after the other
    in this process.

    Parameters
    ----------
    run_dir : path
        A ``gensim-train`` run directory.
    purpose : {"train", "validation"}
    max_simulations : int, optional
        Keep at most this many, drawn at random (seeded) when there are more.
    seed : int
        Seed of that draw.
    n_parallel : int
        Simulations run at once (1: serially, in this process).

    Returns
    -------
    sims : SimulationSet
    info : dict
        ``recorded`` (finished simulations of that purpose in the study), ``used``, ``subsampled``,
        ``simulate_s_per_field`` (the study's own mean simulation time per step).
    """
    cfg = study_config(run_dir)
    simulation = instantiate(cfg.simulation)
    path = Path(run_dir) / "simulations.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the study did not finish (gensim-train writes it at the end)")
    records = json.loads(path.read_text())
    done = [r for r in records if r["purpose"] == purpose and r["state"] == "done"]
    if not done:
        raise ValueError(
            f"no finished {purpose!r} simulation in {run_dir}/simulations.json; states: "
            f"{sorted({r['state'] for r in records if r['purpose'] == purpose})}"
        )
    used = done
    if max_simulations is not None and len(done) > max_simulations:
        keep = np.sort(np.random.default_rng(seed).choice(len(done), max_simulations, replace=False))
        used = [done[i] for i in keep]
        log.warning("%s: using %d of the %d %s simulations", run_dir, len(used), len(done), purpose)
    params, seeds = np.array([r["params"] for r in used]), [r["seed"] for r in used]
    runs = None
    if n_parallel > 1:
        from gensim.launch.resimulate import run_in_parallel

        runs = run_in_parallel(
            OmegaConf.to_container(cfg.simulation, resolve=True),
            simulation.fields,
            simulation.n_steps,
            params,
            seeds,
            _executor(cfg),
            n_parallel,
            address=OmegaConf.select(cfg, "transport.address", default="tcp://127.0.0.1:*"),
            timeout_s=OmegaConf.select(cfg, "launcher.simulation_timeout_s", default=600.0),
            log_dir=Path(run_dir) / "workers" / f"resimulate-{purpose}",
        )
    sims = simulate(simulation, params, seeds, [r["sim_id"] for r in used], runs=runs)
    steps = sum(r["steps"] for r in done)
    info = {
        "recorded": len(done),
        "used": len(used),
        "subsampled": len(used) < len(done),
        "simulate_s_per_field": sum(r["seconds"] for r in done) / steps if steps else float("nan"),
    }
    return sims, info


def _executor(cfg: DictConfig):
    """The study's ``launcher.executor``, or local worker processes when it names none."""
    executor = OmegaConf.select(cfg, "launcher.executor")
    if executor is None:
        from gensim.launch.executors import LocalExecutor

        return LocalExecutor()
    return instantiate(executor)


class TrajectoryLayout:
    """One row per simulation: ``X`` = parameters (S, P), ``Y`` = all steps (S, T * D)."""

    def xy(self, sims: SimulationSet) -> tuple[np.ndarray, np.ndarray]:
        return sims.params, sims.fields.reshape(len(sims), -1)

    def predict(self, estimator, sims: SimulationSet) -> np.ndarray:
        """Fields of every step of ``sims``' parameters, shape (S, T, D)."""
        return np.asarray(estimator.predict(sims.params)).reshape(sims.fields.shape)

    def __repr__(self) -> str:
        return "TrajectoryLayout()"


class SnapshotLayout:
    """One row per time step: ``X`` = (parameters, time) (S*T, P + 1), ``Y`` = fields (S*T, D).

    Parameters
    ----------
    log_time : bool
        Use log t as the time input: early, fast transients then get as much input range as the
        slow late evolution (times must be > 0).
    """

    def __init__(self, log_time: bool) -> None:
        self.log_time = log_time

    def _x(self, sims: SimulationSet) -> np.ndarray:
        params, t, _ = sims.snapshots()
        if self.log_time and np.any(t <= 0):
            raise ValueError(f"log_time needs times > 0, got a smallest time {t.min()}; use log_time=false")
        return np.column_stack([params, np.log(t) if self.log_time else t])

    def xy(self, sims: SimulationSet) -> tuple[np.ndarray, np.ndarray]:
        return self._x(sims), sims.snapshots()[2]

    def predict(self, estimator, sims: SimulationSet) -> np.ndarray:
        """Fields of every step of ``sims``' parameters, shape (S, T, D)."""
        return np.asarray(estimator.predict(self._x(sims))).reshape(sims.fields.shape)

    def __repr__(self) -> str:
        return f"SnapshotLayout(log_time={self.log_time})"


class OfflineSurrogate(RegressorMixin, BaseEstimator):
    """The on-line study's surrogate trained by epochs on stored simulations (the off-line baseline).

    Same ``LightningModule`` (its Hydra partial), same Lightning trainer config, same number of
    optimizer steps and batch size: only the data source differs (shuffled epochs over a fixed
    set instead of a live stream), which separates "on-line vs off-line" from "neural vs Kriging".

    Parameters
    ----------
    model : callable
        ``model(fields=..., n_params=...) -> LightningModule`` with ``forward(params, t)``, e.g.
        ``instantiate(study_cfg.model)``.
    trainer : callable
        ``trainer(**kwargs) -> lightning.Trainer``, e.g. ``instantiate(study_cfg.trainer)``.
    fields : sequence of FieldSpec, optional
        Output fields (their sizes must add up to D); None: one field of size D.
    max_steps : int
        Optimizer steps.
    batch_size : int
    val_every_n_steps : int
        Steps between held-out evaluations when :meth:`fit` gets an ``eval_set``.
    seed : int
        Seeds the initialization and the shuffling.
    log_dir : str, optional
        Folder of the CSV training log (``logs/metrics.csv``); None: no log.
    clock_start : float, optional
        ``time.perf_counter()`` reading from which the log's ``elapsed_s`` counts (e.g. the start
        of the simulations of an off-line pipeline); None: the start of training.
    callbacks : sequence of lightning.Callback, optional
        Further callbacks of the trainer, e.g. the on-line study's weight average
        (:class:`gensim.callbacks.WeightAverage`), so that both pipelines train alike.

    Attributes
    ----------
    module_ : LightningModule
        The trained surrogate.
    n_features_in_ : int
        P + 1 (the parameters, then t).
    """

    def __init__(
        self,
        model,
        trainer,
        fields: Sequence[FieldSpec] | None = None,
        max_steps: int = 6000,
        batch_size: int = 128,
        val_every_n_steps: int = 500,
        seed: int = 0,
        log_dir: str | None = None,
        clock_start: float | None = None,
        callbacks: Sequence[L.Callback] = (),
    ) -> None:
        self.model = model
        self.trainer = trainer
        self.fields = fields
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.val_every_n_steps = val_every_n_steps
        self.seed = seed
        self.log_dir = log_dir
        self.clock_start = clock_start
        self.callbacks = callbacks

    @staticmethod
    def _dataset(X: np.ndarray, Y: np.ndarray) -> StackDataset:
        return StackDataset(
            params=torch.from_numpy(X[:, :-1].astype(np.float32)),
            t=torch.from_numpy(X[:, -1].astype(np.float32)),
            fields=torch.from_numpy(Y.astype(np.float32)),
        )

    def fit(self, X, Y, eval_set: tuple | None = None) -> OfflineSurrogate:
        """Train for ``max_steps`` steps on successive shuffled passes (epochs) over ``(X, Y)``.

        Parameters
        ----------
        X : array_like, shape (n, P + 1)
            Parameters then time, as :class:`SnapshotLayout` (``log_time=False``) lays them out.
        Y : array_like, shape (n, D)
        eval_set : (X_val, Y_val), optional
            Held-out rows evaluated every ``val_every_n_steps`` (logged as ``val_rel_l2_mean``).

        Returns
        -------
        self
        """
        X, Y = check_X_y(X, Y, multi_output=True, y_numeric=True, dtype=np.float32)
        if X.shape[1] < 2:
            raise ValueError(f"expected X with the parameters then t (>= 2 columns), got {X.shape[1]}")
        fields = tuple(self.fields) if self.fields is not None else (FieldSpec("fields", (Y.shape[1],), "float32"),)
        if sum(f.size for f in fields) != Y.shape[1]:
            raise ValueError(f"fields add up to {sum(f.size for f in fields)} values, Y has {Y.shape[1]} columns")
        L.seed_everything(self.seed, workers=True, verbose=False)
        self.n_features_in_ = X.shape[1]
        self.module_ = self.model(fields=fields, n_params=X.shape[1] - 1)
        dataset = self._dataset(X, Y)
        # Successive shuffled passes over the data (RandomSampler draws whole permutations when
        # num_samples > len) in one Lightning epoch: the same epochs, without Lightning's per-epoch
        # overhead, which dominated on small sets.
        sampler = RandomSampler(
            dataset, num_samples=self.max_steps * self.batch_size, generator=torch.Generator().manual_seed(self.seed)
        )
        train = DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True)
        val = None
        if eval_set is not None:
            X_val, Y_val = check_X_y(*eval_set, multi_output=True, y_numeric=True, dtype=np.float32)
            val = DataLoader(self._dataset(X_val, Y_val), batch_size=512)
        logger = CSVLogger(self.log_dir, name="logs", version="") if self.log_dir else False
        trainer = self.trainer(
            max_steps=self.max_steps,
            max_epochs=1,
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=False,
            default_root_dir=self.log_dir,
            callbacks=[WallClock(self.clock_start), *self.callbacks],
            # Validation by steps, as the on-line study validates after each pseudo-epoch.
            val_check_interval=min(self.val_every_n_steps, self.max_steps),
        )
        trainer.fit(self.module_, train_dataloaders=train, val_dataloaders=val)
        return self

    @torch.no_grad()
    def predict(self, X) -> np.ndarray:
        """Predict fields. Shape (n, P + 1) -> (n, D), float32."""
        check_is_fitted(self, "module_")
        X = torch.from_numpy(check_array(X, dtype=np.float32))
        self.module_.eval()
        return torch.cat([self.module_(x[:, :-1], x[:, -1]) for x in X.split(1024)]).numpy()
