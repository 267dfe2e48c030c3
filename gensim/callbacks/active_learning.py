"""Active learning in the training loop: scores for the sampler, and the pace of the simulations.

- :class:`ActiveLearning` measures, as training runs, each simulation's error on the samples
  drawn from it and tells it to the study's :class:`sampling.ActiveSampler`; when the sampler's
  acquisition wants a score function (:class:`sampling.UncertaintyAcquisition`), it supplies
  one, :class:`SnapshotDisagreement` by default. The launcher asks the sampler whenever a
  simulation slot frees, so the next simulations follow the scores.
- :class:`SimulationPacing` releases the simulation budget gradually over the training steps.
  Without it, cheap simulations all finish in the first seconds, before the surrogate has
  learned anything to steer them with; expensive ones pace themselves. Use the same pacing for
  every sampler of a comparison, so that they differ in where they simulate, not when.

Both reach the stream at run time through ``trainer.datamodule`` (its ``sampler``, ``launcher``,
``buffer`` and ``simulation``), never through a second instance from the config.

Under DDP the sampler and the launcher are rank 0's: every rank scores the simulations it
receives, rank 0 gathers the scores and tells, and only rank 0 paces its launcher.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from gensim.data.ranks import gather_objects
from gensim.metrics import relative_l2

log = logging.getLogger("gensim.callbacks")

__all__ = ["ActiveLearning", "SimulationPacing", "SnapshotDisagreement"]


class SnapshotDisagreement:
    """Uncertainty of a deterministic surrogate: the spread of its recent snapshots' predictions.

    Every ``every_n_steps`` training steps a frozen copy of the model is kept, up to
    ``n_snapshots``. The score of a parameter vector is the variance of the snapshots'
    predicted fields, summed over the grid and divided by their mean squared norm, averaged over
    ``n_times`` times spread over those seen in training. Where recent training still moves the
    prediction, the model is unsure (a committee of snapshots, as in query-by-committee).

    Calling it is thread-safe with respect to training: the snapshots are copies that training
    never touches, so the launcher's thread may score candidates while the trainer's thread
    trains. The snapshots stay on the model's device; candidates go there and scores come back.

    Parameters
    ----------
    n_snapshots : int
        Committee size, >= 2.
    every_n_steps : int
        Training steps between snapshots, >= 1.
    n_times : int
        Times at which each candidate is predicted, >= 1.
    """

    def __init__(self, n_snapshots: int = 3, every_n_steps: int = 100, n_times: int = 3) -> None:
        if n_snapshots < 2 or every_n_steps < 1 or n_times < 1:
            raise ValueError(
                f"expected n_snapshots >= 2, every_n_steps >= 1 and n_times >= 1, got "
                f"{n_snapshots}, {every_n_steps} and {n_times}"
            )
        self.n_snapshots, self.every_n_steps, self.n_times = int(n_snapshots), int(every_n_steps), int(n_times)
        self._snapshots: list[L.LightningModule] = []
        self._times: set[float] = set()

    @property
    def ready(self) -> bool:
        """True once two snapshots exist: a spread needs two."""
        return len(self._snapshots) >= 2

    def update(self, pl_module: L.LightningModule, batch: dict[str, torch.Tensor], step: int) -> None:
        """Record the batch's times; keep a snapshot when ``step`` is a multiple of ``every_n_steps``."""
        if len(self._times) < 10_000:  # the times of a study are few; the bound is a safety net
            self._times.update(batch["t"].unique().tolist())
        if step > 0 and step % self.every_n_steps == 0:
            # Copy without the trainer it is attached to (threads, loaders, the live buffer): the
            # memo maps the trainer to None. Lightning keeps it in ``_trainer``; the public
            # ``trainer`` property raises when the module is not attached.
            attached = getattr(pl_module, "_trainer", None)
            memo = {} if attached is None else {id(attached): None}
            snapshot = copy.deepcopy(pl_module, memo=memo).eval()
            snapshot.requires_grad_(False)
            # A new list, swapped in at once: a concurrent __call__ sees the old or the new one.
            self._snapshots = [*self._snapshots, snapshot][-self.n_snapshots :]

    @torch.no_grad()
    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Scores of parameter vectors.

        Parameters
        ----------
        points : ndarray, shape (m, n_params)
            Physical units.

        Returns
        -------
        ndarray, shape (m,)
            Relative spread of the snapshots' predictions, >= 0 (zeros before two snapshots exist).
        """
        snapshots = self._snapshots
        m = points.shape[0]
        if len(snapshots) < 2:
            return np.zeros(m)
        seen = np.sort(np.fromiter(self._times, float)) if self._times else np.zeros(1)
        times = np.quantile(seen, np.linspace(0.0, 1.0, self.n_times), method="nearest")
        device = snapshots[0].device
        params = torch.as_tensor(np.repeat(points, len(times), axis=0), dtype=torch.float32, device=device)
        t = torch.as_tensor(np.tile(times, m), dtype=torch.float32, device=device)
        preds = torch.stack([s(params, t).double() for s in snapshots])  # (K, m * T, D)
        spread = preds.var(dim=0).sum(dim=1) / preds.pow(2).sum(dim=2).mean(dim=0).clamp_min(1e-30)
        return spread.reshape(m, len(times)).mean(dim=1).cpu().numpy()


class ActiveLearning(Callback):
    """Tell the study's active sampler how well each simulation is learned, as training runs.

    Every ``every_n_steps`` steps the current batch is predicted again without gradients, and
    each sample's relative L2 error (averaged over fields, the metric of the held-out report) is
    credited to its simulation (``batch["sim_id"]``): an exponential moving average per
    simulation, weight ``smoothing`` for the newest batch. Every ``tell_every_n_steps`` steps the
    simulations updated since the last tell go to ``sampler.tell(params, scores)``, parameters
    taken from the launcher's ledger. A sample's error is measured on data the model trains on,
    so a simulation newly arrived is scored at its generalization error, and its score falls as
    the model fits it.

    Under DDP each rank scores the batches it trains on (each simulation streams to one rank, so
    each moving average lives on one rank); at every tell step all ranks send rank 0 the scores
    updated since the last tell (one small collective every ``tell_every_n_steps`` steps, at the
    same global step on every rank), and rank 0, which owns the sampler and the launcher, tells
    them. Rank 0's :attr:`scores` then hold every simulation's score as of the last tell (what
    its checkpoint keeps); the snapshots of the uncertainty are kept on rank 0 only.

    Parameters
    ----------
    every_n_steps : int
        Score one training batch every that many steps (the extra forward pass costs about a
        third of a training step).
    tell_every_n_steps : int
        Steps between tells (and, under DDP, between gathers of the scores).
    smoothing : float
        Weight of the newest batch in each simulation's moving average, in (0, 1].
    uncertainty : SnapshotDisagreement, optional
        Score function supplied to an acquisition that asks for one (one with a ``score_fn``
        attribute); default ``SnapshotDisagreement()``. Unused otherwise.

    Raises
    ------
    TypeError
        At setup, when the data module's sampler has no ``tell`` (not an active sampler); checked
        on rank 0 and on every rank that holds a sampler.
    """

    def __init__(
        self,
        every_n_steps: int = 1,
        tell_every_n_steps: int = 10,
        smoothing: float = 0.3,
        uncertainty: SnapshotDisagreement | None = None,
    ) -> None:
        if every_n_steps < 1 or tell_every_n_steps < 1:
            raise ValueError(
                f"expected every_n_steps >= 1 and tell_every_n_steps >= 1, got {every_n_steps} and {tell_every_n_steps}"
            )
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"expected 0 < smoothing <= 1, got {smoothing}")
        self.every_n_steps, self.tell_every_n_steps = int(every_n_steps), int(tell_every_n_steps)
        self.smoothing = float(smoothing)
        self.uncertainty = uncertainty if uncertainty is not None else SnapshotDisagreement()
        self.scores: dict[int, float] = {}
        self._dirty: set[int] = set()
        self._sampler = self._acquisition_wants_scorer = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        sampler = trainer.datamodule.sampler
        if trainer.global_rank != 0 and sampler is None:
            return  # rank 0 owns the sampler; this rank only scores
        if not callable(getattr(sampler, "tell", None)):
            raise TypeError(
                f"callbacks=active_learning needs an active sampler (one with tell()), the study has a "
                f"{type(sampler).__name__}; choose sampler=active_loss or sampler=active_uncertainty"
            )
        if trainer.global_rank == 0:
            self._sampler = sampler
            # Only rank 0 asks for scores of candidates: snapshots elsewhere would be wasted copies.
            self._acquisition_wants_scorer = hasattr(getattr(sampler, "acquisition", None), "score_fn")

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, torch.Tensor],
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0:
            self._score_batch(trainer, pl_module, batch)
        if self._acquisition_wants_scorer:
            self.uncertainty.update(pl_module, batch, step)
            if self.uncertainty.ready and self._sampler.acquisition.score_fn is not self.uncertainty:
                self._sampler.acquisition.score_fn = self.uncertainty
        if step % self.tell_every_n_steps == 0:
            self._tell(trainer)

    @torch.no_grad()
    def _score_batch(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict[str, torch.Tensor]) -> None:
        pred = pl_module(batch["params"], batch["t"])
        # One copy to the host per scored batch: the moving averages are Python numbers.
        errors = relative_l2(pred, batch["fields"], trainer.datamodule.simulation.fields).mean(dim=1).cpu().numpy()
        ids, inverse = np.unique(batch["sim_id"].cpu().numpy(), return_inverse=True)
        means = np.bincount(inverse, weights=errors) / np.bincount(inverse)
        for sim_id, value in zip(ids.tolist(), means.tolist()):
            old = self.scores.get(sim_id)
            self.scores[sim_id] = value if old is None else old + self.smoothing * (value - old)
            self._dirty.add(sim_id)

    def _tell(self, trainer: L.Trainer) -> None:
        """Gather the scores updated since the last tell to rank 0, which tells the sampler.

        A collective under DDP: every rank calls it at the same global step, with or without new
        scores of its own.
        """
        updated = {i: self.scores[i] for i in self._dirty}
        self._dirty.clear()
        # A simulation streams to one rank; were it scored on several, the later rank's
        # moving average wins.
        for part in gather_objects(updated)[1:]:
            updated.update(part)
        if trainer.global_rank != 0 or not updated:
            return
        self.scores.update(updated)
        records = trainer.datamodule.launcher.ledger.records
        # In the ledger's (creation) order: ids are random, and the sampler is told reproducibly.
        ids = [i for i in records if i in updated and records[i].purpose == "train"]
        if ids:
            self._sampler.tell(np.array([records[i].params for i in ids]), np.array([updated[i] for i in ids]))

    def state_dict(self) -> dict[str, Any]:
        return {"scores": {str(k): v for k, v in self.scores.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scores = {int(k): float(v) for k, v in state_dict["scores"].items()}


class SimulationPacing(Callback):
    """Release the training-simulation budget gradually, in step with training.

    The launcher may start ``n_initial`` simulations at once, then the rest of its budget
    (``launcher.budget`` when training starts) linearly until ``release_until`` of
    ``trainer.max_steps``; the remaining steps train on the full set. It works by lowering the
    launcher's budget to the allowance (``launcher.set_budget``) and raising it step after step.
    Under DDP only rank 0, which owns the launcher, changes its budget.

    Parameters
    ----------
    n_initial : int
        Simulations allowed before the first training step, >= 1. Make them supply the data
        module's watermark (``n_initial * n_steps >= watermark``), or training starts below it.
    release_until : float
        Fraction of ``trainer.max_steps`` by which the whole budget is released, in (0, 1].

    Raises
    ------
    ValueError
        At setup, when ``trainer.max_steps`` is not set, or the buffer's draw rule consumes
        samples: while paced, the launcher reports the stream as ended whenever the allowed
        simulations are done, and a consuming buffer would then end training.

    Notes
    -----
    Call :meth:`attach` with the data module before ``trainer.fit`` (``gensim-train`` does): the
    data module releases the launcher's budget once the held-out set is in, before any
    callback's ``setup``, and cheap training simulations would otherwise all start meanwhile. Without
    ``attach``, pacing starts at ``setup``; training simulations started before count against the
    allowance, and their number is kept in :attr:`started_before` and logged when it exceeds
    ``n_initial``.

    The launcher's ``exhausted`` is true between releases once the allowed simulations are done;
    a buffer that draws with replacement (reservoir, FIRO) ignores it.
    """

    def __init__(self, n_initial: int = 16, release_until: float = 0.75) -> None:
        if n_initial < 1:
            raise ValueError(f"expected n_initial >= 1, got {n_initial}")
        if not 0.0 < release_until <= 1.0:
            raise ValueError(f"expected 0 < release_until <= 1, got {release_until}")
        self.n_initial, self.release_until = int(n_initial), float(release_until)
        self.budget: int | None = None
        #: Training simulations already started when pacing began (see setup).
        self.started_before = 0

    def allowance(self, step: int, max_steps: int) -> int:
        """Simulations the launcher may have started by training step ``step``."""
        progress = min(step / (self.release_until * max_steps), 1.0)
        return min(self.budget, self.n_initial + math.floor(progress * (self.budget - self.n_initial)))

    def attach(self, datamodule) -> None:
        """Cap the launcher at ``n_initial`` simulations before the data module starts it.

        Parameters
        ----------
        datamodule : StreamingDataModule
            Not set up yet; its launcher's ``budget`` is the budget to pace.
        """
        if self.budget is None:
            self.budget = int(datamodule.launcher.budget)
        datamodule.launcher.set_budget(min(self.n_initial, self.budget))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if not trainer.max_steps or trainer.max_steps < 1:
            raise ValueError(
                f"SimulationPacing releases the budget over trainer.max_steps, which is "
                f"{trainer.max_steps}; set trainer.max_steps"
            )
        if dm.buffer.draw_rule.consumes:
            raise ValueError(
                f"SimulationPacing needs a buffer whose draws do not consume samples, got draw "
                f"rule {type(dm.buffer.draw_rule).__name__}; use buffer=distribution or "
                "buffer=reservoir"
            )
        if trainer.global_rank != 0:
            return  # the launcher is rank 0's
        if self.budget is None:  # not restored from a checkpoint
            self.budget = int(dm.launcher.budget)
        if self.n_initial * dm.simulation.n_steps < dm.watermark:
            log.warning(
                "pacing: the first %d simulations send %d samples, below the watermark %d",
                self.n_initial,
                self.n_initial * dm.simulation.n_steps,
                dm.watermark,
            )
        dm.launcher.set_budget(self.allowance(0, trainer.max_steps))
        # The data module started the launcher before any callback could run, so a few training
        # simulations may have started already, beyond n_initial when they are cheap.
        self.started_before = sum(dm.launcher.counts("train").values())
        if self.started_before > self.n_initial:
            log.warning(
                "pacing: %d training simulations started before pacing began (while the held-out "
                "set was simulated), more than n_initial=%d",
                self.started_before,
                self.n_initial,
            )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_rank == 0:
            trainer.datamodule.launcher.set_budget(self.allowance(trainer.global_step, trainer.max_steps))

    def state_dict(self) -> dict[str, Any]:
        return {"budget": self.budget}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.budget = state_dict["budget"]
