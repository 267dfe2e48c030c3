"""Callbacks that show and measure the ensemble while training runs."""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

log = logging.getLogger("gensim.callbacks")


def _short(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


class EnsembleProgressBar(TQDMProgressBar):
    """Lightning's progress bar plus the ensemble status: simulations running/done, samples received."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "status"):
            s = dm.status()
            metrics["sims"] = f"{s['running']} run/{s['done']} done" + (f"/{s['failed']} failed" if s["failed"] else "")
            metrics["recv"] = _short(s["received"])
        return metrics


class TrainingThroughput(Callback):
    """Training samples per second, fed live: the time between consecutive training batch ends
    (drawing from the buffer included), validation and the initial watermark wait excluded."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._last: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._last is None:
            self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.seconds += now - self._last
        self._last = now
        self.samples += int(batch["fields"].shape[0])

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._last is not None:
            self._last = time.perf_counter()

    def state_dict(self) -> dict:
        """The counters, so a resumed study reports its whole training (Lightning checkpoints them)."""
        return {"samples": self.samples, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.samples, self.seconds = int(state_dict["samples"]), float(state_dict["seconds"])

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class StopWhenStreamExhausted(Callback):
    """Stop training when the data module can serve no more batches (a FIFO buffer, used up,
    after the last simulation), instead of looping over empty pseudo-epochs.

    The decision is reduced over the trainer ranks (any rank used up stops all), so that no rank
    goes on alone into an all-reduce that the others never join.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        exhausted = dm is not None and bool(getattr(dm, "exhausted", False))
        if trainer.strategy.reduce_boolean_decision(exhausted, all=False):
            log.warning(
                "the simulations ended and the buffer is used up: training stops at step %d "
                "(before trainer.max_steps=%s)",
                trainer.global_step,
                trainer.max_steps,
            )
            trainer.should_stop = True


class TrainUntilBudget(Callback):
    """Train until the whole simulation budget has streamed, then ``epochs_after`` more pseudo-epochs.

    With a fixed ``trainer.max_steps``, training may end while simulations of the budget were
    never run (the summary and ``metrics.json`` count them: ``simulations_not_run``). Use this
    callback (``callbacks=until_budget``) with ``trainer.max_steps=-1`` instead: it stops
    training ``epochs_after`` pseudo-epochs (``data.steps_per_epoch`` steps each) after the
    launcher's last training simulation ended. The decision is reduced over ranks (rank 0 runs
    the launcher).

    Parameters
    ----------
    epochs_after : int
        Pseudo-epochs trained on the full buffer after the last simulation, >= 0.
    """

    def __init__(self, epochs_after: int = 2) -> None:
        if int(epochs_after) < 0:
            raise ValueError(f"TrainUntilBudget.epochs_after must be >= 0 pseudo-epochs, got {epochs_after}")
        self.epochs_after = int(epochs_after)
        self._epochs_since_end: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_steps != -1:
            log.warning(
                "callbacks=until_budget with trainer.max_steps=%s: training still stops at that step, "
                "maybe before the whole budget has streamed; set trainer.max_steps=-1",
                trainer.max_steps,
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        ended = dm is not None and bool(dm.stream_ended())
        if not trainer.strategy.reduce_boolean_decision(ended, all=False):
            return
        self._epochs_since_end = 0 if self._epochs_since_end is None else self._epochs_since_end + 1
        if self._epochs_since_end >= self.epochs_after:
            log.info(
                "the whole simulation budget has streamed and %d pseudo-epoch(s) trained since: training "
                "stops at step %d",
                self._epochs_since_end,
                trainer.global_step,
            )
            trainer.should_stop = True
